/**
 * Chooses how a connection's credential is obtained, by auth method (one file per method).
 * The orchestrator calls only `resolve`; it never sees which method answered.
 * @module
 */
import type { Connection } from '../config/load.js'
import { AppError } from '../errors.js'
import type { Caller } from '../identity/caller.js'
import { bearerCredential } from './bearer-token.js'
import type { Credential, CredentialProvider, ResolveOptions } from './credential.js'
import type { OAuthClients } from './oauth-client.js'
import { resolveM2m } from './oauth-m2m.js'
import { resolvePerUserU2m, type StartConsent } from './oauth-u2m-per-user.js'
import { resolveSharedU2m } from './oauth-u2m-shared.js'
import type { Refresher } from './refresh.js'

/** What the OAuth methods share: provider clients, the refresher (over the token store), a clock. */
export interface CredentialDeps {
  readonly clients: OAuthClients
  readonly refresher: Refresher
  readonly now: () => number
  /** Per-user consent flows (`oauth_u2m_per_user`): how a caller's link is made (`consent/records.ts`, passed in). */
  readonly consent?: { readonly startConsent: StartConsent }
}

export function createCredentialProvider(deps: CredentialDeps): CredentialProvider {
  return {
    async resolve(connection: Connection, caller: Caller, opts: ResolveOptions = {}): Promise<Credential> {
      const auth = connection.auth
      switch (auth.type) {
        case 'bearer_token':
          return bearerCredential(auth.token)
        case 'oauth_m2m':
          return resolveM2m(connection, deps, opts)
        case 'oauth_u2m_shared':
          return resolveSharedU2m(connection, deps, opts)
        case 'oauth_u2m_per_user':
          if (!deps.consent) throw new AppError('CREDENTIAL_UNAVAILABLE', `auth type "${auth.type}" needs a token store for consent flows`)
          return resolvePerUserU2m(connection, caller, { ...deps, ...deps.consent }, opts)
        default: {
          const never: never = auth
          throw new AppError('INTERNAL', `unknown auth type ${String(never)}`)
        }
      }
    },
  }
}
