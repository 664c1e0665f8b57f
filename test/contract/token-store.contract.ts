/**
 * The one behavioural contract every store backend must meet, run against memory (unit), SQLite
 * and Redis (integration): miss versus hit, compare-and-swap, listing, key isolation between
 * (connection, user) pairs, single-use flows under concurrency, TTLs, the lock, and failing closed
 * on any record that does not open (tampered, copied, wrong key, rotated away). It never asserts
 * on internals beyond the documented key schema and envelope prefix.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { AppError } from '../../src/errors.js'
import { Secret } from '../../src/secret.js'
import type { StoreBackend } from '../../src/store/backend.js'
import { createKeyring, type Keyring } from '../../src/store/crypto.js'
import { ticketKey, lockKey, tokenKey } from '../../src/store/keys.js'
import { SEAL_VERSION } from '../../src/store/sealed.js'
import { createTokenStore, newFlowId, type TokenRecord, type TokenRef, type TokenStore } from '../../src/store/token-store.js'

/** What a backend's test file hands the contract. */
export interface ContractHarness {
  readonly backend: StoreBackend
  /** A second, independent connection to the same data (another replica or process); memory has none. */
  readonly openPeer?: () => Promise<StoreBackend>
  /** Moves the backend's and the store's clock forward (memory); real backends are waited out instead. */
  readonly advance?: (ms: number) => void
  /** The clock the store should use (matches the backend's for memory). */
  readonly now?: () => number
}

const CANARY = `canary-${randomBytes(8).toString('hex')}`

function newKey(): Secret {
  return new Secret(randomBytes(32).toString('base64'))
}

function ring(current: Secret, previous: readonly Secret[] = []): Keyring {
  return createKeyring({ current, previous, dangerouslyUseEphemeralKey: false, warn: () => {} })
}

function token(n: number | string, extra: Partial<TokenRecord> = {}): TokenRecord {
  return {
    method: 'oauth_u2m_per_user',
    accessToken: `${CANARY}-access-${n}`,
    refreshToken: `${CANARY}-refresh-${n}`,
    tokenType: 'Bearer',
    scope: 'read write',
    expiresAt: 1_900_000_000_000,
    obtainedAt: 1_800_000_000_000,
    subject: 'sub-123',
    warnings: ['no offline_access'],
    ...extra,
  }
}

/** Asserts a `STORE_UNAVAILABLE` rejection that mentions no secret anywhere, cause chain included. */
async function expectStoreUnavailable(p: Promise<unknown>): Promise<AppError> {
  const err: unknown = await p.then(
    (v) => {
      throw new Error(`expected STORE_UNAVAILABLE, got a value: ${v === undefined ? 'undefined' : typeof v}`)
    },
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(AppError)
  const appErr = err as AppError
  expect(appErr.code).toBe('STORE_UNAVAILABLE')
  expect(inspect(appErr, { depth: 5 })).not.toContain(CANARY)
  expect(JSON.stringify(appErr.detail ?? {})).not.toContain(CANARY)
  return appErr
}

/** Flips one character in the middle of the ciphertext part of an envelope. */
function tamper(sealed: string): string {
  const parts = sealed.split('.')
  const body = parts[3] ?? ''
  const i = Math.floor(body.length / 2)
  const flipped = body[i] === 'A' ? 'B' : 'A'
  parts[3] = body.slice(0, i) + flipped + body.slice(i + 1)
  return parts.join('.')
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/**
 * Registers the token-store contract suite for one backend. `makeBackend` is called once; the
 * suite uses a random namespace and deletes every key under it afterwards.
 */
export function describeTokenStoreContract(name: string, makeBackend: () => Promise<ContractHarness>): void {
  describe(`token store contract: ${name}`, () => {
    const ns = `kwtest-${randomBytes(6).toString('hex')}`
    const keyA = newKey()
    const keyB = newKey()
    let h: ContractHarness
    let backend: StoreBackend
    let store: TokenStore
    const peers: StoreBackend[] = []
    const storeOpts = (): { namespace: string; now?: () => number } => (h.now === undefined ? { namespace: ns } : { namespace: ns, now: h.now })
    const elapse = async (ms: number): Promise<void> => {
      if (h.advance !== undefined) h.advance(ms)
      else await sleep(ms)
    }
    /** Stores that see the same data through different connections when the backend has peers. */
    const replicas = async (keyring: Keyring): Promise<TokenStore[]> => {
      const out = [createTokenStore(backend, keyring, storeOpts())]
      if (h.openPeer !== undefined) {
        const peer = await h.openPeer()
        peers.push(peer)
        out.push(createTokenStore(peer, keyring, storeOpts()))
      }
      return out
    }

    beforeAll(async () => {
      h = await makeBackend()
      backend = h.backend
      store = createTokenStore(backend, ring(keyA), storeOpts())
    })

    afterAll(async () => {
      if (backend === undefined) return
      for (const key of await collect(backend.keys(ns))) await backend.delete(key)
      for (const peer of peers) await peer.close()
      await backend.close()
    })

    test('a miss is undefined, not an error', async () => {
      expect(await store.getToken({ connection: 'miss', user: 'nobody@example.com' })).toBeUndefined()
      expect(await store.getToken({ connection: 'miss', user: null })).toBeUndefined()
      expect(await store.getTicket(newFlowId())).toBeUndefined()
      expect(await store.takeTicket(newFlowId())).toBeUndefined()
      expect(await store.deleteToken({ connection: 'miss', user: null })).toBe(false)
      await expect(store.ping()).resolves.toBeUndefined()
    })

    test('put then get returns the same record, for a user and for the shared token', async () => {
      const user: TokenRef = { connection: 'roundtrip', user: 'Zoë <zoe@example.com>' }
      const shared: TokenRef = { connection: 'roundtrip', user: null }
      await store.putToken(user, token('user'))
      await store.putToken(shared, token('shared', { method: 'oauth_m2m' }))
      expect(await store.getToken(user)).toEqual(token('user'))
      expect(await store.getToken(shared)).toEqual(token('shared', { method: 'oauth_m2m' }))
      const minimal: TokenRecord = { method: 'oauth_m2m', accessToken: 'x', tokenType: 'Bearer', obtainedAt: 1 }
      await store.putToken(shared, minimal)
      expect(await store.getToken(shared)).toEqual(minimal)
    })

    test('values are sealed: the backend holds an envelope, never the token', async () => {
      const ref: TokenRef = { connection: 'sealed', user: 'alice@example.com' }
      await store.putToken(ref, token('sealed'))
      const raw = await backend.get(tokenKey(ns, ref))
      expect(raw?.startsWith(`${SEAL_VERSION}.`)).toBe(true)
      expect(raw).not.toContain(CANARY)
      expect(raw).not.toContain('alice')
      for (const key of await collect(backend.keys(ns))) {
        expect(key).not.toContain(CANARY)
        expect(key).not.toContain('alice')
        expect(key).not.toContain('@')
      }
    })

    test('replaceToken swaps only when the stored record is the expected one', async () => {
      const ref: TokenRef = { connection: 'cas', user: 'bob@example.com' }
      expect(await store.replaceToken(ref, undefined, token(1))).toBe(true) // create if absent
      expect(await store.replaceToken(ref, undefined, token(2))).toBe(false) // no longer absent
      const v1 = await store.getToken(ref)
      expect(v1).toEqual(token(1))
      expect(await store.replaceToken(ref, v1, token(2))).toBe(true)
      expect(await store.replaceToken(ref, v1, token(3))).toBe(false) // stale expectation
      expect(await store.getToken(ref)).toEqual(token(2))
      // Field order does not matter, content does.
      const reordered = Object.fromEntries(Object.entries(token(2)).reverse()) as unknown as TokenRecord
      expect(await store.replaceToken(ref, reordered, token(3))).toBe(true)
      expect(await store.replaceToken(ref, token(2), undefined)).toBe(false)
      expect(await store.replaceToken(ref, token(3), undefined)).toBe(true) // delete if unchanged
      expect(await store.getToken(ref)).toBeUndefined()
      expect(await store.replaceToken(ref, token(3), token(4))).toBe(false) // nothing to replace
    })

    test('concurrent replaceToken from the same expectation: exactly one wins', async () => {
      const ref: TokenRef = { connection: 'cas-race', user: null }
      await store.putToken(ref, token('base'))
      const base = await store.getToken(ref)
      const stores = await replicas(ring(keyA))
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (stores[i % stores.length] as TokenStore).replaceToken(ref, base, token(`next-${i}`))),
      )
      expect(results.filter(Boolean)).toHaveLength(1)
      const winner = results.indexOf(true)
      expect(await store.getToken(ref)).toEqual(token(`next-${winner}`))
    })

    test('deleteToken removes the record', async () => {
      const ref: TokenRef = { connection: 'del', user: 'carol@example.com' }
      await store.putToken(ref, token('del'))
      expect(await store.deleteToken(ref)).toBe(true)
      expect(await store.getToken(ref)).toBeUndefined()
      expect(await store.deleteToken(ref)).toBe(false)
    })

    test('listTokens returns connection and user of every record, and filters', async () => {
      const refs: TokenRef[] = [
        { connection: 'list-a', user: 'dave@example.com' },
        { connection: 'list-a', user: null },
        { connection: 'list-b', user: 'dave@example.com' },
        { connection: 'list-b', user: 'erin@example.com' },
      ]
      for (const [i, ref] of refs.entries()) await store.putToken(ref, token(`list-${i}`))
      const all = await collect(store.listTokens())
      for (const [i, ref] of refs.entries()) {
        expect(all).toContainEqual({ ref, record: token(`list-${i}`) })
      }
      const a = await collect(store.listTokens({ connection: 'list-a' }))
      expect(a.map((e) => e.ref).sort((x, y) => String(x.user).localeCompare(String(y.user)))).toEqual([refs[0], refs[1]])
      const dave = await collect(store.listTokens({ user: 'dave@example.com' }))
      expect(dave.map((e) => e.ref.connection).sort()).toEqual(['list-a', 'list-b'])
      const shared = await collect(store.listTokens({ connection: 'list-a', user: null }))
      expect(shared).toEqual([{ ref: refs[1], record: token('list-1') }])
    })

    test('refs that collide when naively joined never share a record [store:one-user-one-token]', async () => {
      const refs: TokenRef[] = [
        { connection: 'x', user: 'y:z' },
        { connection: 'x', user: 'Y:z' },
        { connection: 'X', user: 'y:z' },
        { connection: 'x', user: 'y' },
        { connection: 'x_y', user: 'z' },
        { connection: 'x', user: 'y_z' },
        { connection: 'xy', user: 'z' },
        { connection: 'x', user: 'yz' },
        { connection: 'x', user: null },
        { connection: 'x', user: 'null' },
        { connection: 'x', user: 'shared' },
        { connection: 'x', user: 'caf\u00e9' }, // NFC
        { connection: 'x', user: 'cafe\u0301' }, // NFD: looks the same, is another user
        { connection: 'x', user: ' y:z' },
        { connection: 'x', user: 'y:z ' },
        { connection: 'x', user: `u${'0'.repeat(64)}` }, // looks like a hashed segment
        { connection: 'x', user: 'x:tok:x:shared' },
        { connection: 'x', user: 'line\nbreak' },
      ]
      for (const [i, ref] of refs.entries()) await store.putToken(ref, token(`collide-${i}`))
      for (const [i, ref] of refs.entries()) expect(await store.getToken(ref)).toEqual(token(`collide-${i}`))
      const keys = new Set(refs.map((r) => tokenKey(ns, r)))
      expect(keys.size).toBe(refs.length)
      const listed = (await collect(store.listTokens())).filter((e) => ['x', 'X', 'x_y', 'xy'].includes(e.ref.connection))
      expect(listed).toHaveLength(refs.length)
      for (const [i, ref] of refs.entries()) expect(listed).toContainEqual({ ref, record: token(`collide-${i}`) })
      // A connection name with the separator in it is refused before anything is stored.
      await expect(store.putToken({ connection: 'x:y', user: 'z' }, token('bad'))).rejects.toMatchObject({ code: 'INTERNAL' })
      await expect(store.getToken({ connection: 'x', user: '' })).rejects.toMatchObject({ code: 'INTERNAL' })
    })

    test('flows: put, get, take once', async () => {
      const id = newFlowId()
      expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/)
      const flow = { user: 'frank@example.com', connection: 'drive', verifier: `${CANARY}-verifier`, state: 's' }
      await store.putTicket(id, flow, 60_000)
      expect(await store.getTicket(id)).toEqual(flow)
      expect(await store.getTicket(id)).toEqual(flow) // get does not consume
      expect(await store.takeTicket(id)).toEqual(flow)
      expect(await store.takeTicket(id)).toBeUndefined()
      expect(await store.getTicket(id)).toBeUndefined()
      const raw = await collect(backend.keys(`${ns}:flow:`))
      expect(raw.some((k) => k.includes(id))).toBe(false) // flow ids are hashed in keys
      // Not-an-id from a URL is a miss, not a lookup.
      expect(await store.getTicket('../../etc')).toBeUndefined()
      expect(await store.takeTicket('')).toBeUndefined()
    })

    test('20 concurrent takes of one flow: exactly one wins', async () => {
      const id = newFlowId()
      await store.putTicket(id, { n: 1 }, 60_000)
      const stores = await replicas(ring(keyA))
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (stores[i % stores.length] as TokenStore).takeTicket(id)))
      expect(results.filter((r) => r !== undefined)).toEqual([{ n: 1 }])
    })

    test('a flow expires after its TTL', async () => {
      const id = newFlowId()
      const key = ticketKey(ns, id)
      await store.putTicket(id, { n: 2 }, 1_000)
      expect(await store.getTicket(id)).toEqual({ n: 2 })
      await elapse(1_300)
      expect(await store.getTicket(id)).toBeUndefined()
      expect(await store.takeTicket(id)).toBeUndefined()
      expect(await backend.get(key)).toBeUndefined()
    })

    test('withLock: 20 parallel increments end at 20 with no overlap', async () => {
      const counterKey = `${ns}:test:counter`
      await backend.set(counterKey, '0')
      const stores = await replicas(ring(keyA))
      let active = 0
      let maxActive = 0
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (stores[i % stores.length] as TokenStore).withLock(
            'counter',
            10_000,
            async () => {
              active++
              maxActive = Math.max(maxActive, active)
              const n = Number(await backend.get(counterKey))
              await sleep(Math.random() * 5)
              await backend.set(counterKey, String(n + 1))
              active--
            },
            { waitMs: 25_000 },
          ),
        ),
      )
      expect(maxActive).toBe(1)
      expect(await backend.get(counterKey)).toBe('20')
    })

    test('withLock gives up after waitMs while another holds the lock', async () => {
      const held = await backend.acquireLock(lockKey(ns, 'busy'), 30_000)
      expect(held).toBeDefined()
      const err = await store.withLock('busy', 30_000, async () => 'ran', { waitMs: 150 }).catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', detail: { reason: 'lock-timeout' } })
      expect(await held?.release()).toBe(true)
      expect(await store.withLock('busy', 30_000, async () => 'ran', { waitMs: 150 })).toBe('ran')
    })

    test('a dead holder frees the lock at its TTL; its late release cannot free the next holder', async () => {
      const key = lockKey(ns, 'dead')
      const dead = await backend.acquireLock(key, 1_000)
      expect(dead).toBeDefined()
      expect(await backend.acquireLock(key, 1_000)).toBeUndefined()
      if (h.advance !== undefined) h.advance(1_001)
      const started = Date.now()
      const result = await store.withLock(
        'dead',
        10_000,
        async () => {
          // The dead holder wakes up and tries to release or extend: it no longer owns the lock.
          expect(await dead?.release()).toBe(false)
          expect(await dead?.extend(10_000)).toBe(false)
          expect(await backend.acquireLock(key, 1_000)).toBeUndefined()
          return 'ok'
        },
        { waitMs: 5_000 },
      )
      expect(result).toBe('ok')
      if (h.advance === undefined) expect(Date.now() - started).toBeGreaterThanOrEqual(500)
      const again = await backend.acquireLock(key, 1_000) // released by withLock
      expect(again).toBeDefined()
      await again?.release()
    })

    test('withLock renews the lock while the work outlasts its TTL', async () => {
      if (h.advance !== undefined) return // the fake clock never expires it; real backends only
      let contenderResult: unknown
      const result = await store.withLock('renew', 600, async (signal) => {
        await sleep(1_500)
        contenderResult = await store.withLock('renew', 600, async () => 'stole', { waitMs: 100 }).catch((e: unknown) => e)
        expect(signal.aborted).toBe(false)
        return 'done'
      })
      expect(result).toBe('done')
      expect(contenderResult).toMatchObject({ code: 'STORE_UNAVAILABLE', detail: { reason: 'lock-timeout' } })
    })

    test('a tampered, truncated or foreign value is STORE_UNAVAILABLE, never a miss [store:fail-closed]', async () => {
      const ref: TokenRef = { connection: 'tamper', user: 'gina@example.com' }
      const key = tokenKey(ns, ref)
      await store.putToken(ref, token('tamper'))
      const raw = (await backend.get(key)) ?? ''
      const bad = [tamper(raw), raw.slice(0, -12), `${raw}AA`, raw.replace(/^kw1\./, 'kw9.'), 'not an envelope', '{"accessToken":"x"}', '']
      for (const value of bad) {
        await backend.set(key, value)
        const err = await expectStoreUnavailable(store.getToken(ref))
        expect(err.message).not.toContain(value.length > 0 ? value : 'never-matches')
      }
      await backend.set(key, tamper(raw))
      await expectStoreUnavailable(collect(store.listTokens({ connection: 'tamper' })))
      await expectStoreUnavailable(store.replaceToken(ref, token('tamper'), token('other')))
      await store.deleteToken(ref)

      const id = newFlowId()
      await store.putTicket(id, { secret: CANARY }, 60_000)
      const fkey = ticketKey(ns, id)
      await backend.set(fkey, tamper((await backend.get(fkey)) ?? ''), 60_000)
      await expectStoreUnavailable(store.getTicket(id))
      await expectStoreUnavailable(store.takeTicket(id))
    })

    test('a record copied under another key does not open [store:aad-binds-key]', async () => {
      const alice: TokenRef = { connection: 'copy', user: 'alice@example.com' }
      const mallory: TokenRef = { connection: 'copy', user: 'mallory@example.com' }
      await store.putToken(alice, token('alice'))
      await store.putToken(mallory, token('mallory'))
      await backend.set(tokenKey(ns, mallory), (await backend.get(tokenKey(ns, alice))) ?? '')
      const err = await expectStoreUnavailable(store.getToken(mallory))
      expect(err.detail).toMatchObject({ reason: 'authentication-failed' })
      // Across connections and across kinds too.
      const other: TokenRef = { connection: 'copy2', user: 'alice@example.com' }
      await backend.set(tokenKey(ns, other), (await backend.get(tokenKey(ns, alice))) ?? '')
      await expectStoreUnavailable(store.getToken(other))
      const id = newFlowId()
      await backend.set(ticketKey(ns, id), (await backend.get(tokenKey(ns, alice))) ?? '', 60_000)
      await expectStoreUnavailable(store.getTicket(id))
      expect(await store.getToken(alice)).toEqual(token('alice'))
    })

    test('a store with another key fails closed on existing records', async () => {
      const ref: TokenRef = { connection: 'wrongkey', user: 'hank@example.com' }
      await store.putToken(ref, token('wk'))
      const ringB = ring(keyB)
      const other = createTokenStore(backend, ringB, storeOpts())
      const unknown = await expectStoreUnavailable(other.getToken(ref))
      expect(unknown.detail).toMatchObject({ reason: 'unknown-key-id' })
      // Same record relabelled with B's key id: B cannot authenticate it.
      const key = tokenKey(ns, ref)
      const raw = (await backend.get(key)) ?? ''
      const parts = raw.split('.')
      parts[1] = ringB.currentKeyId
      await backend.set(key, parts.join('.'))
      const forged = await expectStoreUnavailable(other.getToken(ref))
      expect(forged.detail).toMatchObject({ reason: 'authentication-failed' })
      await store.deleteToken(ref)
    })

    test('key rotation: old records read with the previous key, new writes use the current one [store:rotation]', async () => {
      const rotNs = `${ns}-rot`
      const opts = h.now === undefined ? { namespace: rotNs } : { namespace: rotNs, now: h.now }
      const ringA = ring(keyA)
      const ringBA = ring(keyB, [keyA])
      const ringOnlyB = ring(keyB)
      const oldRef: TokenRef = { connection: 'rot', user: 'ivy@example.com' }
      const newRef: TokenRef = { connection: 'rot', user: 'jack@example.com' }
      await createTokenStore(backend, ringA, opts).putToken(oldRef, token('old'))

      const rotated = createTokenStore(backend, ringBA, opts)
      expect(await rotated.getToken(oldRef)).toEqual(token('old'))
      await rotated.putToken(newRef, token('new'))
      expect((await backend.get(tokenKey(rotNs, newRef)))?.split('.')[1]).toBe(ringOnlyB.currentKeyId)
      expect((await backend.get(tokenKey(rotNs, oldRef)))?.split('.')[1]).toBe(ringA.currentKeyId)

      const onlyB = createTokenStore(backend, ringOnlyB, opts)
      expect(await onlyB.getToken(newRef)).toEqual(token('new'))
      await expectStoreUnavailable(onlyB.getToken(oldRef)) // retired too early: fails closed

      expect(await rotated.reseal()).toEqual({ resealed: 1, current: 1, failed: 0 })
      expect(await onlyB.getToken(oldRef)).toEqual(token('old'))
      expect(await rotated.reseal()).toEqual({ resealed: 0, current: 2, failed: 0 })
    })
  })
}
