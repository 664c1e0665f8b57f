/**
 * The time rules every accepted access token meets beyond `exp` and `nbf`: an `iat` (issued at)
 * not in the future, and an optional cap on its lifetime. Pure: times come in as epoch seconds;
 * it returns a refusal reason or nothing, and knows nothing of where the claims came from (a JWT
 * or an introspection answer).
 * @module
 */

/** Clock skew tolerated between Keyway and the issuer for `exp`, `nbf` and `iat`. */
export const CLOCK_TOLERANCE_S = 30

export interface TokenTimes {
  readonly iat?: unknown
  /** Epoch seconds, already checked to be a number. */
  readonly exp: number
}

/**
 * Why the token's times are not acceptable, or undefined. A token issued more than
 * `CLOCK_TOLERANCE_S` in the future comes from a wrong clock or a forger (RFC 7519 §4.1.6).
 * With `maxLifetimeS`, `exp - iat` (or `exp - now` without `iat`) above it is refused: a
 * stolen long-lived token is worth more than the IdP's policy intends.
 */
export function tokenTimeProblem(times: TokenTimes, nowS: number, maxLifetimeS: number | undefined): string | undefined {
  const { iat, exp } = times
  if (iat !== undefined && (typeof iat !== 'number' || !Number.isFinite(iat))) return 'token claim "iat" is not a number'
  if (typeof iat === 'number' && iat > nowS + CLOCK_TOLERANCE_S) return 'token "iat" is in the future'
  if (maxLifetimeS !== undefined) {
    const lifetime = exp - (typeof iat === 'number' ? iat : nowS)
    if (lifetime > maxLifetimeS) return 'token lifetime is longer than maxTokenLifetimeSeconds'
  }
  return undefined
}
