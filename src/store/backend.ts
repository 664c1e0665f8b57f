/**
 * The storage backend contract under the token store: a string key-value store with TTLs, an
 * atomic put-if-unchanged, an atomic take, an owner-token lock and listing by prefix, chosen by
 * the `store.url` scheme (SQLite embedded by default, memory for tests, Redis for replicas: one
 * server, Sentinel or Cluster).
 * Backends store opaque strings (already sealed by the layer above) and know nothing of tokens.
 * Their one rule: a miss is `undefined`, and any failure of the backend throws
 * `AppError('STORE_UNAVAILABLE')` with the original kept as `cause`; nothing is ever guessed.
 * @module
 */
import { randomBytes } from 'node:crypto'
import type { Secret } from '../secret.js'
import { AppError, isAppError } from '../errors.js'
import { isRedisUrl } from './redis-url.js'

/** The schemes `store.url` accepts, for messages. */
export const STORE_SCHEMES = 'sqlite://, memory://, redis://, rediss://, redis+sentinel:// or redis+cluster://'

/** Which backend a store URL selected. */
export type BackendKind = 'memory' | 'sqlite' | 'redis'

/** A held lock. Only its owner token can release or extend it. */
export interface LockHandle {
  /** The backend key the lock lives under. */
  readonly key: string
  /** Random owner token (128 bits); the lock's stored value. */
  readonly token: string
  /** Deletes the lock if this handle still owns it (compare-and-delete); `false` when it had expired or was taken over. */
  release(): Promise<boolean>
  /** Resets the lock's TTL if this handle still owns it; `false` when ownership was lost. */
  extend(ttlMs: number): Promise<boolean>
}

/** A string key-value backend. Every method throws `AppError('STORE_UNAVAILABLE')` on failure. */
export interface StoreBackend {
  readonly kind: BackendKind
  /** The value, or `undefined` when the key is absent or expired (a miss is not an error). */
  get(key: string): Promise<string | undefined>
  /** Writes unconditionally; `ttlMs` undefined means no expiry. */
  set(key: string, value: string, ttlMs?: number): Promise<void>
  /** `true` when a live value was deleted. */
  delete(key: string): Promise<boolean>
  /**
   * Atomically: if the current value equals `expected` (`undefined` = absent or expired), write
   * `next` (`undefined` = delete) with `ttlMs` (undefined = no expiry) and return `true`;
   * otherwise change nothing and return `false`.
   */
  compareAndSwap(key: string, expected: string | undefined, next: string | undefined, ttlMs?: number): Promise<boolean>
  /** Atomically reads and deletes: of any number of concurrent takes, exactly one gets the value. */
  takeOnce(key: string): Promise<string | undefined>
  /** Takes the lock under `key` for `ttlMs` if nobody holds it, else `undefined` (no waiting here). */
  acquireLock(key: string, ttlMs: number): Promise<LockHandle | undefined>
  /** Every live key that starts with `prefix` (in no particular order). */
  keys(prefix: string): AsyncIterable<string>
  /**
   * After a token write to `key`: waits until a replica holds it, where the backend has replicas
   * (Redis: `WAIT 1` when the primary has any), so a failover cannot roll the write back. Never
   * throws: the write is on the primary either way; an unconfirmed copy is logged as a warning.
   * Absent (nothing to wait for) on memory and SQLite.
   */
  replicate?(key: string): Promise<void>
  /** Resolves when the backend answers; for `/readyz`. */
  ping(): Promise<void>
  /** Releases connections and timers; later calls throw `STORE_UNAVAILABLE`. Idempotent. */
  close(): Promise<void>
}

/** Tuning for {@link createBackend}; each backend reads the fields that concern it. */
export interface BackendOptions {
  /** memory: the clock TTLs are measured against (tests inject one). */
  readonly now?: () => number
  /** redis: how long the first connection may take before calls fail. */
  readonly connectTimeoutMs?: number
  /** redis: the longest any single command may take before it fails as `STORE_UNAVAILABLE`. */
  readonly commandTimeoutMs?: number
  /** sqlite: how long to wait for another process's write lock before failing. */
  readonly busyTimeoutMs?: number
  /** redis: the AUTH password of the data nodes (`store.password`), kept out of the URL. */
  readonly password?: Secret
  /** redis+sentinel: the AUTH password of the Sentinels (`store.sentinelPassword`). */
  readonly sentinelPassword?: Secret
  /** redis: receives warnings (a token write no replica acknowledged in time). */
  readonly warn?: (message: string) => void
}

/**
 * Wraps any failure of a backend call as `STORE_UNAVAILABLE` (an existing one passes through).
 * The message names the backend and the operation, never a key's value.
 */
export function storeFailure(kind: BackendKind, op: string, cause: unknown): AppError {
  if (isAppError(cause, 'STORE_UNAVAILABLE')) return cause
  return new AppError('STORE_UNAVAILABLE', `token store (${kind}) failed during ${op}`, { cause, detail: { backend: kind, op } })
}

/** The error for any call after `close()`. */
export function closedFailure(kind: BackendKind, op: string): AppError {
  return new AppError('STORE_UNAVAILABLE', `token store (${kind}) is closed (${op})`, { detail: { backend: kind, op } })
}

/** @throws AppError `INTERNAL` for a TTL that is not a positive safe integer of milliseconds */
export function assertTtl(ttlMs: number | undefined, field: string): void {
  if (ttlMs !== undefined && (!Number.isSafeInteger(ttlMs) || ttlMs <= 0)) {
    throw new AppError('INTERNAL', `${field} must be a positive integer of milliseconds`)
  }
}

/**
 * A lock built on the backend's own compare-and-swap: acquire = put-if-absent with TTL, release =
 * compare-and-delete, extend = compare-and-rewrite with a new TTL. The owner token is random, so
 * a holder whose lock expired can never release or extend the next holder's lock.
 */
export async function acquireLockWithCas(cas: StoreBackend['compareAndSwap'], key: string, ttlMs: number): Promise<LockHandle | undefined> {
  assertTtl(ttlMs, 'lock ttlMs')
  const token = randomBytes(16).toString('base64url')
  if (!(await cas(key, undefined, token, ttlMs))) return undefined
  return Object.freeze({
    key,
    token,
    release: () => cas(key, token, undefined),
    extend: (ms: number) => {
      assertTtl(ms, 'lock ttlMs')
      return cas(key, token, token, ms)
    },
  })
}

/**
 * Opens the backend a `store.url` names: `memory://`, `sqlite://<absolute path>`, `redis://…`,
 * `rediss://…`, `redis+sentinel://…` or `redis+cluster://…` (forms: `redis-url.ts`). Backends are loaded on demand so that a memory store never loads native SQLite.
 * A Redis backend connects in the background: an unreachable Redis makes calls fail, not this.
 * @throws AppError `CONFIG_INVALID` for an unknown scheme, a malformed Sentinel or Cluster URL or a relative SQLite path
 * @throws AppError `STORE_UNAVAILABLE` when the SQLite file cannot be created or opened
 */
export async function createBackend(url: string, opts: BackendOptions = {}): Promise<StoreBackend> {
  if (url.startsWith('memory://')) {
    const { createMemoryBackend } = await import('./memory-backend.js')
    return createMemoryBackend(opts.now === undefined ? {} : { now: opts.now })
  }
  if (url.startsWith('sqlite://')) {
    const { createSqliteBackend } = await import('./sqlite-backend.js')
    return createSqliteBackend(url.slice('sqlite://'.length), opts.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: opts.busyTimeoutMs })
  }
  if (isRedisUrl(url)) {
    const { createRedisBackend } = await import('./redis-backend.js')
    return createRedisBackend(url, {
      ...(opts.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: opts.connectTimeoutMs }),
      ...(opts.commandTimeoutMs === undefined ? {} : { commandTimeoutMs: opts.commandTimeoutMs }),
      ...(opts.password === undefined ? {} : { password: opts.password }),
      ...(opts.sentinelPassword === undefined ? {} : { sentinelPassword: opts.sentinelPassword }),
      ...(opts.warn === undefined ? {} : { warn: opts.warn }),
    })
  }
  // The URL may carry a Redis password: never echo it.
  throw new AppError('CONFIG_INVALID', `store.url must start with ${STORE_SCHEMES}`, {
    detail: { setting: 'store.url' },
  })
}
