/**
 * What replicas share about one credential's refreshing, beside the token itself (design.md §8,
 * docs/storage-schema.md `state` keys): the back-off after failed token requests, the cooldown of
 * forced refreshes after an upstream 401, and when the current token request started. Each is a
 * small TTL'd state record in the token store, so every replica obeys the same back-off and
 * cooldown. The back-off schedule is a pure function; the rest reads and writes the store.
 * @module
 */
import { tokenLockName, type StateRecord, type TokenRef, type TokenStore } from '../store/index.js'

/** First back-off after a failed token request. */
export const BACKOFF_BASE_MS = 1_000
/** Longest back-off: a provider that is down is asked twice a minute at most, per credential. */
export const BACKOFF_MAX_MS = 30_000
/** Jitter of each back-off, ±20 %, so replicas and credentials do not come back in step. */
export const BACKOFF_JITTER = 0.2
/**
 * How long the failure count outlives the back-off: a failure within this after the last back-off
 * ended doubles the next one; after it the count starts again.
 */
export const BACKOFF_MEMORY_MS = 60_000
/** At most one forced refresh per credential per this long, across replicas (upstream 401). */
export const FORCED_REFRESH_COOLDOWN_MS = 30_000
/** Longest failure text kept with a back-off (the message of an `AppError`, already secret-free). */
const MAX_MESSAGE_CHARS = 300

/**
 * The back-off after `failures` failed token requests in a row: 1 s, 2 s, 4 s, … capped at 30 s,
 * each ±20 % (`random` in [0, 1)), never above the cap.
 */
export function backoffDelayMs(failures: number, random: number = Math.random()): number {
  const n = Math.max(1, Math.floor(failures))
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(n - 1, 30))
  const jittered = Math.round(base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * random))
  return Math.min(BACKOFF_MAX_MS, jittered)
}

/** Seconds to tell a caller to wait for `ms`, at least 1. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

/** A credential resting after failed token requests. Times are epoch ms. */
export interface Backoff {
  readonly failures: number
  /** No token request before this. */
  readonly until: number
  /** Why the last token request failed (its `AppError` message). */
  readonly message: string
}

/** A token request in flight somewhere: when it was sent. */
export interface Requesting {
  readonly startedAt: number
}

export interface RefreshState {
  /** The credential's back-off record (`until` may be past: the count is still remembered). */
  backoff(ref: TokenRef): Promise<Backoff | undefined>
  /** Records one more failed token request after `previous`; returns the new back-off. */
  failed(ref: TokenRef, previous: Backoff | undefined, message: string): Promise<Backoff>
  /** A token request succeeded: no back-off any more. */
  succeeded(ref: TokenRef): Promise<void>
  /**
   * Claims the forced-refresh cooldown: `claimed` for the one caller (any replica) that may force
   * a refresh now; `until` is when the running cooldown ends either way.
   */
  claimForcedRefresh(ref: TokenRef): Promise<{ readonly claimed: boolean; readonly until: number }>
  /** Publishes that a token request for `ref` starts now (for waiters on other replicas). */
  requesting(ref: TokenRef, ttlMs: number): Promise<void>
  /** The token request in flight for `ref`, if one was published and not yet cleared. */
  inFlight(ref: TokenRef): Promise<Requesting | undefined>
  /** The token request for `ref` ended. */
  requested(ref: TokenRef): Promise<void>
}

const name = (kind: 'backoff' | 'forced' | 'requesting', ref: TokenRef): string => `${kind}:${tokenLockName(ref)}`

function parseBackoff(v: StateRecord | undefined): Backoff | undefined {
  if (v === undefined) return undefined
  const { failures, until, message } = v
  if (typeof failures !== 'number' || typeof until !== 'number') return undefined
  return { failures, until, message: typeof message === 'string' ? message : 'the last token request failed' }
}

/** The shared refresh state over the token store, judged by the clock `now`. */
export function createRefreshState(store: TokenStore, now: () => number, random: () => number = Math.random): RefreshState {
  return {
    async backoff(ref) {
      return parseBackoff(await store.getState(name('backoff', ref)))
    },
    async failed(ref, previous, message) {
      const failures = (previous?.failures ?? 0) + 1
      const delay = backoffDelayMs(failures, random())
      const next: Backoff = { failures, until: now() + delay, message: message.slice(0, MAX_MESSAGE_CHARS) }
      await store.putState(name('backoff', ref), { ...next }, delay + BACKOFF_MEMORY_MS)
      return next
    },
    async succeeded(ref) {
      await store.deleteState(name('backoff', ref))
    },
    async claimForcedRefresh(ref) {
      const at = now()
      if (await store.addState(name('forced', ref), { at }, FORCED_REFRESH_COOLDOWN_MS)) return { claimed: true, until: at + FORCED_REFRESH_COOLDOWN_MS }
      const held = await store.getState(name('forced', ref))
      const since = typeof held?.at === 'number' ? held.at : at
      return { claimed: false, until: since + FORCED_REFRESH_COOLDOWN_MS }
    },
    async requesting(ref, ttlMs) {
      await store.putState(name('requesting', ref), { startedAt: now() }, ttlMs)
    },
    async inFlight(ref) {
      const v = await store.getState(name('requesting', ref))
      return typeof v?.startedAt === 'number' ? { startedAt: v.startedAt } : undefined
    },
    async requested(ref) {
      await store.deleteState(name('requesting', ref))
    },
  }
}
