/**
 * The typed token store: OAuth tokens per (connection, user), tickets (small records under an
 * unguessable id with a TTL, readable until taken once: consent links, sign-in states, outcomes,
 * remembered client capabilities), small TTL'd shared state (e.g. a credential's refresh back-off) and a
 * cross-replica lock, on top of any {@link StoreBackend}. Every value is
 * sealed (AES-256-GCM, the record's key as associated data) before it reaches the backend, and
 * every key comes from `keys.ts`, so the backend never sees a token, a flow secret or a user id.
 * A record that does not open is `STORE_UNAVAILABLE`, never a missing token. This module decides
 * nothing about when to refresh or whom to ask for consent; it stores and it locks.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import * as z from 'zod'
import { AppError } from '../errors.js'
import { assertTtl, type BackendKind, type StoreBackend } from './backend.js'
import type { Keyring } from './crypto.js'
import { assertNamespace, assertTokenRef, DEFAULT_NAMESPACE, ticketKey, lockKey, stateKey, tokenKey, tokenPrefix, userSegment, type TokenRef } from './keys.js'
import { openJson, sealedKeyId, sealJson } from './sealed.js'

export type { TokenRef } from './keys.js'
export { tokenLockName } from './keys.js'

/** How a stored token was obtained (the connection's `auth.type`). */
export type TokenMethod = 'oauth_m2m' | 'oauth_u2m_shared' | 'oauth_u2m_per_user'

/** One stored OAuth credential. Times are epoch milliseconds. */
export interface TokenRecord {
  readonly method: TokenMethod
  readonly accessToken: string
  readonly refreshToken?: string
  readonly tokenType: string
  readonly scope?: string
  readonly expiresAt?: number
  readonly obtainedAt: number
  readonly lastRefreshAt?: number
  readonly lastUsedAt?: number
  /** The provider account that signed in, its email else its subject (for `keyway credentials`). */
  readonly subject?: string
  /** Conditions to surface, e.g. "no refresh token was issued". */
  readonly warnings?: readonly string[]
}

/**
 * A ticket: a record under an unguessable id (random, or derived from secret-free inputs the
 * owner controls), kept for a TTL and taken at most once. Its owner (`consent/`) defines and
 * validates the fields; stored under the `flow` keyspace (docs/storage-schema.md).
 */
export type TicketRecord = Readonly<Record<string, unknown>>

/** Small shared state (counts, times, a short reason); its owner defines the fields. */
export type StateRecord = Readonly<Record<string, string | number | boolean>>

/** Outcome of {@link TokenStore.reseal}. */
export interface ResealResult {
  /** Records rewritten under the current key. */
  readonly resealed: number
  /** Records already under the current key, or changed concurrently (the writer used the current key). */
  readonly current: number
  /** Records that do not open with any configured key: still there, still failing closed. */
  readonly failed: number
}

/** Options of {@link TokenStore.withLock}. */
export interface WithLockOptions {
  /** How long to wait for the lock; default: the lock's TTL, by when a dead holder's lock has expired. */
  readonly waitMs?: number
}

export interface TokenStore {
  /** Which backend holds the data (for `/readyz` and `keyway credentials`). */
  readonly kind: BackendKind
  /** The stored token, or `undefined` when there is none. @throws AppError `STORE_UNAVAILABLE` */
  getToken(ref: TokenRef): Promise<TokenRecord | undefined>
  /** Stores (replacing) the token of `ref`. */
  putToken(ref: TokenRef, record: TokenRecord): Promise<void>
  /**
   * Replaces the token only if the stored one still equals `expected` field for field
   * (`undefined`: only if there is none), atomically. `next` undefined deletes. `false` when
   * something else changed it first: re-read and decide again (e.g. after a concurrent refresh).
   */
  replaceToken(ref: TokenRef, expected: TokenRecord | undefined, next: TokenRecord | undefined): Promise<boolean>
  /** `true` when a token was deleted. */
  deleteToken(ref: TokenRef): Promise<boolean>
  /** Every stored token with its connection and user (optionally of one connection and/or user). */
  listTokens(filter?: { readonly connection?: string; readonly user?: string | null }): AsyncIterable<{ ref: TokenRef; record: TokenRecord }>
  /** Stores (replacing) a ticket for `ttlMs`; `id` comes from {@link newFlowId} or has its shape. */
  putTicket(id: string, ticket: TicketRecord, ttlMs: number): Promise<void>
  /** Reads a ticket without taking it; `undefined` when unknown, expired, taken or not an id. */
  getTicket(id: string): Promise<TicketRecord | undefined>
  /** Reads and deletes a ticket atomically: of concurrent takes, exactly one gets it. */
  takeTicket(id: string): Promise<TicketRecord | undefined>
  /** The state under `name`, or `undefined` when there is none or it expired. */
  getState(name: string): Promise<StateRecord | undefined>
  /** Stores (replacing) the state under `name` for `ttlMs`. */
  putState(name: string, value: StateRecord, ttlMs: number): Promise<void>
  /** Put-if-absent with a TTL, atomically across replicas: `false` when a live value is already there. */
  addState(name: string, value: StateRecord, ttlMs: number): Promise<boolean>
  /** `true` when a live value was deleted. */
  deleteState(name: string): Promise<boolean>
  /**
   * Runs `fn` while holding the cross-replica lock `name`, waiting (jittered polling) up to
   * `waitMs` (0: one try). The lock's TTL is renewed every third of `ttlMs` while `fn` runs; a
   * renewal the store does not answer is tried again, and a lease that lapsed while nobody took
   * it (a stalled store) is taken again. Only when another holder has it does `signal` abort.
   * Released afterwards only if still owned (compare-and-delete).
   * @throws AppError `STORE_UNAVAILABLE` (`detail.reason: 'lock-timeout'`) when not acquired in time
   */
  withLock<T>(name: string, ttlMs: number, fn: (signal: AbortSignal) => Promise<T>, opts?: WithLockOptions): Promise<T>
  /** Rewrites every token sealed with an older key under the current key (rotation, docs/storage-schema.md). */
  reseal(): Promise<ResealResult>
  /** Resolves when the backend answers. */
  ping(): Promise<void>
  close(): Promise<void>
}

export interface TokenStoreOptions {
  /** The clock ticket expiry is checked against (epoch ms); tests inject one. */
  readonly now?: () => number
  /** First segment of every key (default `keyway`); tests use a unique one per run. */
  readonly namespace?: string
}

/** A flow id carries at least 128 random bits in base64url. */
const FLOW_ID_PATTERN = /^[A-Za-z0-9_-]{22,128}$/
/** 32 random bytes: 256 bits, 43 base64url characters. */
const FLOW_ID_BYTES = 32
/** Lock polling interval base; each wait adds up to the same again as jitter so waiters spread out. */
const LOCK_POLL_MS = 20

const epochMs = z.number().int().nonnegative()
const tokenFields = {
  method: z.enum(['oauth_m2m', 'oauth_u2m_shared', 'oauth_u2m_per_user']),
  accessToken: z.string().min(1),
  refreshToken: z.string().min(1).optional(),
  tokenType: z.string().min(1),
  scope: z.string().optional(),
  expiresAt: epochMs.optional(),
  obtainedAt: epochMs,
  lastRefreshAt: epochMs.optional(),
  lastUsedAt: epochMs.optional(),
  subject: z.string().optional(),
  warnings: z.array(z.string()).optional(),
}
/** Writes are strict (a misspelt field is a bug); reads keep unknown fields so a newer replica's records survive. */
const TokenRecordWriteSchema = z.strictObject(tokenFields)
const TokenRecordReadSchema = z.looseObject(tokenFields)
const TokenEnvelopeSchema = z.strictObject({
  t: z.literal('token'),
  connection: z.string(),
  user: z.string().nullable(),
  record: z.unknown(),
})
const TicketEnvelopeSchema = z.strictObject({
  t: z.literal('flow'),
  expiresAt: epochMs,
  flow: z.record(z.string(), z.unknown()),
})
const StateEnvelopeSchema = z.strictObject({
  t: z.literal('state'),
  expiresAt: epochMs,
  value: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
})

/** A new flow id: 256 random bits, base64url. */
export function newFlowId(): string {
  return randomBytes(FLOW_ID_BYTES).toString('base64url')
}

/** Whether `id` has the shape of a flow id (ids from URLs are checked before any lookup). */
export function isFlowId(id: unknown): id is string {
  return typeof id === 'string' && FLOW_ID_PATTERN.test(id)
}

/** @throws AppError `INTERNAL` naming the invalid field (never its value) */
function assertTokenRecord(record: TokenRecord): void {
  const r = TokenRecordWriteSchema.safeParse(record)
  if (!r.success) {
    const fields = [
      ...new Set(r.error.issues.map((i) => (i.path.length > 0 ? i.path.join('.') : i.code === 'unrecognized_keys' ? i.keys.join(', ') : '(record)'))),
    ]
    throw new AppError('INTERNAL', `token record field ${fields.map((f) => `"${f}"`).join(', ')} is invalid`)
  }
}

/** JSON with object keys sorted, so two equal records compare equal whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  )
}

function corrupt(what: string, detail: Readonly<Record<string, string>>): AppError {
  return new AppError('STORE_UNAVAILABLE', `stored ${what} opened but has an unexpected shape; it was not treated as missing`, {
    detail: { reason: 'bad-payload', record: what, ...detail },
  })
}

/** Creates the token store over an open backend and a keyring. */
export function createTokenStore(backend: StoreBackend, keyring: Keyring, opts: TokenStoreOptions = {}): TokenStore {
  const now = opts.now ?? Date.now
  const ns = opts.namespace ?? DEFAULT_NAMESPACE
  assertNamespace(ns)

  const sealToken = (key: string, ref: TokenRef, record: TokenRecord): string =>
    sealJson(keyring, key, { t: 'token', connection: ref.connection, user: ref.user, record })

  const openToken = (key: string, raw: string): { ref: TokenRef; record: TokenRecord } => {
    const env = TokenEnvelopeSchema.safeParse(openJson(keyring, key, raw, 'token record'))
    if (!env.success) throw corrupt('token record', {})
    const ref: TokenRef = { connection: env.data.connection, user: env.data.user }
    // The AAD already binds the record to `key`; this also rejects a record whose own ref disagrees.
    if (tokenKey(ns, ref) !== key) throw corrupt('token record', { connection: ref.connection })
    const record = TokenRecordReadSchema.safeParse(env.data.record)
    if (!record.success) throw corrupt('token record', { connection: ref.connection })
    // Parsed from JSON, so optional fields are absent rather than undefined, as TokenRecord requires.
    return { ref, record: record.data as TokenRecord }
  }

  const openTicket = (key: string, raw: string): TicketRecord | undefined => {
    const env = TicketEnvelopeSchema.safeParse(openJson(keyring, key, raw, 'ticket record'))
    if (!env.success) throw corrupt('ticket record', {})
    // The backend's TTL is the first line; this catches a backend clock or sweep that lags.
    return now() >= env.data.expiresAt ? undefined : env.data.flow
  }

  const openState = (key: string, raw: string): StateRecord | undefined => {
    const env = StateEnvelopeSchema.safeParse(openJson(keyring, key, raw, 'state record'))
    if (!env.success) throw corrupt('state record', {})
    return now() >= env.data.expiresAt ? undefined : env.data.value
  }
  const sealState = (key: string, value: StateRecord, ttlMs: number): string => {
    assertTtl(ttlMs, 'state ttlMs')
    return sealJson(keyring, key, { t: 'state', expiresAt: now() + ttlMs, value })
  }

  const store: TokenStore = {
    kind: backend.kind,

    async getToken(ref) {
      const key = tokenKey(ns, ref)
      const raw = await backend.get(key)
      return raw === undefined ? undefined : openToken(key, raw).record
    },

    async putToken(ref, record) {
      const key = tokenKey(ns, ref)
      assertTokenRecord(record)
      await backend.set(key, sealToken(key, ref, record))
      // A token write waits for a replica where there are replicas, so a failover keeps it (storage-schema.md).
      await backend.replicate?.(key)
    },

    async replaceToken(ref, expected, next) {
      const key = tokenKey(ns, ref)
      if (next !== undefined) assertTokenRecord(next)
      const sealedNext = next === undefined ? undefined : sealToken(key, ref, next)
      let swapped: boolean
      if (expected === undefined) swapped = await backend.compareAndSwap(key, undefined, sealedNext)
      else {
        const raw = await backend.get(key)
        if (raw === undefined) return false
        // Compare contents (a fresh seal never repeats bytes), then swap on the exact bytes read:
        // any write in between changes them and the swap fails.
        if (canonical(openToken(key, raw).record) !== canonical(expected)) return false
        swapped = await backend.compareAndSwap(key, raw, sealedNext)
      }
      // A rotated refresh token waits for a replica where there are replicas, so a failover keeps it.
      if (swapped && next !== undefined) await backend.replicate?.(key)
      return swapped
    },

    async deleteToken(ref) {
      return backend.delete(tokenKey(ns, ref))
    },

    async *listTokens(filter = {}) {
      if (filter.connection !== undefined) assertTokenRef({ connection: filter.connection, user: null })
      const suffix = filter.user === undefined ? undefined : `:${userSegment(filter.user)}`
      for await (const key of backend.keys(tokenPrefix(ns, filter.connection))) {
        if (suffix !== undefined && !key.endsWith(suffix)) continue
        const raw = await backend.get(key)
        if (raw === undefined) continue // deleted since it was listed
        yield openToken(key, raw)
      }
    },

    async putTicket(id, ticket, ttlMs) {
      if (!isFlowId(id)) throw new AppError('INTERNAL', 'flow id must be base64url of at least 128 random bits (newFlowId)')
      assertTtl(ttlMs, 'ticket ttlMs')
      const key = ticketKey(ns, id)
      await backend.set(key, sealJson(keyring, key, { t: 'flow', expiresAt: now() + ttlMs, flow: ticket }), ttlMs)
    },

    async getTicket(id) {
      if (!isFlowId(id)) return undefined
      const key = ticketKey(ns, id)
      const raw = await backend.get(key)
      return raw === undefined ? undefined : openTicket(key, raw)
    },

    async takeTicket(id) {
      if (!isFlowId(id)) return undefined
      const key = ticketKey(ns, id)
      const raw = await backend.takeOnce(key)
      return raw === undefined ? undefined : openTicket(key, raw)
    },

    async getState(name) {
      const key = stateKey(ns, name)
      const raw = await backend.get(key)
      return raw === undefined ? undefined : openState(key, raw)
    },

    async putState(name, value, ttlMs) {
      const key = stateKey(ns, name)
      await backend.set(key, sealState(key, value, ttlMs), ttlMs)
    },

    async addState(name, value, ttlMs) {
      const key = stateKey(ns, name)
      return backend.compareAndSwap(key, undefined, sealState(key, value, ttlMs), ttlMs)
    },

    async deleteState(name) {
      return backend.delete(stateKey(ns, name))
    },

    async withLock(name, ttlMs, fn, lockOpts = {}) {
      assertTtl(ttlMs, 'lock ttlMs')
      const waitMs = lockOpts.waitMs ?? ttlMs
      const key = lockKey(ns, name)
      // Real time on purpose: waiting is about wall-clock seconds, not the injected clock.
      const deadline = Date.now() + waitMs
      let handle = await backend.acquireLock(key, ttlMs)
      while (handle === undefined) {
        const left = deadline - Date.now()
        if (left <= 0) {
          throw new AppError('STORE_UNAVAILABLE', `lock was not acquired within ${waitMs} ms`, { detail: { reason: 'lock-timeout' } })
        }
        await sleep(Math.min(left, LOCK_POLL_MS + Math.random() * LOCK_POLL_MS))
        handle = await backend.acquireLock(key, ttlMs)
      }
      let held = handle
      const controller = new AbortController()
      let renewal: NodeJS.Timeout | undefined
      let finished = false
      const lost = (): void => controller.abort(new AppError('STORE_UNAVAILABLE', 'lock expired while held', { detail: { reason: 'lock-lost' } }))
      const renewOnce = async (): Promise<boolean> => {
        if (await held.extend(ttlMs)) return true
        // Lapsed (the store stalled past the TTL) but free: nobody else held it, take it again.
        const again = await backend.acquireLock(key, ttlMs)
        if (again === undefined) return false
        held = again
        return true
      }
      const renew = (): void => {
        renewal = setTimeout(
          () => {
            renewOnce().then(
              (owned) => {
                if (finished) return
                if (owned) renew()
                else lost()
              },
              // Not answered is not lost: try again on the next beat.
              () => {
                if (!finished) renew()
              },
            )
          },
          Math.max(1, Math.floor(ttlMs / 3)),
        )
        renewal.unref()
      }
      renew()
      try {
        return await fn(controller.signal)
      } finally {
        finished = true
        clearTimeout(renewal)
        // A failed release is harmless: the lock expires at its TTL.
        await held.release().catch(() => false)
      }
    },

    async reseal() {
      let resealed = 0
      let current = 0
      let failed = 0
      for await (const key of backend.keys(tokenPrefix(ns))) {
        const raw = await backend.get(key)
        if (raw === undefined) continue
        if (sealedKeyId(raw) === keyring.currentKeyId) {
          current++
          continue
        }
        let opened: { ref: TokenRef; record: TokenRecord }
        try {
          opened = openToken(key, raw)
        } catch {
          failed++
          continue
        }
        if (await backend.compareAndSwap(key, raw, sealToken(key, opened.ref, opened.record))) resealed++
        else current++
      }
      return { resealed, current, failed }
    },

    ping: () => backend.ping(),
    close: () => backend.close(),
  }
  return Object.freeze(store)
}
