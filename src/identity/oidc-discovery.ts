/**
 * Fetches the authorization server's metadata for the access-token verifier: OpenID Connect
 * Discovery (`<issuer>/.well-known/openid-configuration`), falling back to RFC 8414
 * (`/.well-known/oauth-authorization-server[/<issuer path>]`). It keeps only what verification
 * needs (`jwks_uri`, `introspection_endpoint`) and refuses metadata for another issuer, those
 * endpoints off the issuer's origin (`egress/same-origin.ts`) or, unless insecure mode is on,
 * endpoints that are not https. It does not cache; `oidc.ts` does.
 * @module
 */
import { AppError } from '../errors.js'
import { confineToIssuerOrigin } from '../egress/same-origin.js'

/** The part of RFC 8414 §2 metadata the verifier uses. */
export interface IssuerMetadata {
  readonly issuer: string
  readonly jwksUri: URL | undefined
  readonly introspectionEndpoint: URL | undefined
}

const USED_ENDPOINTS = new Set(['jwks_uri', 'introspection_endpoint'] as const)

/** Per request; a slow issuer must not hold MCP requests for long. */
export const METADATA_TIMEOUT_MS = 5_000

/** The two well-known locations, in the order they are tried (OIDC Discovery 1.0 §4, RFC 8414 §3.1). */
export function metadataUrls(issuer: string): readonly URL[] {
  const u = new URL(issuer)
  const path = u.pathname.replace(/\/+$/, '')
  return [new URL(`${u.origin}${path}/.well-known/openid-configuration`), new URL(`${u.origin}/.well-known/oauth-authorization-server${path}`)]
}

/**
 * Fetches and checks the metadata. The `issuer` in the document must equal the configured one
 * exactly (RFC 8414 §3.3), which stops a look-alike document from redirecting key lookups.
 * @see https://www.rfc-editor.org/rfc/rfc8414
 */
export async function fetchIssuerMetadata(issuer: string, fetchImpl: typeof fetch, allowInsecure: boolean): Promise<IssuerMetadata> {
  let lastProblem = 'no metadata document answered'
  let lastCause: unknown
  for (const url of metadataUrls(issuer)) {
    let body: unknown
    try {
      const res = await fetchImpl(url, {
        headers: { accept: 'application/json' },
        redirect: 'manual',
        signal: AbortSignal.timeout(METADATA_TIMEOUT_MS),
      })
      if (res.status !== 200) {
        await res.body?.cancel()
        lastProblem = `issuer metadata at ${url.pathname} answered ${res.status}`
        continue
      }
      body = await res.json().catch(() => undefined)
    } catch (e) {
      lastProblem = `issuer metadata at ${url.pathname} could not be fetched`
      lastCause = e
      continue
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      lastProblem = `issuer metadata at ${url.pathname} is not a json object`
      continue
    }
    const doc = body as Record<string, unknown>
    if (doc.issuer !== issuer) throw new AppError('IDENTITY_INVALID', `issuer metadata names issuer "${String(doc.issuer)}", expected "${issuer}"`)
    const jwksUri = endpoint(doc, 'jwks_uri', allowInsecure)
    const introspectionEndpoint = endpoint(doc, 'introspection_endpoint', allowInsecure)
    // A foreign jwks_uri would let its owner sign tokens; a foreign introspection endpoint would receive callers' tokens.
    confineToIssuerOrigin(doc, issuer, { used: USED_ENDPOINTS, code: 'IDENTITY_INVALID', who: 'identity.oidc' })
    return Object.freeze({ issuer, jwksUri, introspectionEndpoint })
  }
  throw new AppError('IDENTITY_INVALID', lastProblem, lastCause === undefined ? {} : { cause: lastCause })
}

function endpoint(doc: Readonly<Record<string, unknown>>, field: string, allowInsecure: boolean): URL | undefined {
  const v = doc[field]
  if (v === undefined) return undefined
  const u = typeof v === 'string' ? URL.parse(v) : null
  if (!u || (u.protocol !== 'https:' && !(allowInsecure && u.protocol === 'http:')))
    throw new AppError('IDENTITY_INVALID', `issuer metadata ${field} must be an https url`)
  return u
}
