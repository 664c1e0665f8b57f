/**
 * `oauth_u2m_per_user` (design.md §1, §7, §8): every caller reaches the external API with their
 * own token, stored under (connection, caller.user) and renewed with its refresh token through
 * the shared refresher (one refresh per key at a time). No usable token, or a grant the provider
 * no longer honours (`invalid_grant`, which deletes the record), means the caller must consent:
 * this module then asks `deps.startConsent` (`consent/records.ts`, passed in so that credentials/
 * never imports consent/) for the caller's link, a new flow or the one not opened yet, and
 * answers `consent-required` with it. How the link reaches the person is the MCP layer's business
 * (`mcp/consent.ts`); this module never sees a client.
 * @module
 */
import type { Connection } from '../config/load.js'
import { AppError, hasReason, isAppError, type ReasonOf } from '../errors.js'
import type { Caller } from '../identity/caller.js'
import type { TokenRecord, TokenRef } from '../store/index.js'
import type { Credential, ResolveOptions } from './credential.js'
import type { OAuthClient } from './oauth-client.js'
import type { Refresher } from './refresh.js'
import { refreshTokenGrant } from './refresh-token-grant.js'
import { forcedRefreshOf, tokenCredential } from './token-record.js'

const METHOD = 'oauth_u2m_per_user'

export interface PerUserU2mDeps {
  /** Only `refresh` is used here; the code exchange happens at the callback (`consent/complete.ts`). */
  readonly clients: { get(connection: Connection): Promise<Pick<OAuthClient, 'refresh'>> }
  readonly refresher: Refresher
  readonly now: () => number
  /** The caller's consent link for a connection: `startPerUserConsent` of `consent/records.ts`. */
  readonly startConsent: StartConsent
}

/**
 * Records a consent flow for (connection, user), or hands out again the one they have not opened
 * yet, and returns its link `<publicUrl>/connect/<flowId>` (design.md §7 step 1).
 */
export type StartConsent = (connection: string, user: string, reason: ConsentReason) => Promise<{ readonly url: string; readonly flowId: string }>

/** Why a caller is asked to consent: never connected, grant gone, or an expired token that cannot be renewed. */
export type ConsentReason = ReasonOf<'CONSENT_REQUIRED'>

/** The internal signal "this caller must consent"; never leaves this module. */
function consentNeeded(connection: Connection, reason: ConsentReason, cause?: unknown): AppError {
  return new AppError('CONSENT_REQUIRED', `connection "${connection.name}" has no usable token for this user`, {
    ...(cause === undefined ? {} : { cause }),
    detail: { connection: connection.name, reason },
  })
}

/**
 * The credential of an `oauth_u2m_per_user` connection for one caller: their own stored token
 * (refreshed when due), or `consent-required` with `<publicUrl>/connect/<flowId>` (design.md §7
 * step 1). Transient provider and store failures are thrown as they are (`CREDENTIAL_UNAVAILABLE`,
 * `STORE_UNAVAILABLE`): a store that fails is never taken for "no token" (design.md §8).
 */
export async function resolvePerUserU2m(connection: Connection, caller: Caller, deps: PerUserU2mDeps, opts: ResolveOptions = {}): Promise<Credential> {
  // `decide` already refuses this; the check stays here because tokens are keyed by name alone,
  // and a service principal must never read or start a person's token of the same name.
  if (caller.kind !== 'user') throw new AppError('PERMISSION_DENIED', `service principal ${caller.user} cannot use per-user connection "${connection.name}"`)
  const ref: TokenRef = { connection: connection.name, user: caller.user }
  let record: TokenRecord
  try {
    record = await deps.refresher.getFreshToken({
      ref,
      method: METHOD,
      ...forcedRefreshOf(opts),
      missing: () => consentNeeded(connection, 'no-token'),
      obtain: refreshTokenGrant({ connection, method: METHOD, clients: deps.clients, now: deps.now, missing: () => consentNeeded(connection, 'no-token') }),
      // The refresher has deleted the record when the reason is invalid_grant (design.md §8).
      fatal: (e) => consentNeeded(connection, fatalReason(e), e),
    })
  } catch (e) {
    if (isAppError(e, 'CONSENT_REQUIRED')) return { kind: 'consent-required', ...(await deps.startConsent(connection.name, caller.user, reasonOf(e))) }
    throw e
  }
  return tokenCredential(record, connection)
}

/** The consent reason for a grant the refresher gave up on (`REAUTHORIZATION_REQUIRED`). */
function fatalReason(e: AppError): ConsentReason {
  if (hasReason(e, 'REAUTHORIZATION_REQUIRED', 'invalid_grant')) return 'invalid_grant'
  if (hasReason(e, 'REAUTHORIZATION_REQUIRED', 'no-refresh-token')) return 'no-refresh-token'
  return 'reauthorization-required'
}

/** The reason `consentNeeded` put on the error (`no-token` when it carries none). */
function reasonOf(e: AppError<'CONSENT_REQUIRED'>): ConsentReason {
  return e.detail?.reason ?? 'no-token'
}
