/**
 * Small, bounded memories of recent verification outcomes, so a busy MCP session does not
 * re-verify (or re-introspect) the same bearer on every request, and a bearer the issuer called
 * inactive is not introspected again at once. Keys are SHA-256 digests of the token, never the
 * token. An accepted entry never outlives the token's `exp`; a refusal is remembered only as its
 * reason.
 * @module
 */
import { sha256Base64url } from '../encoding.js'
import type { VerifiedToken } from './oidc-claims.js'

/**
 * How long an accepted JWT is remembered. JWT revocation is not observable anyway; introspected
 * tokens use `identity.oidc.introspection.cacheTtlSeconds` instead.
 */
export const VERIFIED_TOKEN_CACHE_MS = 60_000
/** Enough for every live session of a large deployment; beyond it the oldest entry goes. */
export const VERIFIED_TOKEN_CACHE_MAX_ENTRIES = 10_000

export interface TokenCache {
  get(tokenHash: string, nowMs: number): VerifiedToken | undefined
  /** Remembers `value` for `ttlMs` (default: the cache's), never past its `expiresAt`. */
  set(tokenHash: string, value: VerifiedToken, nowMs: number, ttlMs?: number): void
  readonly size: number
}

/** Refusal reasons by token hash, for a while. */
export interface RefusalCache {
  get(tokenHash: string, nowMs: number): string | undefined
  set(tokenHash: string, reason: string, nowMs: number, ttlMs: number): void
  readonly size: number
}

/** SHA-256 of the token, base64url: the only form in which a token is used as a key. */
export function hashToken(token: string): string {
  return sha256Base64url(token)
}

/** An LRU map: a hit moves the entry to the back, an insert past `maxEntries` drops the front. */
export function createTokenCache(maxEntries = VERIFIED_TOKEN_CACHE_MAX_ENTRIES, ttlMs = VERIFIED_TOKEN_CACHE_MS): TokenCache {
  const lru = createLru<VerifiedToken>(maxEntries)
  return {
    get: (tokenHash, nowMs) => lru.get(tokenHash, nowMs),
    set: (tokenHash, value, nowMs, ttl = ttlMs) => lru.set(tokenHash, value, Math.min(nowMs + ttl, value.expiresAt * 1000), nowMs),
    get size() {
      return lru.size
    },
  }
}

/** The same LRU for refusals: a flood of distinct junk pushes out the oldest junk, nothing else. */
export function createRefusalCache(maxEntries = VERIFIED_TOKEN_CACHE_MAX_ENTRIES): RefusalCache {
  const lru = createLru<string>(maxEntries)
  return {
    get: (tokenHash, nowMs) => lru.get(tokenHash, nowMs),
    set: (tokenHash, reason, nowMs, ttlMs) => lru.set(tokenHash, reason, nowMs + ttlMs, nowMs),
    get size() {
      return lru.size
    },
  }
}

function createLru<V>(maxEntries: number) {
  const entries = new Map<string, { readonly value: V; readonly untilMs: number }>()
  return {
    get(key: string, nowMs: number): V | undefined {
      const e = entries.get(key)
      if (!e) return undefined
      entries.delete(key)
      if (nowMs >= e.untilMs) return undefined
      entries.set(key, e)
      return e.value
    },
    set(key: string, value: V, untilMs: number, nowMs: number): void {
      if (untilMs <= nowMs) return
      entries.delete(key)
      while (entries.size >= maxEntries) {
        const oldest = entries.keys().next()
        if (oldest.done) break
        entries.delete(oldest.value)
      }
      entries.set(key, { value, untilMs })
    },
    get size() {
      return entries.size
    },
  }
}
