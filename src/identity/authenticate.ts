/**
 * Turns the `Authorization` header of an HTTP request into a `Caller` (design.md §5): an API
 * key matched by hash, else (in OIDC mode) an access token verified by the injected verifier. A
 * token that carries no user (client credentials) becomes the service principal
 * `identity.oidc.servicePrincipals` maps its client to, and is refused when none is mapped.
 * Returns a reason instead of throwing, so the HTTP layer can answer 401 with the right
 * challenge. The token itself never leaves this function.
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import { matchApiKey } from './api-keys.js'
import { createCaller, createServicePrincipalCaller, type Caller } from './caller.js'
import type { VerifiedToken } from './oidc-claims.js'

/** Verifies an access token; throws AppError('IDENTITY_INVALID') when it is not acceptable. */
export type TokenVerifier = (token: string, opts?: { readonly clientAddress?: string | undefined }) => Promise<VerifiedToken>

export type Authentication =
  | { readonly ok: true; readonly caller: Caller }
  | {
      readonly ok: false
      /** `service-token-without-principal`: a client's own token whose client no config entry maps. */
      readonly reason: 'missing' | 'malformed' | 'invalid' | 'service-token-without-principal'
      readonly detail: string
    }

export interface AuthenticateOptions {
  /** The request's peer address, for the per-address introspection budget. */
  readonly clientAddress?: string | undefined
}

const BEARER = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i

export async function authenticate(
  header: string | undefined,
  snapshot: ConfigSnapshot,
  verifier: TokenVerifier | undefined,
  opts: AuthenticateOptions = {},
): Promise<Authentication> {
  if (!header) return { ok: false, reason: 'missing', detail: 'no Authorization header' }
  const m = BEARER.exec(header)
  const token = m?.[1]
  if (!token) return { ok: false, reason: 'malformed', detail: 'Authorization must be "Bearer <token>"' }
  const key = snapshot.identity.apiKeys.size > 0 ? matchApiKey(token, snapshot.identity.apiKeys) : undefined
  if (key) return { ok: true, caller: createCaller(snapshot, key.user, 'api_key', key.groups) }
  const oidc = snapshot.identity.oidc
  if (verifier && oidc) {
    let v: VerifiedToken
    try {
      v = await verifier(token, { clientAddress: opts.clientAddress })
    } catch (e) {
      return { ok: false, reason: 'invalid', detail: e instanceof Error ? e.message : 'token refused' }
    }
    if (v.kind === 'user') return { ok: true, caller: createCaller(snapshot, v.user, 'oidc', v.groups, v.scopes) }
    // Looked up on every request, not cached with the token: a config edit applies at once.
    const sp = oidc.servicePrincipals.get(v.clientId)
    if (!sp) {
      return {
        ok: false,
        reason: 'service-token-without-principal',
        detail: `token carries no user (client credentials) and client "${v.clientId}" is not in identity.oidc.servicePrincipals`,
      }
    }
    return { ok: true, caller: createServicePrincipalCaller(snapshot, sp.name, 'oidc', v.scopes) }
  }
  return { ok: false, reason: 'invalid', detail: 'unknown API key' }
}
