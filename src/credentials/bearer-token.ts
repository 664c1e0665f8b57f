/**
 * `bearer_token`: a static shared token from a secret reference, sent as `Authorization:
 * Bearer`. Rotation is changing the secret; there is nothing to refresh.
 * @module
 */
import type { Credential } from './credential.js'
import type { Secret } from '../secret.js'

export function bearerCredential(token: Secret): Credential {
  const value = token.reveal()
  return { kind: 'ready', authorization: `Bearer ${value}`, refreshable: false, secrets: [value] }
}
