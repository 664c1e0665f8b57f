/**
 * Turning a provider's token response into the record the store keeps, and a stored record into
 * the `Authorization` header sent upstream. Pure: no I/O, no clock of its own. The one wording of
 * the "no refresh token" warning lives here so the callback page, the audit log, `keyway
 * authorize` and `keyway credentials` all say the same thing.
 * @module
 */
import { decodeJwt } from 'jose'
import type { Connection } from '../config/load.js'
import { rememberSecret } from '../redact.js'
import type { TokenMethod, TokenRecord } from '../store/index.js'
import type { Credential } from './credential.js'
import type { TokenSet } from './oauth-client.js'

/** Stored with the record and shown everywhere it is listed (design.md §7 step 4). */
export const NO_REFRESH_TOKEN_WARNING =
  "no refresh token was issued: access will stop at first expiry; add offline_access or the provider's equivalent (auth.scopes or auth.authorizationParams) and sign in again"

export interface RecordOptions {
  readonly method: TokenMethod
  readonly now: number
  /** The record being refreshed: its refresh token, scope and subject carry over when the response omits them. */
  readonly previous?: TokenRecord
  /** Who signed in at the provider, when known: its email, else its subject (`consent/provider-account.ts`). */
  readonly subject?: string
}

/**
 * The record for a token response. A refresh response without `refresh_token` keeps the old one
 * (RFC 6749 §6: the server MAY issue a new one); without `scope` keeps the old scope (§5.1: scope
 * is omitted when unchanged). m2m tokens never have a refresh token and carry no warning.
 */
export function recordFromTokenSet(set: TokenSet, opts: RecordOptions): TokenRecord {
  const prev = opts.previous
  const refreshToken = set.refreshToken ?? prev?.refreshToken
  const scope = set.scope ?? prev?.scope
  // The account named at sign-in stays: a refreshed ID token names the same account (OIDC Core §12.2).
  const subject = opts.subject ?? prev?.subject ?? (typeof set.idTokenClaims?.sub === 'string' ? set.idTokenClaims.sub : undefined)
  const warnings = opts.method !== 'oauth_m2m' && refreshToken === undefined ? [NO_REFRESH_TOKEN_WARNING] : undefined
  return {
    method: opts.method,
    accessToken: set.accessToken,
    ...(refreshToken === undefined ? {} : { refreshToken }),
    tokenType: set.tokenType,
    ...(scope === undefined ? {} : { scope }),
    ...(set.expiresAt === undefined ? {} : { expiresAt: set.expiresAt }),
    obtainedAt: prev?.obtainedAt ?? opts.now,
    ...(prev === undefined ? {} : { lastRefreshAt: opts.now }),
    ...(subject === undefined ? {} : { subject }),
    ...(warnings ? { warnings } : {}),
  }
}

/**
 * When an access token stops working (epoch ms): `expires_in` counted from `sentAt`, the moment
 * just before the token request was sent (RFC 6749 §5.1 counts from the response; starting at
 * the send never overestimates by the request's own duration), or the JWT `exp` when the token
 * is a JWT that carries one, whichever is earlier. The JWT is decoded, not verified: its `exp`
 * can only shorten the lifetime. Junk (not a JWT, `exp` not a number, or not after `sentAt`) is
 * ignored. `undefined` when neither says.
 */
export function tokenExpiresAt(accessToken: string, sentAt: number, expiresInS: number | undefined): number | undefined {
  const fromExpiresIn = expiresInS === undefined || !Number.isFinite(expiresInS) ? undefined : sentAt + Math.round(expiresInS * 1000)
  const fromJwt = jwtExpMs(accessToken, sentAt)
  if (fromJwt === undefined) return fromExpiresIn
  return fromExpiresIn === undefined ? fromJwt : Math.min(fromExpiresIn, fromJwt)
}

function jwtExpMs(token: string, sentAt: number): number | undefined {
  if (token.split('.').length !== 3) return undefined
  let exp: unknown
  try {
    exp = decodeJwt(token).exp
  } catch {
    return undefined
  }
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return undefined
  const ms = exp * 1000
  return ms > sentAt ? ms : undefined
}

/** The access token of an `Authorization` value made by {@link tokenCredential}, for "is this the one refused?". */
export function accessTokenOf(authorization: string | undefined): string | undefined {
  return authorization?.startsWith('Bearer ') ? authorization.slice('Bearer '.length) : undefined
}

/** The refresher's `forceRefresh` and `rejected` fields for a call's resolve options. */
export function forcedRefreshOf(opts: { readonly forceRefresh?: boolean; readonly rejectedAuthorization?: string }): {
  forceRefresh?: true
  rejected?: string
} {
  if (!opts.forceRefresh) return {}
  const rejected = accessTokenOf(opts.rejectedAuthorization)
  return { forceRefresh: true, ...(rejected === undefined ? {} : { rejected }) }
}

/**
 * A stored record as the credential of a call: RFC 6750 §2.1 `Bearer` header, and every secret
 * behind it (access and refresh token, the connection's client secret) for redaction.
 */
export function tokenCredential(record: TokenRecord, connection: Connection, refreshable = record.refreshToken !== undefined): Credential {
  const secrets = [record.accessToken]
  if (record.refreshToken !== undefined) secrets.push(record.refreshToken)
  if (connection.auth.type !== 'bearer_token') secrets.push(connection.auth.clientSecret.reveal())
  rememberSecret(record.accessToken)
  return { kind: 'ready', authorization: `Bearer ${record.accessToken}`, refreshable, secrets }
}
