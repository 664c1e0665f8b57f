/**
 * The six prerequisites a provider must meet for per-user OAuth connections, judged from its
 * authorization server metadata (RFC 8414 / OpenID Connect Discovery), plus advisory checks
 * (`offline_access`, PKCE S256, issuer match). Pure: a metadata object (or none) and what the
 * config says in, one result per check out, each `pass`, `fail` or `unknown` with a one-line fix.
 * Fetching the metadata is the command's job (`tools/check-provider.ts`); nothing here does I/O.
 * @see https://www.rfc-editor.org/rfc/rfc8414#section-2
 * @module
 */
import { isLoopbackHostname } from '../config/hosts.js'
import type { CredentialExchange } from '../config/schema.js'
import { isOnIssuerOrigin } from '../egress/same-origin.js'

export type CheckStatus = 'pass' | 'fail' | 'unknown'
/** Advisory checks never fail the command; they warn. */
export type AdvisoryStatus = 'pass' | 'warn' | 'unknown'

export type PrerequisiteId = 'authorization_code' | 'refresh_token' | 'redirect_uri' | 'client_auth' | 'token_endpoint' | 'https'
export type AdvisoryId = 'offline_access' | 'pkce_s256' | 'issuer'

export interface PrerequisiteResult {
  readonly id: PrerequisiteId
  readonly title: string
  readonly status: CheckStatus
  /** What was found, one line. */
  readonly detail: string
  /** What to do about it, one line; present unless the check passes cleanly. */
  readonly fix?: string
}

export interface AdvisoryResult {
  readonly id: AdvisoryId
  readonly title: string
  readonly status: AdvisoryStatus
  readonly detail: string
  readonly fix?: string
}

export interface ProviderCheckInput {
  /** The parsed metadata document, or undefined when none could be fetched. */
  readonly metadata: Readonly<Record<string, unknown>> | undefined
  /** The issuer the metadata was requested for (RFC 8414 §3.3: `issuer` must equal it). */
  readonly issuer?: string | undefined
  /** The connection's explicit endpoints; they win over the metadata's. */
  readonly authorizationEndpoint?: string | undefined
  readonly tokenEndpoint?: string | undefined
  readonly revocationEndpoint?: string | undefined
  /** The connection's `credentialExchange`; undefined means Keyway chooses from the metadata. */
  readonly credentialExchange?: CredentialExchange | undefined
  /** `<publicUrl>/login/oauth/http.html`, or undefined when no config was found. */
  readonly redirectUri?: string | undefined
}

export interface ProviderReport {
  readonly prerequisites: readonly PrerequisiteResult[]
  readonly advisories: readonly AdvisoryResult[]
  /** True when no prerequisite fails (unknown is reported but does not fail). */
  readonly ok: boolean
}

/** RFC 8414 §2: `grant_types_supported` omitted means `["authorization_code", "implicit"]`. */
const DEFAULT_GRANT_TYPES = ['authorization_code', 'implicit'] as const
/** RFC 8414 §2: `token_endpoint_auth_methods_supported` omitted means `client_secret_basic`. */
const DEFAULT_AUTH_METHODS = ['client_secret_basic'] as const

/** Judges the six prerequisites and the advisories. */
export function checkProvider(input: ProviderCheckInput): ProviderReport {
  const m = input.metadata
  const authorizationEndpoint = input.authorizationEndpoint ?? stringField(m, 'authorization_endpoint')
  const tokenEndpoint = input.tokenEndpoint ?? stringField(m, 'token_endpoint')
  // Keyway uses a metadata endpoint only on the issuer's origin (README "Security model").
  const offOrigin = (field: string, explicit: string | undefined): string | undefined => {
    const v = explicit === undefined ? stringField(m, field) : undefined
    return v !== undefined && input.issuer !== undefined && !isOnIssuerOrigin(v, input.issuer) ? v : undefined
  }
  const prerequisites: PrerequisiteResult[] = [
    withOffOrigin(
      checkAuthorizationCode(m, authorizationEndpoint),
      [['authorization_endpoint', 'authorizationEndpoint', offOrigin('authorization_endpoint', input.authorizationEndpoint)]],
      input.issuer,
    ),
    checkRefreshToken(m),
    checkRedirectUri(input.redirectUri),
    checkClientAuth(m, input.credentialExchange),
    withOffOrigin(
      checkTokenEndpoint(tokenEndpoint, input.tokenEndpoint !== undefined),
      [
        ['token_endpoint', 'tokenEndpoint', offOrigin('token_endpoint', input.tokenEndpoint)],
        ['revocation_endpoint', 'revocationEndpoint', offOrigin('revocation_endpoint', input.revocationEndpoint)],
      ],
      input.issuer,
    ),
    checkHttps(authorizationEndpoint, tokenEndpoint),
  ]
  const advisories: AdvisoryResult[] = [checkOfflineAccess(m), checkPkce(m), checkIssuer(m, input.issuer)]
  return { prerequisites, advisories, ok: prerequisites.every((p) => p.status !== 'fail') }
}

const NO_METADATA = 'no provider metadata was available'

/**
 * A passing check turned into a failure when the metadata puts an endpoint off the issuer's
 * origin: Keyway refuses such endpoints (nothing is sent there) unless the config sets them.
 */
function withOffOrigin(
  result: PrerequisiteResult,
  fields: readonly (readonly [string, string, string | undefined])[],
  issuer: string | undefined,
): PrerequisiteResult {
  const off = fields.filter((f): f is readonly [string, string, string] => f[2] !== undefined)
  if (result.status === 'fail' || off.length === 0 || issuer === undefined) return result
  const origin = new URL(issuer).origin
  return {
    id: result.id,
    title: result.title,
    status: 'fail',
    detail: `${off.map(([field, , url]) => `${field} ${url}`).join(' and ')} ${off.length > 1 ? 'are' : 'is'} not on the issuer's origin ${origin}; Keyway uses metadata endpoints on the issuer's origin only`,
    fix: `set ${off.map(([, key, url]) => `auth.${key}: ${url}`).join(' and ')} explicitly on the connection`,
  }
}

function checkAuthorizationCode(m: Metadata, authorizationEndpoint: string | undefined): PrerequisiteResult {
  const title = 'authorization code grant'
  const fail = (detail: string, fix: string): PrerequisiteResult => ({ id: 'authorization_code', title, status: 'fail', detail, fix })
  if (!authorizationEndpoint)
    return m
      ? fail('the metadata has no authorization_endpoint', 'set auth.authorizationEndpoint on the connection, or use a provider that supports browser sign-in')
      : { id: 'authorization_code', title, status: 'unknown', detail: NO_METADATA, fix: 'set auth.issuer so the metadata can be checked' }
  if (!m)
    return {
      id: 'authorization_code',
      title,
      status: 'unknown',
      detail: `${NO_METADATA}; authorization endpoint ${authorizationEndpoint}`,
      fix: 'make sure the client is allowed the authorization_code grant at the provider',
    }
  const responseTypes = stringArray(m, 'response_types_supported')
  if (responseTypes && !responseTypes.some((t) => t.split(' ').includes('code')))
    return fail(
      `response_types_supported is [${responseTypes.join(', ')}], without code`,
      'enable the authorization code flow (response_type=code) at the provider',
    )
  const grants = stringArray(m, 'grant_types_supported')
  if (!grants)
    return {
      id: 'authorization_code',
      title,
      status: 'pass',
      detail: `grant_types_supported is not published; the RFC 8414 default is [${DEFAULT_GRANT_TYPES.join(', ')}]`,
    }
  if (grants.includes('authorization_code'))
    return { id: 'authorization_code', title, status: 'pass', detail: 'grant_types_supported includes authorization_code' }
  return fail(
    `grant_types_supported is [${grants.join(', ')}], without authorization_code`,
    'enable the authorization_code grant for the client at the provider (RFC 6749 §4.1)',
  )
}

function checkRefreshToken(m: Metadata): PrerequisiteResult {
  const title = 'refresh tokens'
  const fix = 'allow the refresh_token grant for the client at the provider; without it access stops at the first expiry'
  if (!m) return { id: 'refresh_token', title, status: 'unknown', detail: NO_METADATA, fix }
  const grants = stringArray(m, 'grant_types_supported')
  if (!grants)
    return {
      id: 'refresh_token',
      title,
      status: 'unknown',
      detail: 'grant_types_supported is not published',
      fix: 'check at the provider that the client may use the refresh_token grant',
    }
  if (grants.includes('refresh_token')) return { id: 'refresh_token', title, status: 'pass', detail: 'grant_types_supported includes refresh_token' }
  return { id: 'refresh_token', title, status: 'fail', detail: `grant_types_supported is [${grants.join(', ')}], without refresh_token`, fix }
}

function checkRedirectUri(redirectUri: string | undefined): PrerequisiteResult {
  const title = 'custom redirect URI'
  return redirectUri
    ? {
        id: 'redirect_uri',
        title,
        status: 'unknown',
        detail: 'metadata cannot tell whether a client may register its own redirect URI',
        fix: `register exactly ${redirectUri} for the client at the provider`,
      }
    : {
        id: 'redirect_uri',
        title,
        status: 'unknown',
        detail: 'metadata cannot tell, and no config was found to say which redirect URI to register',
        fix: 'register <server.publicUrl>/login/oauth/http.html exactly; `keyway redirect-uri --config F` prints it',
      }
}

/**
 * `credentialExchange` ↔ `token_endpoint_auth_methods_supported`: `header_only` needs
 * `client_secret_basic`, `body_only` needs `client_secret_post`, `header_and_body` needs both and
 * is refused by strict servers anyway (RFC 6749 §2.3.1: one method per request).
 */
function checkClientAuth(m: Metadata, exchange: CredentialExchange | undefined): PrerequisiteResult {
  const title = 'confidential client authentication'
  const id = 'client_auth'
  if (!m)
    return {
      id,
      title,
      status: 'unknown',
      detail: NO_METADATA,
      fix: 'set auth.credentialExchange to the method the provider documents (header_only or body_only)',
    }
  const published = stringArray(m, 'token_endpoint_auth_methods_supported')
  const methods: readonly string[] = published ?? DEFAULT_AUTH_METHODS
  const basic = methods.includes('client_secret_basic')
  const post = methods.includes('client_secret_post')
  const list = published
    ? `token_endpoint_auth_methods_supported is [${published.join(', ')}]`
    : 'token_endpoint_auth_methods_supported is not published (RFC 8414 default: client_secret_basic)'
  const alternative = basic
    ? 'set auth.credentialExchange: header_only'
    : post
      ? 'set auth.credentialExchange: body_only'
      : 'the provider must allow client_secret_basic or client_secret_post for the client'
  const strict = 'strict servers refuse credentials in both the header and the body (RFC 6749 §2.3.1)'
  switch (exchange) {
    case undefined:
      if (!published)
        return {
          id,
          title,
          status: 'unknown',
          detail: `${list}; with nothing published Keyway sends header_and_body, which ${strict}`,
          fix: 'set auth.credentialExchange: header_only (client_secret_basic)',
        }
      if (basic) return { id, title, status: 'pass', detail: `${list}; Keyway will use header_only (client_secret_basic)` }
      if (post) return { id, title, status: 'pass', detail: `${list}; Keyway will use body_only (client_secret_post)` }
      return { id, title, status: 'fail', detail: `${list}; Keyway needs client_secret_basic or client_secret_post`, fix: alternative }
    case 'header_only':
      if (basic) return { id, title, status: 'pass', detail: `${list}; credentialExchange header_only uses client_secret_basic` }
      return {
        id,
        title,
        status: published ? 'fail' : 'unknown',
        detail: `${list}; credentialExchange header_only needs client_secret_basic`,
        fix: alternative,
      }
    case 'body_only':
      if (post) return { id, title, status: 'pass', detail: `${list}; credentialExchange body_only uses client_secret_post` }
      if (!published)
        return {
          id,
          title,
          status: 'unknown',
          detail: `${list}; credentialExchange body_only needs client_secret_post`,
          fix: 'set auth.credentialExchange: header_only unless the provider documents client_secret_post',
        }
      return { id, title, status: 'fail', detail: `${list}; credentialExchange body_only needs client_secret_post`, fix: alternative }
    case 'header_and_body':
      if (basic && post)
        return {
          id,
          title,
          status: 'pass',
          detail: `${list}; credentialExchange header_and_body sends both, which ${strict}`,
          fix: 'prefer auth.credentialExchange: header_only',
        }
      if (!published)
        return {
          id,
          title,
          status: 'unknown',
          detail: `${list}; credentialExchange header_and_body needs client_secret_post too, and ${strict}`,
          fix: 'set auth.credentialExchange: header_only',
        }
      return {
        id,
        title,
        status: 'fail',
        detail: `${list}; credentialExchange header_and_body needs both client_secret_basic and client_secret_post`,
        fix: alternative,
      }
    default: {
      const never: never = exchange
      return never
    }
  }
}

function checkTokenEndpoint(tokenEndpoint: string | undefined, explicit: boolean): PrerequisiteResult {
  const title = 'standard token endpoint'
  if (!tokenEndpoint)
    return {
      id: 'token_endpoint',
      title,
      status: 'fail',
      detail: 'no token_endpoint in the metadata',
      fix: 'set auth.tokenEndpoint on the connection, or use a provider that publishes one',
    }
  const url = URL.parse(tokenEndpoint)
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:'))
    return {
      id: 'token_endpoint',
      title,
      status: 'fail',
      detail: `token_endpoint "${tokenEndpoint}" is not an absolute http(s) URL`,
      fix: 'set auth.tokenEndpoint to the absolute URL of the token endpoint',
    }
  return { id: 'token_endpoint', title, status: 'pass', detail: `${explicit ? 'auth.tokenEndpoint' : 'token_endpoint'} is ${tokenEndpoint}` }
}

function checkHttps(authorizationEndpoint: string | undefined, tokenEndpoint: string | undefined): PrerequisiteResult {
  const title = 'HTTPS endpoints'
  const present: [string, string][] = []
  if (authorizationEndpoint !== undefined) present.push(['authorization endpoint', authorizationEndpoint])
  if (tokenEndpoint !== undefined) present.push(['token endpoint', tokenEndpoint])
  if (present.length === 0) return { id: 'https', title, status: 'unknown', detail: 'no endpoints to check' }
  const insecure: string[] = []
  const loopback: string[] = []
  for (const [what, raw] of present) {
    const u = URL.parse(raw)
    if (!u || u.protocol === 'https:') continue
    if (u.protocol === 'http:' && isLoopbackHostname(u.hostname)) loopback.push(what)
    else insecure.push(`${what} ${raw}`)
  }
  if (insecure.length > 0)
    return {
      id: 'https',
      title,
      status: 'fail',
      detail: `not https: ${insecure.join(', ')}`,
      fix: "use the provider's https:// endpoints; codes and tokens must never cross the network in clear text",
    }
  if (loopback.length > 0)
    return {
      id: 'https',
      title,
      status: 'pass',
      detail: `${loopback.join(' and ')} on loopback http://, allowed for development only`,
      fix: 'use https:// in production',
    }
  return { id: 'https', title, status: 'pass', detail: 'authorization and token endpoints are https://' }
}

function checkOfflineAccess(m: Metadata): AdvisoryResult {
  const title = 'offline_access scope'
  if (!m) return { id: 'offline_access', title, status: 'unknown', detail: NO_METADATA }
  const scopes = stringArray(m, 'scopes_supported')
  if (!scopes) return { id: 'offline_access', title, status: 'unknown', detail: 'scopes_supported is not published' }
  if (scopes.includes('offline_access'))
    return {
      id: 'offline_access',
      title,
      status: 'pass',
      detail: 'scopes_supported includes offline_access',
      fix: "add offline_access to the connection's scopes to get refresh tokens",
    }
  return {
    id: 'offline_access',
    title,
    status: 'warn',
    detail: 'scopes_supported lacks offline_access',
    fix: 'find how this provider issues refresh tokens (Google: authorizationParams access_type: offline, prompt: consent)',
  }
}

function checkPkce(m: Metadata): AdvisoryResult {
  const title = 'PKCE S256'
  if (!m) return { id: 'pkce_s256', title, status: 'unknown', detail: NO_METADATA }
  const methods = stringArray(m, 'code_challenge_methods_supported')
  if (!methods)
    return { id: 'pkce_s256', title, status: 'unknown', detail: 'code_challenge_methods_supported is not published; Keyway sends S256 anyway (RFC 7636)' }
  if (methods.includes('S256')) return { id: 'pkce_s256', title, status: 'pass', detail: 'code_challenge_methods_supported includes S256' }
  return {
    id: 'pkce_s256',
    title,
    status: 'warn',
    detail: `code_challenge_methods_supported is [${methods.join(', ')}], without S256`,
    fix: 'Keyway always sends S256 (RFC 9700 §2.1.1); the provider may ignore or refuse it',
  }
}

function checkIssuer(m: Metadata, issuer: string | undefined): AdvisoryResult {
  const title = 'issuer matches'
  if (!m || issuer === undefined) return { id: 'issuer', title, status: 'unknown', detail: m ? 'no issuer to compare with' : NO_METADATA }
  const published = stringField(m, 'issuer')
  if (published === issuer) return { id: 'issuer', title, status: 'pass', detail: `issuer is ${issuer}` }
  return {
    id: 'issuer',
    title,
    status: 'warn',
    detail: published ? `the metadata says issuer ${published}, not ${issuer}` : 'the metadata has no issuer',
    fix: published
      ? `set auth.issuer: ${published} exactly (RFC 8414 §3.3; discovery refuses a mismatch)`
      : 'use explicit authorizationEndpoint and tokenEndpoint',
  }
}

type Metadata = Readonly<Record<string, unknown>> | undefined

function stringField(m: Metadata, key: string): string | undefined {
  const v = m?.[key]
  return typeof v === 'string' && v !== '' ? v : undefined
}

/** An array of strings, or undefined when absent or of another shape (treated as not published). */
function stringArray(m: Metadata, key: string): readonly string[] | undefined {
  const v = m?.[key]
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined
}
