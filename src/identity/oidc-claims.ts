/**
 * Reads who a verified access token speaks for: the user, groups and scopes, from either a JWT
 * claims set (RFC 9068) or an introspection response (RFC 7662). Pure: it trusts its input to be
 * verified already and checks only shape. It must not decide anything about signatures, issuers,
 * audiences or time.
 * @module
 */
import { AppError } from '../errors.js'
import type { OidcSettings } from '../config/load.js'

/** What an accepted access token says about its caller. Frozen; safe to share between calls. */
export interface VerifiedToken {
  /** Value of `settings.userClaim` (default `sub`). */
  readonly user: string
  /** Value of `settings.groupsClaim`; `[]` when the claim is absent. */
  readonly groups: readonly string[]
  /** From `scope` (RFC 9068 §2.2.3, RFC 7662 §2.2, space separated) or `scp` (Okta: array; Entra: string). */
  readonly scopes: readonly string[]
  /** `exp`, epoch seconds. */
  readonly expiresAt: number
  /** `client_id` (RFC 9068 §2.2, RFC 7662 §2.2), when the token names one. */
  readonly clientId?: string
}

/**
 * Maps verified claims to a `VerifiedToken`. Claim names are exact keys, never dotted paths:
 * Auth0-style namespaced claims (`https://example.com/groups`) contain dots.
 * Throws `AppError('IDENTITY_INVALID')` when the user claim is missing or a claim has the wrong shape.
 */
export function readTokenClaims(
  claims: Readonly<Record<string, unknown>>,
  settings: Pick<OidcSettings, 'userClaim' | 'groupsClaim'>,
  expiresAt: number,
): VerifiedToken {
  const user = claims[settings.userClaim]
  if (typeof user !== 'string' || user === '')
    throw new AppError('IDENTITY_INVALID', `token claim "${settings.userClaim}" (userClaim) is missing or not a string`)
  const groups = readList(claims[settings.groupsClaim], /[\s,]+/)
  if (!groups) throw new AppError('IDENTITY_INVALID', `token claim "${settings.groupsClaim}" (groupsClaim) is not a list of strings`)
  const scopes = claims.scope !== undefined ? readList(claims.scope, / +/) : readList(claims.scp, / +/)
  if (!scopes) throw new AppError('IDENTITY_INVALID', 'token claim "scope" or "scp" is not a list of strings')
  const clientId = typeof claims.client_id === 'string' && claims.client_id !== '' ? claims.client_id : undefined
  return Object.freeze({
    user,
    groups: Object.freeze(groups),
    scopes: Object.freeze(scopes),
    expiresAt,
    ...(clientId === undefined ? {} : { clientId }),
  })
}

/**
 * An absent claim is an empty list; a string is split on `separator`; an array keeps its string
 * entries (dropping others can only take permissions away). Any other type is `undefined`.
 */
function readList(value: unknown, separator: RegExp): string[] | undefined {
  if (value === undefined || value === null) return []
  if (typeof value === 'string') return value.split(separator).filter((s) => s !== '')
  if (Array.isArray(value)) return value.filter((s): s is string => typeof s === 'string' && s !== '')
  return undefined
}
