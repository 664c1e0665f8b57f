/**
 * Getting a fresh access token for one stored credential (design.md §8), shared by every OAuth
 * method: refresh ahead of expiry (a skew), one refresh per key at a time (in-process single
 * flight, plus the store's lock across replicas), re-check after the lock, save the result with
 * compare-and-set before anyone uses it (so a rotated refresh token is never lost), and tell a
 * fatal failure (`REAUTHORIZATION_REQUIRED`: the record is deleted) from a transient one (the
 * record stays, and a still-valid cached token keeps serving). How a token is obtained, and what
 * a missing or dead grant means to the caller, is the method's business, passed in per request.
 * @module
 */
import type { AuditLog } from '../audit/audit-log.js'
import { AppError, isAppError } from '../errors.js'
import type { Logger } from '../log.js'
import { errorMessage } from '../log.js'
import { tokenLockName, type TokenMethod, type TokenRecord, type TokenRef, type TokenStore } from '../store/index.js'

/** Refresh at most this long before expiry: one minute covers clock skew and a slow token endpoint. */
export const MAX_REFRESH_SKEW_MS = 60_000
/**
 * Lease of the cross-replica refresh lock. Longer than a token request can take (10 s timeout)
 * plus the store write; the store renews it every third while the refresh runs (RFC 9700 §4.14,
 * oauth2-proxy #3456: a lease that expires mid-refresh lets a second replica double-redeem).
 */
export const REFRESH_LOCK_TTL_MS = 30_000
/** After a failed refresh, calls that still have a valid token use it without asking again for this long. */
export const FAILED_REFRESH_BACKOFF_MS = 5_000

/** What `getFreshToken` needs to know about one credential. */
export interface FreshTokenRequest {
  readonly ref: TokenRef
  readonly method: TokenMethod
  /** Ignore a valid cached token (the upstream answered 401 to it). */
  readonly forceRefresh?: boolean
  /**
   * Gets the next record: m2m asks for a new token, u2m redeems `current.refreshToken`; returning
   * `current` itself means "nothing to renew, keep it" (nothing is written). Throws
   * `AppError`; `REAUTHORIZATION_REQUIRED` means the grant is gone for good (with
   * `detail.reason: 'invalid_grant'` the stored record is deleted, otherwise it is kept).
   */
  readonly obtain: (current: TokenRecord | undefined) => Promise<TokenRecord>
  /** Set when nothing can be obtained without a person (u2m): the error for "no stored token". */
  readonly missing?: () => AppError
  /** The caller's error for a dead grant (names who must sign in again); the record is gone by then. */
  readonly fatal?: (e: AppError) => AppError
}

export interface Refresher {
  /** A stored token fresh enough to send, refreshing it first when needed. */
  getFreshToken(req: FreshTokenRequest): Promise<TokenRecord>
}

export interface RefresherDeps {
  readonly store: TokenStore
  readonly now: () => number
  readonly audit?: AuditLog
  readonly log?: Logger
}

/**
 * How long before expiry to refresh: a quarter of the token's lifetime, at most a minute, so a
 * one-hour token refreshes a minute early and a 4-second test token one second early.
 */
export function refreshSkewMs(record: TokenRecord): number {
  if (record.expiresAt === undefined) return 0
  const issued = record.lastRefreshAt ?? record.obtainedAt
  const lifetime = Math.max(0, record.expiresAt - issued)
  return Math.min(MAX_REFRESH_SKEW_MS, Math.floor(lifetime / 4))
}

/** Fresh: no known expiry, or more than the skew left. */
export function isFresh(record: TokenRecord, now: number): boolean {
  return record.expiresAt === undefined || record.expiresAt - now > refreshSkewMs(record)
}

/** Usable: not expired yet (inside the skew window it is still accepted upstream). */
export function isUsable(record: TokenRecord, now: number): boolean {
  return record.expiresAt === undefined || now < record.expiresAt
}

/** Creates a refresher; keep one per process so its single-flight map covers every caller. */
export function createRefresher(deps: RefresherDeps): Refresher {
  const { store, now } = deps
  const inflight = new Map<string, Promise<TokenRecord>>()
  const failedAt = new Map<string, number>()

  const audit = (req: FreshTokenRequest, type: 'credential.obtained' | 'credential.refreshed' | 'credential.refresh_failed', fields: { reason?: string; warning?: string } = {}): void =>
    deps.audit?.record({
      type,
      connection: req.ref.connection,
      ...(req.ref.user === null ? {} : { user: req.ref.user }),
      authMethod: req.method,
      ...fields,
    })

  /** The stored record, as seen by this method: one written by another auth method counts as none. */
  const read = async (req: FreshTokenRequest): Promise<{ stored: TokenRecord | undefined; current: TokenRecord | undefined }> => {
    const stored = await store.getToken(req.ref)
    return { stored, current: stored?.method === req.method ? stored : undefined }
  }

  const slowPath = async (req: FreshTokenRequest, lockName: string, before: TokenRecord | undefined): Promise<TokenRecord> => {
    try {
      return await store.withLock(lockName, REFRESH_LOCK_TTL_MS, async () => {
        const { stored, current } = await read(req)
        if (current === undefined && req.missing) throw req.missing()
        // Someone (another caller, another replica) replaced the token while we waited: use theirs.
        if (current && before && current.accessToken !== before.accessToken && isUsable(current, now())) return current
        if (current && !req.forceRefresh && isFresh(current, now())) return current
        return refresh(req, stored, current)
      })
    } catch (e) {
      // The lock could not be had (store slow or a stuck holder): never refresh without it, but a
      // token that is still valid serves this call (RFC 9700 §4.14: no unlocked double-spend).
      if (isAppError(e, 'STORE_UNAVAILABLE') && e.detail?.reason === 'lock-timeout' && before && isUsable(before, now())) {
        deps.log?.warn('token refresh lock not acquired; using the still-valid token', { connection: req.ref.connection })
        return before
      }
      throw e
    }
  }

  /** `stored` is what the store holds (the compare-and-set expectation), `current` its usable view. */
  const refresh = async (req: FreshTokenRequest, stored: TokenRecord | undefined, current: TokenRecord | undefined): Promise<TokenRecord> => {
    const lockName = tokenLockName(req.ref)
    let next: TokenRecord
    try {
      next = await req.obtain(current)
    } catch (e) {
      if (isAppError(e, 'REAUTHORIZATION_REQUIRED')) {
        const reason = typeof e.detail?.reason === 'string' ? e.detail.reason : 'reauthorization-required'
        if (reason === 'invalid_grant' && current !== undefined) {
          // The grant is gone: delete exactly what was redeemed; a newer record (a fresh sign-in) stays.
          if (!(await store.replaceToken(req.ref, current, undefined))) {
            const latest = (await read(req)).current
            if (latest && isUsable(latest, now())) return latest
          }
          deps.log?.warn('stored grant refused by the provider; record deleted', { connection: req.ref.connection })
        }
        audit(req, 'credential.refresh_failed', { reason })
        throw req.fatal ? req.fatal(e) : e
      }
      failedAt.set(lockName, now())
      const reason = isAppError(e) && typeof e.detail?.reason === 'string' ? e.detail.reason : 'unexpected'
      audit(req, 'credential.refresh_failed', { reason })
      if (current && isUsable(current, now())) {
        deps.log?.warn('token refresh failed; the cached token is still valid and stays in use', { connection: req.ref.connection, error: errorMessage(e) })
        return current
      }
      throw e
    }
    failedAt.delete(lockName)
    if (next === current) return next
    // Saved before it is returned: a rotated refresh token must never live only in memory.
    if (!(await saveWithRetry(store, req.ref, stored, next))) {
      const latest = (await read(req)).current
      // Changed under our lock: a sign-in or a revoke wrote without it; theirs wins.
      if (latest === undefined) throw req.missing ? req.missing() : new AppError('STORE_UNAVAILABLE', `token of connection "${req.ref.connection}" was removed during refresh`)
      return latest
    }
    audit(req, current === undefined ? 'credential.obtained' : 'credential.refreshed', next.warnings?.[0] ? { warning: next.warnings[0] } : {})
    return next
  }

  return {
    async getFreshToken(req) {
      const before = (await read(req)).current
      if (before === undefined && req.missing) throw req.missing()
      const lockName = tokenLockName(req.ref)
      if (before && !req.forceRefresh) {
        if (isFresh(before, now())) return before
        // A refresh just failed: do not hammer the provider while the cached token still works.
        const failed = failedAt.get(lockName)
        if (failed !== undefined && now() - failed < FAILED_REFRESH_BACKOFF_MS && isUsable(before, now())) return before
      }
      const key = `${lockName}${req.forceRefresh ? ':force' : ''}`
      const running = inflight.get(key)
      if (running) return running
      const p = slowPath(req, lockName, before).finally(() => inflight.delete(key))
      inflight.set(key, p)
      return p
    },
  }
}

/** CAS write, retried once when the store failed (not when the record changed). */
async function saveWithRetry(store: TokenStore, ref: TokenRef, expected: TokenRecord | undefined, next: TokenRecord): Promise<boolean> {
  try {
    return await store.replaceToken(ref, expected, next)
  } catch (e) {
    if (!isAppError(e, 'STORE_UNAVAILABLE')) throw e
    return store.replaceToken(ref, expected, next)
  }
}
