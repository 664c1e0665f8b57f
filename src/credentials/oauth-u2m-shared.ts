/**
 * `oauth_u2m_shared`: one person's token (the connection's owner signs in once with `keyway
 * authorize`) used by every grantee. The token lives in the store under (connection, shared) and
 * is renewed with its refresh token through the shared refresher. This module only reads and
 * refreshes; the sign-in itself is `consent/` and the browser routes. Its errors tell the
 * grantee exactly who must do what: `NOT_AUTHORIZED` before the first sign-in,
 * `REAUTHORIZATION_REQUIRED` once the provider has dropped the grant.
 * @module
 */
import type { Connection } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import { AppError, hasReason } from '../errors.js'
import type { Credential, ResolveOptions } from './credential.js'
import type { OAuthClients } from './oauth-client.js'
import type { Refresher } from './refresh.js'
import { refreshTokenGrant } from './refresh-token-grant.js'
import { forcedRefreshOf, tokenCredential } from './token-record.js'

export interface SharedU2mDeps {
  readonly clients: OAuthClients
  readonly refresher: Refresher
  readonly now: () => number
}

/** `user alice@example.com` / `a member of group admins`. */
export function describeOwner(owner: Principal): string {
  if ('servicePrincipal' in owner) return `service principal ${owner.servicePrincipal}`
  return 'user' in owner ? `user ${owner.user}` : `a member of group ${owner.group}`
}

/** The command that signs a shared connection in. */
export function authorizeCommand(connection: string): string {
  return `keyway authorize ${connection}`
}

/** The grantee-facing error for a shared connection nobody has signed in yet (design.md §6). */
export function notAuthorized(connection: Connection): AppError {
  return new AppError(
    'NOT_AUTHORIZED',
    `connection "${connection.name}" is not signed in yet; its owner (${describeOwner(connection.owner)}) must run: ${authorizeCommand(connection.name)}`,
    { detail: { connection: connection.name } },
  )
}

/** The grantee-facing error for a shared grant the provider no longer honours. */
export function reauthorizationRequired(connection: Connection, why: string, cause?: unknown): AppError {
  return new AppError(
    'REAUTHORIZATION_REQUIRED',
    `connection "${connection.name}" must be signed in again: ${why}; its owner (${describeOwner(connection.owner)}) must run: ${authorizeCommand(connection.name)}`,
    { ...(cause === undefined ? {} : { cause }), detail: { connection: connection.name } },
  )
}

/** The credential of an `oauth_u2m_shared` connection: the owner's token, whoever calls. */
export async function resolveSharedU2m(connection: Connection, deps: SharedU2mDeps, opts: ResolveOptions = {}): Promise<Credential> {
  const record = await deps.refresher.getFreshToken({
    ref: { connection: connection.name, user: null },
    method: 'oauth_u2m_shared',
    ...forcedRefreshOf(opts),
    missing: () => notAuthorized(connection),
    obtain: refreshTokenGrant({ connection, method: 'oauth_u2m_shared', clients: deps.clients, now: deps.now, missing: () => notAuthorized(connection) }),
    fatal: (e) =>
      reauthorizationRequired(
        connection,
        hasReason(e, 'REAUTHORIZATION_REQUIRED', 'no-refresh-token')
          ? "its access token expired and the provider issued no refresh token (add offline_access or the provider's equivalent first)"
          : 'the provider refused the stored grant (revoked or expired)',
        e,
      ),
  })
  return tokenCredential(record, connection)
}
