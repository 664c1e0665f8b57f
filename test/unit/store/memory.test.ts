/**
 * The token-store contract against the memory backend (fake clock, no sleeping), plus what only
 * memory can show cheaply: an outage is `STORE_UNAVAILABLE` on every path, never a miss.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { createBackend } from '../../../src/store/backend.js'
import { createKeyring } from '../../../src/store/crypto.js'
import { createMemoryBackend } from '../../../src/store/memory-backend.js'
import { createTokenStore, newFlowId, type TokenRecord } from '../../../src/store/token-store.js'
import { Secret } from '../../../src/secret.js'
import { describeTokenStoreContract } from '../../contract/token-store.contract.js'

function fakeClock(start = 1_800_000_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start
  return { now: () => t, advance: (ms) => void (t += ms) }
}

describeTokenStoreContract('memory', async () => {
  const clock = fakeClock()
  return { backend: createMemoryBackend({ now: clock.now }), advance: clock.advance, now: clock.now }
})

const record: TokenRecord = { method: 'oauth_m2m', accessToken: 'at', tokenType: 'Bearer', obtainedAt: 1 }
const keyring = createKeyring({ current: new Secret(Buffer.alloc(32, 7).toString('base64')), previous: [], dangerouslyUseEphemeralKey: false, warn: () => {} })

describe('memory backend', () => {
  test('createBackend("memory://") gives a memory backend', async () => {
    const backend = await createBackend('memory://')
    expect(backend.kind).toBe('memory')
    await backend.close()
  })

  test('an outage is STORE_UNAVAILABLE on every path, never undefined [store:fail-closed]', async () => {
    const backend = createMemoryBackend()
    const store = createTokenStore(backend, keyring)
    const ref = { connection: 'c', user: 'u' }
    await store.putToken(ref, record)
    backend.simulateOutage(true)
    const calls: Array<() => Promise<unknown>> = [
      () => store.getToken(ref),
      () => store.putToken(ref, record),
      () => store.replaceToken(ref, record, record),
      () => store.deleteToken(ref),
      async () => {
        for await (const e of store.listTokens()) void e
      },
      () => store.putTicket(newFlowId(), {}, 1000),
      () => store.getTicket(newFlowId()),
      () => store.takeTicket(newFlowId()),
      () => store.withLock('l', 1000, async () => 1),
      () => store.ping(),
    ]
    for (const call of calls) await expect(call()).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
    backend.simulateOutage(false)
    expect(await store.getToken(ref)).toEqual(record)
  })

  test('after close every call fails', async () => {
    const backend = createMemoryBackend()
    await backend.close()
    await backend.close()
    await expect(backend.get('k')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
  })

  test('TTL boundary follows the injected clock exactly', async () => {
    const clock = fakeClock()
    const backend = createMemoryBackend({ now: clock.now })
    await backend.set('k', 'v', 100)
    clock.advance(99)
    expect(await backend.get('k')).toBe('v')
    clock.advance(1)
    expect(await backend.get('k')).toBeUndefined()
    expect(await backend.compareAndSwap('k', undefined, 'w', 10)).toBe(true)
    clock.advance(10)
    expect(await backend.takeOnce('k')).toBeUndefined()
  })

  test('invalid TTLs and records are refused without echoing values', async () => {
    const backend = createMemoryBackend()
    await expect(backend.set('k', 'v', 0)).rejects.toMatchObject({ code: 'INTERNAL' })
    await expect(backend.set('k', 'v', 1.5)).rejects.toMatchObject({ code: 'INTERNAL' })
    const store = createTokenStore(backend, keyring)
    const bad = { ...record, acessToken: 'canary-typo-value' } as unknown as TokenRecord
    const err = await store.putToken({ connection: 'c', user: null }, bad).catch((e: unknown) => e as Error)
    expect(err).toMatchObject({ code: 'INTERNAL' })
    expect((err as Error).message).toContain('acessToken')
    expect((err as Error).message).not.toContain('canary-typo-value')
    const empty = await store.putToken({ connection: 'c', user: null }, { ...record, accessToken: '' }).catch((e: unknown) => e as Error)
    expect((empty as Error).message).toContain('"accessToken"')
    await expect(store.putTicket('short', {}, 1000)).rejects.toMatchObject({ code: 'INTERNAL' })
    await expect(store.putTicket(newFlowId(), {}, -1)).rejects.toMatchObject({ code: 'INTERNAL' })
  })

  test('the store clock also bounds a flow the backend still holds', async () => {
    const storeClock = fakeClock()
    const backend = createMemoryBackend() // real clock: would keep the flow for a minute
    const store = createTokenStore(backend, keyring, { now: storeClock.now })
    const id = newFlowId()
    await store.putTicket(id, { a: 1 }, 60_000)
    storeClock.advance(60_000)
    expect(await store.getTicket(id)).toBeUndefined()
    expect(await store.takeTicket(id)).toBeUndefined()
  })

  test('withLock releases on failure and passes the error through', async () => {
    const store = createTokenStore(createMemoryBackend(), keyring)
    await expect(
      store.withLock('l', 1000, async () => {
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    expect(await store.withLock('l', 1000, async () => 'next', { waitMs: 0 })).toBe('next')
  })

  test('unknown store.url schemes are CONFIG_INVALID and the url is not echoed', async () => {
    const err = await createBackend('postgres://user:hunter2@db/x').catch((e: unknown) => e as Error)
    expect(err).toMatchObject({ code: 'CONFIG_INVALID' })
    expect((err as Error).message).not.toContain('hunter2')
    await expect(createBackend('sqlite://relative/path.sqlite')).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
  })
})
