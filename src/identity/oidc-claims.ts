/**
 * Reads who a verified access token speaks for: a user (with groups) or, for a token that carries
 * no user (client credentials), the client it was issued to; plus scopes. Input is either a JWT
 * claims set (RFC 9068) or an introspection response (RFC 7662). Pure: it trusts its input to be
 * verified already and checks only shape and what the claims say about themselves
 * (`email_verified`). It must not decide anything about signatures, issuers, audiences or time,
 * nor which service principal a client is (that is config, read in `authenticate.ts`).
 * @module
 */
import { AppError } from '../errors.js'
import type { OidcSettings } from '../config/load.js'

interface TokenCommon {
  /** From `scope` (RFC 9068 §2.2.3, RFC 7662 §2.2, space separated) or `scp` (Okta: array; Entra: string). */
  readonly scopes: readonly string[]
  /** `exp`, epoch seconds. */
  readonly expiresAt: number
}

/** A token a person's sign-in produced. */
export interface VerifiedUserToken extends TokenCommon {
  readonly kind: 'user'
  /** Value of `settings.userClaim` (default `sub`). */
  readonly user: string
  /** Value of `settings.groupsClaim`; `[]` when the claim is absent. */
  readonly groups: readonly string[]
  /** The client the token was issued to (`client_id`, `azp`, `cid`, `appid`), when the token names one. */
  readonly clientId?: string
}

/**
 * A token that carries no user: issued to a client for itself (OAuth client credentials). It is
 * only usable through a configured service principal; its own groups claim is not read.
 */
export interface VerifiedServiceToken extends TokenCommon {
  readonly kind: 'service'
  readonly clientId: string
}

/** What an accepted access token says about its caller. Frozen; safe to share between calls. */
export type VerifiedToken = VerifiedUserToken | VerifiedServiceToken

/**
 * Claims that name the client a token was issued to, in order: RFC 9068 / RFC 7662 `client_id`,
 * OpenID Connect `azp` (Keycloak, Auth0, Entra v2), Okta `cid`, Entra v1 `appid`.
 */
const CLIENT_CLAIMS = ['client_id', 'azp', 'cid', 'appid'] as const

/** Keycloak names the user behind a client's service account `service-account-<client id>`. */
const KEYCLOAK_SERVICE_ACCOUNT_PREFIX = 'service-account-'

export type ClaimSettings = Pick<OidcSettings, 'userClaim' | 'groupsClaim'> & Partial<Pick<OidcSettings, 'groupsClaimSeparator'>>

/**
 * Maps verified claims to a `VerifiedToken`. Claim names are exact keys, never dotted paths:
 * Auth0-style namespaced claims (`https://example.com/groups`) contain dots.
 * Throws `AppError('IDENTITY_INVALID')` when the user claim is missing (and the token is not a
 * client's own), `email_verified` is false for `userClaim: email`, or a claim has the wrong shape.
 */
export function readTokenClaims(claims: Readonly<Record<string, unknown>>, settings: ClaimSettings, expiresAt: number): VerifiedToken {
  const scopes = claims.scope !== undefined ? readList(claims.scope, / +/) : readList(claims.scp, / +/)
  if (!scopes) throw new AppError('IDENTITY_INVALID', 'token claim "scope" or "scp" is not a list of strings')
  const clientId = clientOf(claims)
  const user = nonEmpty(claims[settings.userClaim])
  if (isClientOwnToken(claims, user, clientId)) {
    if (clientId !== undefined) return Object.freeze({ kind: 'service', clientId, scopes: Object.freeze(scopes), expiresAt })
    // Marked as a client's own yet naming no client: never read the user claim of such a token.
    if (user !== undefined) throw new AppError('IDENTITY_INVALID', 'token is issued to a client for itself but names no client')
  }
  if (user === undefined) throw new AppError('IDENTITY_INVALID', `token claim "${settings.userClaim}" (userClaim) is missing or not a string`)
  // Only an explicit "not verified" is refused: many IdPs leave the claim out of access tokens.
  if (settings.userClaim === 'email' && (claims.email_verified === false || claims.email_verified === 'false'))
    throw new AppError('IDENTITY_INVALID', 'token says email_verified is false, and userClaim is email')
  const groups = readGroups(claims[settings.groupsClaim], settings.groupsClaimSeparator)
  if (!groups) throw new AppError('IDENTITY_INVALID', `token claim "${settings.groupsClaim}" (groupsClaim) is not a list of strings`)
  return Object.freeze({
    kind: 'user',
    user,
    groups: Object.freeze(groups),
    scopes: Object.freeze(scopes),
    expiresAt,
    ...(clientId === undefined ? {} : { clientId }),
  })
}

/**
 * Whether the token was issued to a client for itself rather than for a person: a provider's
 * grant-type marker (Auth0 `gty: client-credentials`, Entra `idtyp: app`), a subject that is the
 * client (`sub` equal to a client claim, as oidc-provider, Okta and Entra v1 issue them; Entra
 * v2 app tokens have `sub` = `oid`), Keycloak's service-account user, or no subject and no user
 * claim at all (introspection of a client-credentials token). A token with a `sub` of its own but
 * without the user claim is a person's token missing a claim, not a client's.
 */
function isClientOwnToken(claims: Readonly<Record<string, unknown>>, user: string | undefined, clientId: string | undefined): boolean {
  if (claims.gty === 'client-credentials' || claims.idtyp === 'app') return true
  const sub = nonEmpty(claims.sub)
  if (sub === undefined) return user === undefined
  if (CLIENT_CLAIMS.some((c) => claims[c] === sub)) return true
  if (sub === claims.oid) return true
  const username = nonEmpty(claims.preferred_username)
  return clientId !== undefined && username?.toLowerCase() === `${KEYCLOAK_SERVICE_ACCOUNT_PREFIX}${clientId}`.toLowerCase()
}

function clientOf(claims: Readonly<Record<string, unknown>>): string | undefined {
  for (const c of CLIENT_CLAIMS) {
    const v = nonEmpty(claims[c])
    if (v !== undefined) return v
  }
  return undefined
}

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined
}

/**
 * The groups claim: an array keeps its string entries; a string is one group, or, with
 * `groupsClaimSeparator`, split on it (trimmed, empty parts dropped). Splitting on spaces by
 * default would turn the group `not data-engineering` into `data-engineering`.
 */
function readGroups(value: unknown, separator: string | undefined): string[] | undefined {
  if (typeof value === 'string') {
    const parts = separator === undefined ? [value] : value.split(separator)
    return parts.map((s) => (separator === undefined ? s : s.trim())).filter((s) => s !== '')
  }
  return readList(value, / +/)
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
