/**
 * The credential state of `keyway sql` SHOW CONNECTIONS / DESCRIBE CONNECTION: the phrase per
 * auth method and state, the lazily opened store (once, only when asked), and opening a store
 * only to look (memory, ephemeral key, missing SQLite file not created, missing key, store
 * settings resolved on their own). Never a token or secret in a phrase.
 */
import { randomBytes } from 'node:crypto'
import { access, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import type { Connection } from '../../../src/config/load.js'
import { createStoreCredentialState, describeCredentialState, type StoreView } from '../../../src/admin/credential-state.js'
import { openStoreToInspect, storeSettingsFromText, type StoreInspection } from '../../../src/credentials/store-access.js'
import { Secret } from '../../../src/secret.js'
import { openTokenStore, type TokenRecord } from '../../../src/store/index.js'
import { MIN, NOW, openMemoryStore, record, snapshotOf } from '../credentials/inventory-fixture.js'

async function connection(name: string): Promise<Connection> {
  const c = (await snapshotOf()).connections.get(name)
  if (!c) throw new Error(`no ${name}`)
  return c
}

const records = (...items: [string | null, TokenRecord][]): StoreView => ({
  kind: 'records',
  records: items.map(([user, rec]) => ({ ref: { connection: 'x', user }, record: rec })),
})
const noExpiry = (rec: TokenRecord): TokenRecord => {
  const { expiresAt: _, ...rest } = rec
  return rest
}
const noRefresh = (rec: TokenRecord): TokenRecord => {
  const { refreshToken: _, ...rest } = rec
  return rest
}

describe('describeCredentialState', () => {
  test.each<[string, string, StoreView, string]>([
    ['bearer', 'gh', records(), 'static secret'],
    ['bearer, store out of reach', 'gh', { kind: 'unavailable', reason: 'no key' }, 'static secret'],
    [
      'bearer with a token left from an OAuth past',
      'gh',
      records([null, record('oauth_u2m_shared')]),
      'static secret; 1 orphaned credential of an earlier auth type (keyway credentials lists them, keyway credentials --prune deletes them)',
    ],
    ['m2m cached', 'svc', records([null, record('oauth_m2m')]), 'token cached (expires in 42m; fetched again automatically)'],
    ['m2m none yet', 'svc', records(), 'no token yet (fetched at the first call)'],
    ['shared signed in', 'crm', records([null, record('oauth_u2m_shared')]), 'signed in (expires in 42m, refreshable)'],
    [
      'shared without refresh token',
      'crm',
      records([null, noRefresh(record('oauth_u2m_shared'))]),
      'signed in (expires in 42m, NOT refreshable: no refresh token)',
    ],
    [
      'shared expired, refreshable',
      'crm',
      records([null, record('oauth_u2m_shared', { expiresAt: NOW - 3 * MIN })]),
      'signed in (expired 3m ago, refreshable)',
    ],
    [
      'shared expired for good',
      'crm',
      records([null, noRefresh(record('oauth_u2m_shared', { expiresAt: NOW - 3 * MIN }))]),
      'signed in, but the access token expired 3m ago and cannot be refreshed — run keyway authorize crm',
    ],
    ['shared no expiry', 'crm', records([null, noExpiry(record('oauth_u2m_shared'))]), 'signed in (no expiry stated, refreshable)'],
    ['shared not signed in', 'crm', records(), 'not signed in — run keyway authorize crm'],
    [
      'per-user, three users, one without refresh token',
      'drive',
      records(['a', record('oauth_u2m_per_user')], ['b', record('oauth_u2m_per_user')], ['c', noRefresh(record('oauth_u2m_per_user'))]),
      '3 users connected (1 without a refresh token)',
    ],
    ['per-user, one', 'drive', records(['a', record('oauth_u2m_per_user')]), '1 user connected'],
    ['per-user, none', 'drive', records(), 'no user connected yet (each user consents at first use)'],
    [
      'store out of reach',
      'drive',
      { kind: 'unavailable', reason: 'store.encryptionKey: environment variable K is not set' },
      'store unavailable (store.encryptionKey: environment variable K is not set)',
    ],
  ])('%s', async (_name, conn, view, phrase) => {
    const text = describeCredentialState(await connection(conn), view, NOW)
    expect(text).toBe(phrase)
    expect(text).not.toMatch(/CANARY/)
  })
})

describe('createStoreCredentialState', () => {
  test('opens the store once, lists once, groups by connection, closes it', async () => {
    const snapshot = await snapshotOf()
    const store = await openMemoryStore()
    await store.putToken({ connection: 'drive', user: 'a' }, record('oauth_u2m_per_user'))
    await store.putToken({ connection: 'drive', user: 'b' }, record('oauth_u2m_per_user'))
    await store.putToken({ connection: 'crm', user: null }, record('oauth_u2m_shared'))
    let opens = 0
    let closed = false
    const s = createStoreCredentialState({
      connections: snapshot.connections,
      now: NOW,
      open: async () => {
        opens++
        return { kind: 'open', store: { ...store, close: async () => void (closed = true) } }
      },
    })
    expect(await s.state('drive')).toBe('2 users connected')
    expect(await s.state('crm')).toBe('signed in (expires in 42m, refreshable)')
    expect(await s.state('svc')).toBe('no token yet (fetched at the first call)')
    expect(await s.state('nope')).toBeUndefined()
    expect(opens).toBe(1)
    await s.close()
    expect(closed).toBe(true)
    await store.close()
  })

  test('nothing asked: the store is never opened; unavailable and empty stores answer with a phrase', async () => {
    const snapshot = await snapshotOf()
    let opens = 0
    const make = (answer: StoreInspection) => createStoreCredentialState({ connections: snapshot.connections, now: NOW, open: async () => (opens++, answer) })
    await make({ kind: 'empty' }).close()
    expect(opens).toBe(0)
    const unavailable = make({ kind: 'unavailable', reason: 'redis down' })
    expect(await unavailable.state('crm')).toBe('store unavailable (redis down)')
    expect(await unavailable.state('gh')).toBe('static secret')
    expect(await make({ kind: 'empty' }).state('crm')).toBe('not signed in — run keyway authorize crm')
  })
})

describe('openStoreToInspect', () => {
  const key = (): Secret => new Secret(randomBytes(32).toString('base64'))

  test('memory:// and an ephemeral key cannot be looked at from another process', async () => {
    expect(await openStoreToInspect({ url: 'memory://', encryptionKey: key(), encryptionKeys: [], dangerouslyUseEphemeralKey: false })).toEqual({
      kind: 'unavailable',
      reason: 'store.url is memory://, which keeps tokens only inside the server process',
    })
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-inspect-'))
    expect(
      await openStoreToInspect({ url: `sqlite://${dir}/k.sqlite`, encryptionKey: undefined, encryptionKeys: [], dangerouslyUseEphemeralKey: true }),
    ).toMatchObject({ kind: 'unavailable' })
  })

  test('a SQLite file that does not exist is an empty store, and looking does not create it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-inspect-'))
    const file = path.join(dir, 'data', 'keyway.sqlite')
    expect(await openStoreToInspect({ url: `sqlite://${file}`, encryptionKey: undefined, encryptionKeys: [], dangerouslyUseEphemeralKey: false })).toEqual({
      kind: 'empty',
    })
    await expect(access(path.join(dir, 'data'))).rejects.toMatchObject({ code: 'ENOENT' })
  })

  test('an existing SQLite store opens; without a configured key it is unavailable, saying how to make one', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-inspect-'))
    const url = `sqlite://${dir}/keyway.sqlite`
    await (await openTokenStore({ url, encryptionKey: key(), encryptionKeys: [], dangerouslyUseEphemeralKey: false }, { warn: () => {} })).close()
    const opened = await openStoreToInspect({ url, encryptionKey: key(), encryptionKeys: [], dangerouslyUseEphemeralKey: false })
    if (opened.kind !== 'open') throw new Error(`not open: ${JSON.stringify(opened)}`)
    await opened.store.close()
    const r = await openStoreToInspect({ url, encryptionKey: undefined, encryptionKeys: [], dangerouslyUseEphemeralKey: false })
    expect(r).toMatchObject({ kind: 'unavailable', reason: expect.stringMatching(/^store\.encryptionKey is not set: .*openssl rand -base64 32/) })
  })
})

describe('storeSettingsFromText', () => {
  const text =
    'version: 1\nstore: { url: "sqlite://./data/k.sqlite", encryptionKey: { env: K } }\nconnections:\n  a:\n    host: https://a.example.com\n    owner: { user: x@example.com }\n    auth: { type: bearer_token, token: { env: NOT_SET_HERE } }\n'

  test('resolves only the store secrets, relative to the file; other secrets may be missing', async () => {
    const file = '/etc/keyway dir/connections.yaml'
    const k = randomBytes(32).toString('base64')
    const r = await storeSettingsFromText(text, file, { K: k })
    if (!r.ok) throw new Error(r.reason)
    expect(r.settings.url).toBe('sqlite:///etc/keyway dir/data/k.sqlite')
    expect(r.settings.encryptionKey?.reveal()).toBe(k)
  })

  test('a missing store secret is a reason without file or line (and never a value)', async () => {
    expect(await storeSettingsFromText(text, '/etc/keyway dir/connections.yaml', {})).toEqual({
      ok: false,
      reason: 'store.encryptionKey: environment variable K is not set',
    })
  })
})
