/**
 * Start-up wiring: the keyring is checked before any backend is opened, the ephemeral key warns
 * once, and a memory store opened from settings works end to end.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { expect, test, vi } from 'vitest'
import { Secret } from '../../../src/secret.js'
import { openTokenStore } from '../../../src/store/index.js'

const key = new Secret(randomBytes(32).toString('base64'))

test('a missing key fails before the SQLite file is created', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-open-'))
  const settings = { url: `sqlite://${path.join(dir, 'x.sqlite')}`, encryptionKey: undefined, encryptionKeys: [], dangerouslyUseEphemeralKey: false }
  await expect(openTokenStore(settings, { warn: () => {} })).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
  expect(await readdir(dir)).toEqual([])
  await rm(dir, { recursive: true, force: true })
})

test('memory store from settings round-trips; the ephemeral key warns once', async () => {
  const warn = vi.fn()
  const store = await openTokenStore({ url: 'memory://', encryptionKey: undefined, encryptionKeys: [], dangerouslyUseEphemeralKey: true }, { warn })
  expect(warn).toHaveBeenCalledTimes(1)
  expect(store.kind).toBe('memory')
  const ref = { connection: 'c', user: null }
  await store.putToken(ref, { method: 'oauth_m2m', accessToken: 'a', tokenType: 'Bearer', obtainedAt: 1 })
  expect(await store.getToken(ref)).toMatchObject({ accessToken: 'a' })
  await store.close()
})

test('a configured key with old keys opens', async () => {
  const store = await openTokenStore(
    { url: 'memory://', encryptionKey: key, encryptionKeys: [new Secret(randomBytes(32).toString('base64'))], dangerouslyUseEphemeralKey: false },
    { warn: () => {}, namespace: 'other' },
  )
  await expect(store.ping()).resolves.toBeUndefined()
  await store.close()
})
