/**
 * Turns the `Authorization` header of an HTTP request into a `Caller` (design.md §5): an API
 * key matched by hash, else (in OIDC mode) an access token verified by the injected verifier.
 * Returns a reason instead of throwing, so the HTTP layer can answer 401 with the right
 * challenge. The token itself never leaves this function.
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import { matchApiKey } from './api-keys.js'
import { createCaller, type Caller } from './caller.js'
import type { VerifiedToken } from './oidc-claims.js'

/** Verifies an access token; throws AppError('IDENTITY_INVALID') when it is not acceptable. */
export type TokenVerifier = (token: string) => Promise<VerifiedToken>

export type Authentication =
  | { readonly ok: true; readonly caller: Caller }
  | { readonly ok: false; readonly reason: 'missing' | 'malformed' | 'invalid'; readonly detail: string }

const BEARER = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i

export async function authenticate(
  header: string | undefined,
  snapshot: ConfigSnapshot,
  verifier: TokenVerifier | undefined,
): Promise<Authentication> {
  if (!header) return { ok: false, reason: 'missing', detail: 'no Authorization header' }
  const m = BEARER.exec(header)
  const token = m?.[1]
  if (!token) return { ok: false, reason: 'malformed', detail: 'Authorization must be "Bearer <token>"' }
  const key = snapshot.identity.apiKeys.size > 0 ? matchApiKey(token, snapshot.identity.apiKeys) : undefined
  if (key) return { ok: true, caller: createCaller(snapshot, key.user, 'api_key', key.groups) }
  if (verifier && snapshot.identity.oidc) {
    try {
      const v = await verifier(token)
      return { ok: true, caller: createCaller(snapshot, v.user, 'oidc', v.groups, v.scopes) }
    } catch (e) {
      return { ok: false, reason: 'invalid', detail: e instanceof Error ? e.message : 'token refused' }
    }
  }
  return { ok: false, reason: 'invalid', detail: 'unknown API key' }
}
