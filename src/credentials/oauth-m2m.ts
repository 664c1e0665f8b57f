/**
 * `oauth_m2m`: the connection's own service identity, RFC 6749 §4.4 `client_credentials` with
 * `auth.scopes` and `auth.tokenParams` (e.g. `audience`, RFC 8707 `resource`). One token per
 * connection, cached in the store under (connection, shared) and replaced before it expires
 * through the shared refresher, so 20 callers at expiry cause one token request. It never needs a
 * person, so "no token yet" simply means "get one".
 * @module
 */
import type { Connection } from '../config/load.js'
import type { Credential, ResolveOptions } from './credential.js'
import type { OAuthClients } from './oauth-client.js'
import type { Refresher } from './refresh.js'
import { forcedRefreshOf, recordFromTokenSet, tokenCredential } from './token-record.js'

export interface M2mDeps {
  readonly clients: OAuthClients
  readonly refresher: Refresher
  readonly now: () => number
}

/** The credential of an `oauth_m2m` connection (the caller does not matter: one identity for all). */
export async function resolveM2m(connection: Connection, deps: M2mDeps, opts: ResolveOptions = {}): Promise<Credential> {
  const record = await deps.refresher.getFreshToken({
    ref: { connection: connection.name, user: null },
    method: 'oauth_m2m',
    ...forcedRefreshOf(opts),
    // The client is made (and the provider discovered) only when a token is needed, so a provider
    // that is down does not stop a still-valid cached token from serving.
    obtain: async (current) => {
      const set = await (await deps.clients.get(connection)).clientCredentials()
      return recordFromTokenSet(set, { method: 'oauth_m2m', now: deps.now(), ...(current ? { previous: current } : {}) })
    },
  })
  // Client credentials can always be asked for again, refresh token or not.
  return tokenCredential(record, connection, true)
}
