/**
 * Saving a refreshed token record until the store takes it (design.md §8 "Rotation never
 * dropped"). Once the provider has answered, the new record is the only copy of a rotated
 * refresh token in the world, so a store that fails or stalls is asked again, with jittered
 * pauses from 100 ms to 1 s, always as a compare-and-set against the record that was redeemed:
 * a retry can never overwrite a newer record (a sign-in, another replica's refresh, a revoke).
 * This module only writes; the caller keeps the record in memory and holds the lease meanwhile.
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { isAppError } from '../errors.js'
import type { TokenRecord, TokenRef, TokenStore } from '../store/index.js'

/** How a save ended: in the store, or the store holds another record now, or given up after `giveUpMs`. */
export type SaveOutcome = 'saved' | 'changed' | 'abandoned'

export interface SaveOptions {
  readonly firstPauseMs: number
  readonly maxPauseMs: number
  readonly giveUpMs: number
  /** Called after each attempt the store did not answer (for a log line, once). */
  readonly onStoreFailure?: (e: unknown, attempt: number) => void
  readonly random?: () => number
}

/** Same token as far as a save is concerned: the access and refresh token match. */
function sameTokens(a: TokenRecord, b: TokenRecord): boolean {
  return a.accessToken === b.accessToken && a.refreshToken === b.refreshToken
}

/**
 * Writes `next` in place of `expected` (compare-and-set), retrying while the store fails with
 * `STORE_UNAVAILABLE`. A retry that finds `next` already there counts as saved: an earlier
 * attempt landed but its answer was lost (a store that stalled after executing it).
 */
export async function saveUntilStored(
  store: TokenStore,
  ref: TokenRef,
  expected: TokenRecord | undefined,
  next: TokenRecord,
  opts: SaveOptions,
): Promise<SaveOutcome> {
  const random = opts.random ?? Math.random
  const started = Date.now()
  let pause = opts.firstPauseMs
  for (let attempt = 1; ; attempt++) {
    try {
      if (await store.replaceToken(ref, expected, next)) return 'saved'
      const there = await store.getToken(ref)
      return there !== undefined && sameTokens(there, next) ? 'saved' : 'changed'
    } catch (e) {
      if (!isAppError(e, 'STORE_UNAVAILABLE')) throw e
      opts.onStoreFailure?.(e, attempt)
    }
    if (Date.now() - started >= opts.giveUpMs) return 'abandoned'
    // Real time on purpose (like the lock's waits); the timer does not keep a stopping process alive.
    await sleep(Math.round(pause * (0.5 + random())), undefined, { ref: false })
    pause = Math.min(opts.maxPauseMs, pause * 2)
  }
}
