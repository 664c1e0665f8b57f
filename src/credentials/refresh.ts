/**
 * Getting a fresh access token for one stored credential (design.md §8), shared by every OAuth
 * method. A token inside its refresh window is served at once while one refresh runs ahead in
 * the background; only a caller without a usable token waits. One refresh per credential at a
 * time: a single flight in the process, and across replicas the store's lock (a short lease,
 * renewed while the refresh and its save run, so a dead holder is noticed within seconds), with
 * a re-check under it. A rotated refresh token is never dropped: the new record is saved with
 * compare-and-set against the redeemed one, and a save the store does not take is retried while
 * the record serves this replica from memory. Failed token requests put the credential in a
 * back-off shared through the store (`refresh-state.ts`), and an upstream 401 forces at most one
 * refresh per cooldown. A fatal failure (`REAUTHORIZATION_REQUIRED`, the record is deleted) is
 * told from a transient one (the record stays, a still-valid token keeps serving). How a token
 * is obtained, and what a missing or dead grant means to the caller, is the method's business,
 * passed in per request.
 * @module
 */
import type { AuditLog } from '../audit/audit-log.js'
import { AppError, hasReason, isAppError } from '../errors.js'
import type { Logger } from '../log.js'
import { errorMessage } from '../log.js'
import { tokenLockName, type TokenMethod, type TokenRecord, type TokenRef, type TokenStore } from '../store/index.js'
import { saveUntilStored } from './refresh-save.js'
import { createRefreshState, retryAfterSeconds, type Backoff, type RefreshState } from './refresh-state.js'

/** Refresh at most this long before expiry: one minute covers clock skew and a slow token endpoint. */
export const MAX_REFRESH_SKEW_MS = 60_000
/**
 * Lease of the cross-replica refresh lock. Short, so that a holder that died is noticed within
 * it; renewed every third while the refresh and its save run (RFC 9700 §4.14, oauth2-proxy
 * #3456: a lease that expires mid-refresh lets a second replica double-redeem).
 */
export const REFRESH_LOCK_TTL_MS = 5_000
/**
 * How long a caller without a usable token waits for another holder's refresh: past a dead
 * holder's lease, and below the token request timeout (10 s), so a hanging token endpoint is
 * reported as such to the waiter too.
 */
export const REFRESH_WAIT_MS = 8_000
/** The caller that triggered a refresh waits at most this long for the save; the save then goes on in the background. */
export const SAVE_CALLER_WAIT_MS = 500
/** First pause between save attempts; it doubles (jittered) up to {@link SAVE_RETRY_MAX_MS}. */
export const SAVE_RETRY_FIRST_MS = 100
export const SAVE_RETRY_MAX_MS = 1_000
/** A save that has not landed after this long is given up and logged: the store has been failing all along. */
export const SAVE_GIVE_UP_MS = 15 * 60_000
/** Lifetime of the published "token request started": longer than any token request (10 s timeout). */
const REQUESTING_TTL_MS = 30_000

/** What `getFreshToken` needs to know about one credential. */
export interface FreshTokenRequest {
  readonly ref: TokenRef
  readonly method: TokenMethod
  /** Ignore a valid cached token (the upstream answered 401 to it); at most once per cooldown. */
  readonly forceRefresh?: boolean
  /** The access token the upstream refused (with `forceRefresh`): a stored token other than it is used as it is. */
  readonly rejected?: string
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
  /**
   * A stored token usable now. Fresh: returned as it is. Inside its refresh window: returned as
   * it is while a refresh runs in the background. Expired or missing: refreshed first. Forced
   * (upstream 401): refreshed unless the cooldown or a back-off is running, in which case the
   * same token comes back (the 401 stands).
   */
  getFreshToken(req: FreshTokenRequest): Promise<TokenRecord>
  /** Resolves once no refresh or save of this process is running (tests, shutdown). */
  idle(): Promise<void>
}

export interface RefresherDeps {
  readonly store: TokenStore
  readonly now: () => number
  readonly audit?: AuditLog
  readonly log?: Logger
  /** The shared refresh state; default: over `store` (tests pass one with a fixed random). */
  readonly state?: RefreshState
  /** How long a caller without a usable token waits for the lock; default {@link REFRESH_WAIT_MS}. */
  readonly waitMs?: number
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

/** Why a refresh is being attempted: ahead of expiry (background, no waiting), for a caller without a usable token, or after an upstream 401. */
type Mode = 'ahead' | 'wait' | 'forced'

/** A rotated record whose save has not landed: this replica serves it, never the redeemed one. */
interface Unsaved {
  /** What the store still holds (the compare-and-set expectation). */
  readonly redeemed: TokenRecord | undefined
  readonly next: TokenRecord
}

interface Deferred<T> {
  readonly promise: Promise<T>
  readonly resolve: (v: T) => void
  readonly reject: (e: unknown) => void
  readonly settled: () => boolean
}

function deferred<T>(): Deferred<T> {
  let settled = false
  let res!: (v: T) => void
  let rej!: (e: unknown) => void
  const promise = new Promise<T>((a, b) => {
    res = a
    rej = b
  })
  return {
    promise,
    resolve: (v) => {
      if (settled) return
      settled = true
      res(v)
    },
    reject: (e) => {
      if (settled) return
      settled = true
      rej(e)
    },
    settled: () => settled,
  }
}

/** Creates a refresher; keep one per process so its single-flight map covers every caller. */
export function createRefresher(deps: RefresherDeps): Refresher {
  const { store, now } = deps
  const shared = deps.state ?? createRefreshState(store, now)
  /** One flight per credential (and one forced flight) in this process. */
  const inflight = new Map<string, Promise<TokenRecord | undefined>>()
  /** Work holding a lock (a refresh and its save), which may outlive the flight that started it. */
  const locked = new Set<Promise<unknown>>()
  const unsaved = new Map<string, Unsaved>()
  /** The last back-off seen per credential, so calls during it do not each ask the store. */
  const resting = new Map<string, Backoff>()
  /** Until when this process knows the forced-refresh cooldown runs, per credential. */
  const cooling = new Map<string, number>()

  const audit = (
    req: FreshTokenRequest,
    type: 'credential.obtained' | 'credential.refreshed' | 'credential.refresh_failed',
    fields: { reason?: string; warning?: string } = {},
  ): void =>
    deps.audit?.record({
      type,
      connection: req.ref.connection,
      ...(req.ref.user === null ? {} : { user: req.ref.user }),
      authMethod: req.method,
      ...fields,
    })

  /** The record as seen by this method (one written by another auth method counts as none); an unsaved one first. */
  const read = async (req: FreshTokenRequest): Promise<{ stored: TokenRecord | undefined; current: TokenRecord | undefined }> => {
    const u = unsaved.get(tokenLockName(req.ref))
    if (u) return { stored: u.redeemed, current: u.next.method === req.method ? u.next : undefined }
    const stored = await store.getToken(req.ref)
    return { stored, current: stored?.method === req.method ? stored : undefined }
  }

  const track = (key: string, p: Promise<TokenRecord | undefined>): void => {
    inflight.set(key, p)
    p.finally(() => {
      if (inflight.get(key) === p) inflight.delete(key)
    }).catch(() => {})
  }

  const restingError = (req: FreshTokenRequest, b: Backoff): AppError => {
    const s = retryAfterSeconds(b.until - now())
    return new AppError('CREDENTIAL_UNAVAILABLE', `${b.message}; no new token request for ${s} s after ${b.failures} failed in a row: retry after ${s} s`, {
      detail: { connection: req.ref.connection, reason: 'backoff', transient: true, retryAfter: s, failures: b.failures },
    })
  }

  /** The credential's back-off if it is running: from memory, else from the store. */
  const restingNow = async (req: FreshTokenRequest, key: string): Promise<Backoff | undefined> => {
    const local = resting.get(key)
    if (local && local.until > now()) return local
    const b = await shared.backoff(req.ref)
    if (b && b.until > now()) {
      resting.set(key, b)
      return b
    }
    resting.delete(key)
    return undefined
  }

  /** One refresh attempt: back-off check, the lock (`ahead`: one try), then `underLock`. `undefined`: not attempted. */
  const attempt = async (req: FreshTokenRequest, key: string, before: TokenRecord | undefined, mode: Mode): Promise<TokenRecord | undefined> => {
    const rest = await restingNow(req, key)
    if (rest) {
      if (mode !== 'wait' && before && isUsable(before, now())) return before
      throw restingError(req, rest)
    }
    const result = deferred<TokenRecord | undefined>()
    const work = store
      .withLock(key, REFRESH_LOCK_TTL_MS, (signal) => underLock(req, key, before, mode, result.resolve, signal), {
        waitMs: mode === 'ahead' ? 0 : (deps.waitMs ?? REFRESH_WAIT_MS),
      })
      .then(result.resolve, (e: unknown) => {
        // After the caller was answered, a failure (a save given up) can only be logged.
        if (result.settled()) deps.log?.error('token save after refresh failed', { connection: req.ref.connection, error: errorMessage(e) })
        result.reject(e)
      })
    locked.add(work)
    void work.finally(() => locked.delete(work))
    try {
      return await result.promise
    } catch (e) {
      if (!hasReason(e, 'STORE_UNAVAILABLE', 'lock-timeout')) throw e
      if (mode === 'ahead') return undefined // another replica is refreshing, or a dead holder's lease runs out
      return waitedOut(req, before, mode, e)
    }
  }

  /** The lock stayed taken for the whole wait: the holder's result if it just landed, else say what is slow. */
  const waitedOut = async (req: FreshTokenRequest, before: TokenRecord | undefined, mode: Mode, e: AppError): Promise<TokenRecord> => {
    const { current } = await read(req)
    if (current && isUsable(current, now()) && current.accessToken !== before?.accessToken) return current
    if (mode === 'forced' && before && isUsable(before, now())) return before
    const started = await shared.inFlight(req.ref)
    if (started) {
      const s = Math.max(1, Math.round((now() - started.startedAt) / 1000))
      throw new AppError(
        'CREDENTIAL_UNAVAILABLE',
        `connection "${req.ref.connection}": the token endpoint has not answered for ${s} s (another replica's token request is still waiting for it); retry in a few seconds`,
        { cause: e, detail: { connection: req.ref.connection, reason: 'token-endpoint-slow', transient: true, waitedS: s } },
      )
    }
    throw e
  }

  /** Runs under the lock: re-check, back-off check, then the token request. */
  const underLock = async (
    req: FreshTokenRequest,
    key: string,
    before: TokenRecord | undefined,
    mode: Mode,
    answer: (r: TokenRecord) => void,
    signal: AbortSignal,
  ): Promise<TokenRecord> => {
    const { stored, current } = await read(req)
    if (current === undefined && req.missing) throw req.missing()
    // Someone (another caller, another replica) replaced the token while we waited: use theirs.
    if (current && before && current.accessToken !== before.accessToken && isUsable(current, now())) return current
    if (mode === 'forced') {
      if (current && current.accessToken !== (req.rejected ?? before?.accessToken) && isUsable(current, now())) return current
    } else if (current && isFresh(current, now())) return current
    // Another replica may have failed a token request while we waited for the lock.
    const previous = await shared.backoff(req.ref)
    if (previous && previous.until > now()) {
      resting.set(key, previous)
      if (mode !== 'wait' && current && isUsable(current, now())) return current
      throw restingError(req, previous)
    }
    return refresh(req, key, stored, current, previous, answer, signal)
  }

  /** `stored` is what the store holds (the compare-and-set expectation), `current` its usable view. */
  const refresh = async (
    req: FreshTokenRequest,
    key: string,
    stored: TokenRecord | undefined,
    current: TokenRecord | undefined,
    previous: Backoff | undefined,
    answer: (r: TokenRecord) => void,
    signal: AbortSignal,
  ): Promise<TokenRecord> => {
    await shared.requesting(req.ref, REQUESTING_TTL_MS)
    const requested = (): Promise<void> => shared.requested(req.ref).catch(() => {})
    let next: TokenRecord
    try {
      next = await req.obtain(current)
    } catch (e) {
      await requested()
      if (isAppError(e, 'REAUTHORIZATION_REQUIRED')) {
        const reason = e.detail?.reason ?? 'reauthorization-required'
        if (hasReason(e, 'REAUTHORIZATION_REQUIRED', 'invalid_grant') && current !== undefined) {
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
      const reason = isAppError(e) ? (e.detail?.reason ?? 'unexpected') : 'unexpected'
      audit(req, 'credential.refresh_failed', { reason })
      // A token request that failed puts the credential at rest, for every replica.
      let rest: Backoff | undefined
      if (isAppError(e, 'CREDENTIAL_UNAVAILABLE')) {
        rest = await shared.failed(req.ref, previous, e.message).catch(() => undefined)
        if (rest) resting.set(key, rest)
      }
      if (current && isUsable(current, now())) {
        deps.log?.warn('token refresh failed; the cached token is still valid and stays in use', { connection: req.ref.connection, error: errorMessage(e) })
        return current
      }
      if (rest && isAppError(e)) {
        const s = retryAfterSeconds(rest.until - now())
        throw new AppError(e.code, `${e.message}; retry after ${s} s`, { cause: e, detail: { ...e.detail, retryAfter: s } })
      }
      throw e
    }
    if (next === current) {
      await requested()
      return next
    }
    const result = await save(req, key, stored, current, next, answer, signal)
    // Bookkeeping after the caller has its token; none of it may fail the refresh.
    answer(result)
    await requested()
    if (previous) {
      resting.delete(key)
      await shared.succeeded(req.ref).catch(() => {})
    }
    return result
  }

  /**
   * Saves `next` in place of `stored` before it is used, or, when the store is slow, lets the
   * caller use it after {@link SAVE_CALLER_WAIT_MS} while the save is retried under the lease and
   * the record serves this replica from memory (design.md §8 names the window that remains).
   */
  const save = async (
    req: FreshTokenRequest,
    key: string,
    stored: TokenRecord | undefined,
    current: TokenRecord | undefined,
    next: TokenRecord,
    answer: (r: TokenRecord) => void,
    signal: AbortSignal,
  ): Promise<TokenRecord> => {
    const entry: Unsaved = { redeemed: stored, next }
    unsaved.set(key, entry)
    let warned = false
    const slow = setTimeout(() => answer(next), SAVE_CALLER_WAIT_MS)
    let outcome
    try {
      outcome = await saveUntilStored(store, req.ref, stored, next, {
        firstPauseMs: SAVE_RETRY_FIRST_MS,
        maxPauseMs: SAVE_RETRY_MAX_MS,
        giveUpMs: SAVE_GIVE_UP_MS,
        onStoreFailure: (e) => {
          if (warned) return
          warned = true
          deps.log?.warn('token store did not take the refreshed token; it serves this replica from memory while the save is retried', {
            connection: req.ref.connection,
            error: errorMessage(e),
            lockLost: signal.aborted,
          })
        },
      })
    } finally {
      clearTimeout(slow)
      if (unsaved.get(key) === entry) unsaved.delete(key)
    }
    if (outcome === 'saved') {
      if (warned) deps.log?.info('refreshed token saved after the store recovered', { connection: req.ref.connection })
      audit(req, current === undefined ? 'credential.obtained' : 'credential.refreshed', next.warnings?.[0] ? { warning: next.warnings[0] } : {})
      return next
    }
    if (outcome === 'abandoned')
      throw new AppError('STORE_UNAVAILABLE', `token of connection "${req.ref.connection}" could not be saved after refresh`, {
        detail: { reason: 'save-abandoned' },
      })
    // Changed under our lock: a sign-in or a revoke wrote without it; theirs wins.
    const latest = (await read(req)).current
    if (latest === undefined)
      throw req.missing ? req.missing() : new AppError('STORE_UNAVAILABLE', `token of connection "${req.ref.connection}" was removed during refresh`)
    return latest
  }

  /** A caller without a usable token: join the running flight if it yields one, else run one and wait. */
  const foreground = async (req: FreshTokenRequest, key: string, before: TokenRecord | undefined): Promise<TokenRecord> => {
    let running = inflight.get(key)
    while (running) {
      const got = await running
      if (got && isUsable(got, now())) return got
      const again = inflight.get(key)
      if (again === running) inflight.delete(key) // settled; its cleanup has not run yet
      running = again === running ? undefined : again
    }
    const p = attempt(req, key, before, 'wait')
    track(key, p)
    const got = await p
    if (got === undefined) throw new AppError('INTERNAL', 'a waited refresh returned nothing')
    return got
  }

  /** Inside the refresh window: one background refresh per credential; the caller never waits for it. */
  const ahead = (req: FreshTokenRequest, key: string, before: TokenRecord): void => {
    if (inflight.has(key)) return
    const local = resting.get(key)
    if (local && local.until > now()) return
    const p = attempt(req, key, before, 'ahead')
    track(key, p)
    p.catch((e: unknown) => deps.log?.warn('refresh ahead of expiry failed', { connection: req.ref.connection, error: errorMessage(e) }))
  }

  /** Upstream 401 to `before`: one forced refresh per cooldown across replicas; otherwise `before` again (the 401 stands). */
  const forced = async (req: FreshTokenRequest, key: string, before: TokenRecord): Promise<TokenRecord> => {
    // Replaced since the refused token was read (another call, another replica): use the new one.
    if (req.rejected !== undefined && before.accessToken !== req.rejected) return before
    const until = cooling.get(key)
    if (until !== undefined && until > now()) return before
    const fkey = `${key}:force`
    const running = inflight.get(fkey)
    if (running) return (await running) ?? before
    const p = (async (): Promise<TokenRecord | undefined> => {
      const claim = await shared.claimForcedRefresh(req.ref)
      cooling.set(key, claim.until)
      return claim.claimed ? attempt(req, key, before, 'forced') : before
    })()
    track(fkey, p)
    return (await p) ?? before
  }

  return {
    async getFreshToken(req) {
      const key = tokenLockName(req.ref)
      const before = (await read(req)).current
      if (before === undefined && req.missing) throw req.missing()
      if (before && isUsable(before, now())) {
        if (req.forceRefresh) return forced(req, key, before)
        if (isFresh(before, now())) return before
        ahead(req, key, before)
        return before
      }
      return foreground(req, key, before)
    },
    async idle() {
      while (inflight.size > 0 || locked.size > 0) await Promise.allSettled([...inflight.values(), ...locked])
    },
  }
}
