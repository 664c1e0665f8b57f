/**
 * What Keyway tells an MCP client about how to get a token for it: the OAuth 2.0 Protected
 * Resource Metadata document (RFC 9728), the URL it is served at, and the `WWW-Authenticate`
 * challenges of a 401 or 403 (RFC 6750 §3, RFC 9728 §5.1, MCP authorization). Pure functions of
 * their arguments; serving them is `http/app.ts`'s job, deciding who may call is not this module's.
 * @module
 */

/** RFC 9728 §2 document, as Keyway fills it. */
export interface ProtectedResourceMetadata {
  readonly resource: string
  readonly authorization_servers: readonly string[]
  readonly scopes_supported?: readonly string[]
  readonly bearer_methods_supported: readonly ['header']
  readonly resource_name: 'Keyway'
}

/** RFC 6750 §3.1 error codes a resource server may put in a challenge. */
export type BearerError = 'invalid_request' | 'invalid_token' | 'insufficient_scope'

export interface BearerChallengeOptions {
  readonly resourceMetadataUrl: string
  /** Omit when the request carried no credentials at all (RFC 6750 §3.1). */
  readonly error?: BearerError
  readonly description?: string
  /** The scopes a token needs (MCP 2025-11-25: the server SHOULD say so). */
  readonly scope?: string | readonly string[]
}

/**
 * The metadata document for `resource` (Keyway's `/mcp` URL, which is also the audience tokens
 * must carry, RFC 8707). Bearer tokens are accepted only in the `Authorization` header.
 * `scopes_supported` is left out when there are no scopes to name.
 * @see https://www.rfc-editor.org/rfc/rfc9728#section-2
 */
export function protectedResourceMetadata(opts: {
  readonly resource: string
  readonly issuer: string
  readonly scopes?: readonly string[]
}): ProtectedResourceMetadata {
  return {
    resource: opts.resource,
    authorization_servers: [opts.issuer],
    ...(opts.scopes && opts.scopes.length > 0 ? { scopes_supported: [...opts.scopes] } : {}),
    bearer_methods_supported: ['header'],
    resource_name: 'Keyway',
  }
}

/**
 * Where the metadata for `<publicUrl>/mcp` is served: the well-known segment goes between the
 * origin and the resource path (RFC 9728 §3.1), so `https://kw.example` gives
 * `https://kw.example/.well-known/oauth-protected-resource/mcp`.
 * @see https://www.rfc-editor.org/rfc/rfc9728#section-3.1
 */
export function resourceMetadataUrl(publicUrl: string): string {
  const u = new URL(publicUrl)
  const path = u.pathname.replace(/\/+$/, '')
  return `${u.origin}/.well-known/oauth-protected-resource${path}/mcp`
}

/**
 * The `WWW-Authenticate` value of a 401: `Bearer resource_metadata="…", error="…", scope="…"`.
 * MCP clients start discovery from `resource_metadata` (RFC 9728 §5.1).
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-3
 */
export function bearerChallenge(opts: BearerChallengeOptions): string {
  const scope = typeof opts.scope === 'string' ? opts.scope : opts.scope?.join(' ')
  const params: [string, string | undefined][] = [
    ['resource_metadata', opts.resourceMetadataUrl],
    ['error', opts.error],
    ['error_description', opts.description],
    ['scope', scope === '' ? undefined : scope],
  ]
  const parts = params.flatMap(([k, v]) => (v === undefined ? [] : [`${k}="${quotable(v)}"`]))
  return `Bearer ${parts.join(', ')}`
}

/**
 * The `WWW-Authenticate` value of a 403 for a valid token that lacks scopes; clients may step up
 * by asking for `scope` (RFC 6750 §3.1, MCP 2025-11-25 "scope challenge").
 */
export function insufficientScopeChallenge(opts: Omit<BearerChallengeOptions, 'error'> & { readonly scope: string | readonly string[] }): string {
  return bearerChallenge({ ...opts, error: 'insufficient_scope' })
}

/**
 * RFC 6750 §3 allows only %x20-21 / %x23-5B / %x5D-7E inside these values: no `"`, no `\`, no
 * control or non-ASCII characters. Anything else is dropped, so no value can break the header.
 */
function quotable(v: string): string {
  return v.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '')
}
