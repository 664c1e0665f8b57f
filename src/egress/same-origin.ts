/**
 * The issuer-origin rule for provider metadata (RFC 8414, OpenID Connect Discovery): an endpoint
 * Keyway learns from a metadata document must be on the issuer's origin (scheme, host and port),
 * unless the config names that endpoint explicitly. A document that moves `token_endpoint` to
 * another host or port would otherwise receive the client secret, and a foreign `jwks_uri` would
 * let its owner sign tokens (README "Security model"). One helper for every place that reads
 * metadata: connection OAuth clients, the access-token verifier and the browser sign-in. Pure:
 * it inspects URLs and throws before anything is sent; it never fetches.
 * @module
 * @see https://www.rfc-editor.org/rfc/rfc8414#section-2
 */
import { AppError } from '../errors.js'

/** The metadata endpoints the rule covers. */
export const METADATA_ENDPOINT_FIELDS = [
  'authorization_endpoint',
  'token_endpoint',
  'revocation_endpoint',
  'userinfo_endpoint',
  'jwks_uri',
  'introspection_endpoint',
] as const
export type MetadataEndpointField = (typeof METADATA_ENDPOINT_FIELDS)[number]

/** Whether `endpoint` has exactly the origin of `issuer`; an unparsable URL is on no origin. */
export function isOnIssuerOrigin(endpoint: string | URL, issuer: string | URL): boolean {
  const e = typeof endpoint === 'string' ? URL.parse(endpoint) : endpoint
  const i = typeof issuer === 'string' ? URL.parse(issuer) : issuer
  return e !== null && i !== null && e.origin !== 'null' && e.origin === i.origin
}

export interface ConfineOptions {
  /** Fields the caller will send requests to (or send a browser to); off-origin, they throw. */
  readonly used: ReadonlySet<MetadataEndpointField>
  /** Fields the config sets explicitly; the discovered value is dropped, since the config's wins. */
  readonly explicit?: ReadonlySet<MetadataEndpointField>
  /** Error code of the refusal: `EGRESS_BLOCKED` for connections, `IDENTITY_INVALID` for Keyway's own IdP. */
  readonly code: 'EGRESS_BLOCKED' | 'IDENTITY_INVALID'
  /** Who is asking, first in the message, e.g. `connection "github"`. */
  readonly who: string
  /** How to override a field in the config, e.g. `token_endpoint` → `auth.tokenEndpoint`; none for the IdP. */
  readonly settingFor?: (field: MetadataEndpointField) => string | undefined
  /** `detail` fields of the refusal. */
  readonly detail?: Readonly<Record<string, string | number | boolean>>
}

/**
 * The metadata with every endpoint held to the issuer's origin: an off-origin field in `used`
 * (and not `explicit`) throws `AppError(code)` naming the field, its origin and the issuer's;
 * any other off-origin field is removed, so nothing can use it later. Other fields are kept.
 */
export function confineToIssuerOrigin<T extends Readonly<Record<string, unknown>>>(metadata: T, issuer: string, opts: ConfineOptions): T {
  let out: Record<string, unknown> | undefined
  for (const field of METADATA_ENDPOINT_FIELDS) {
    const value = metadata[field]
    if (value === undefined) continue
    if (typeof value === 'string' && isOnIssuerOrigin(value, issuer)) continue
    if (opts.used.has(field) && opts.explicit?.has(field) !== true) throw offOrigin(field, value, issuer, opts)
    out ??= { ...metadata }
    delete out[field]
  }
  return (out ?? metadata) as T
}

function offOrigin(field: MetadataEndpointField, value: unknown, issuer: string, opts: ConfineOptions): AppError {
  const where = typeof value === 'string' ? URL.parse(value)?.origin : undefined
  const setting = opts.settingFor?.(field)
  const fix = setting
    ? `; nothing was sent there. If the provider really serves it there, set ${setting} explicitly`
    : "; nothing was sent there, and Keyway uses metadata endpoints on the issuer's origin only"
  return new AppError(
    opts.code,
    `${opts.who}: the provider metadata puts ${field} on ${where && where !== 'null' ? where : 'an invalid url'}, not on the issuer's origin ${URL.parse(issuer)?.origin ?? issuer}${fix}`,
    { detail: { ...opts.detail, reason: 'endpoint-off-issuer-origin', field, transient: false } },
  )
}
