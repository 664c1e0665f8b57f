/**
 * A small, bounded memory of recently accepted access tokens, so a busy MCP session does not
 * re-verify (or re-introspect) the same bearer on every request. Keys are SHA-256 digests of the
 * token, never the token. It must not outlive a token's `exp`, and it never stores refusals.
 * @module
 */
import { createHash } from 'node:crypto'
import type { VerifiedToken } from './oidc-claims.js'

/**
 * How long an accepted token is remembered. It bounds how late a revocation at the issuer is
 * noticed for introspected tokens (JWT revocation is not observable at all), so keep it short.
 */
export const VERIFIED_TOKEN_CACHE_MS = 60_000
/** Enough for every live session of a large deployment; beyond it the oldest entry goes. */
export const VERIFIED_TOKEN_CACHE_MAX_ENTRIES = 10_000

export interface TokenCache {
  get(tokenHash: string, nowMs: number): VerifiedToken | undefined
  set(tokenHash: string, value: VerifiedToken, nowMs: number): void
  readonly size: number
}

/** SHA-256 of the token, base64url: the only form in which a token is used as a key. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url')
}

/** An LRU map: a hit moves the entry to the back, an insert past `maxEntries` drops the front. */
export function createTokenCache(maxEntries = VERIFIED_TOKEN_CACHE_MAX_ENTRIES, ttlMs = VERIFIED_TOKEN_CACHE_MS): TokenCache {
  const entries = new Map<string, { readonly value: VerifiedToken; readonly untilMs: number }>()
  return {
    get(tokenHash, nowMs) {
      const e = entries.get(tokenHash)
      if (!e) return undefined
      entries.delete(tokenHash)
      if (nowMs >= e.untilMs) return undefined
      entries.set(tokenHash, e)
      return e.value
    },
    set(tokenHash, value, nowMs) {
      const untilMs = Math.min(nowMs + ttlMs, value.expiresAt * 1000)
      if (untilMs <= nowMs) return
      entries.delete(tokenHash)
      while (entries.size >= maxEntries) {
        const oldest = entries.keys().next()
        if (oldest.done) break
        entries.delete(oldest.value)
      }
      entries.set(tokenHash, { value, untilMs })
    },
    get size() {
      return entries.size
    },
  }
}
