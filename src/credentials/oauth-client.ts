/**
 * Keyway as an OAuth 2.0 client of each connection's provider (openid-client 6): one
 * `Configuration` per connection object, from `issuer` discovery or explicit endpoints, with the
 * client authentication `auth.credentialExchange` names (or the provider's metadata suggests).
 * Every request to the provider (discovery, token, revocation, JWKS) goes through the egress
 * guard as openid-client's `customFetch`, with a timeout; plain `http://` only under
 * `egress.dangerouslyAllowPrivateNetworks`. Every failure leaves as an `AppError` whose message
 * names the setting to change and never a secret, code, token or verifier. This module decides
 * nothing about caching tokens, refreshing or who may sign in.
 * @module
 */
import * as oidc from 'openid-client'
import type { Connection, OAuthSettings } from '../config/load.js'
import type { CredentialExchange } from '../config/schema.js'
import { basicClientCredentials } from '../encoding.js'
import { AppError, externalReason, isAppError, type AppErrorCode, type ReasonOf } from '../errors.js'
import { confineToIssuerOrigin, type MetadataEndpointField } from '../egress/same-origin.js'
import { formsOf, redactText } from '../redact.js'
import { oneLine, safeErrorCode } from '../safe-text.js'
import { tokenExpiresAt } from './token-record.js'

/** The `customFetch` openid-client calls; egress provides one per timeout (`Egress.fetchFor`). */
export type ProviderFetch = oidc.CustomFetch

/**
 * Upper bound of one request to a provider (discovery, token, revocation). Token endpoints
 * answer in well under a second; ten seconds covers a slow one without holding tool calls long.
 */
export const PROVIDER_REQUEST_TIMEOUT_MS = 10_000

/** Authorization request parameters Keyway sets itself; `auth.authorizationParams` cannot replace them. */
const RESERVED_AUTHORIZATION_PARAMS: ReadonlySet<string> = new Set([
  'client_id',
  'response_type',
  'redirect_uri',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
])

/** Token request parameters Keyway sets itself; `auth.tokenParams` cannot replace them. */
const RESERVED_TOKEN_PARAMS: ReadonlySet<string> = new Set([
  'grant_type',
  'code',
  'code_verifier',
  'redirect_uri',
  'refresh_token',
  'client_id',
  'client_secret',
  'client_assertion',
  'client_assertion_type',
])

/** Discovered endpoints this module sends requests (or the browser) to; each must be on the issuer's origin. */
const USED_ENDPOINTS: ReadonlySet<MetadataEndpointField> = new Set(['authorization_endpoint', 'token_endpoint', 'revocation_endpoint'])

/** Metadata fields the config can set explicitly, and the `auth` key that does. */
const EXPLICIT_SETTINGS: readonly (readonly [MetadataEndpointField, 'authorizationEndpoint' | 'tokenEndpoint' | 'revocationEndpoint'])[] = [
  ['authorization_endpoint', 'authorizationEndpoint'],
  ['token_endpoint', 'tokenEndpoint'],
  ['revocation_endpoint', 'revocationEndpoint'],
]

/** Longest provider `error_description` quoted in a message. */
const MAX_DESCRIPTION_CHARS = 200

/** A token response, normalised (RFC 6749 §5.1). Times are epoch milliseconds. */
export interface TokenSet {
  readonly accessToken: string
  /** Lowercase, `bearer` (openid-client refuses other types except `dpop`). */
  readonly tokenType: string
  readonly refreshToken?: string
  readonly scope?: string
  readonly expiresAt?: number
  /** Claims of a validated ID token, when one came (OpenID Connect Core §3.1.3.7). */
  readonly idTokenClaims?: Readonly<Record<string, unknown>>
  /**
   * Account fields some providers add to a code-exchange response outside OpenID Connect
   * (`sub`, `user_id`, `account_id`, `uid`, `user`, `email`), string values only.
   */
  readonly accountFields?: Readonly<Record<string, string>>
}

/** Token response members that name the signed-in account at providers without OpenID Connect. */
const ACCOUNT_FIELDS = ['sub', 'user_id', 'account_id', 'uid', 'user', 'email'] as const

/** How `credentialExchange` was decided, for messages and `keyway credentials`. */
export type ExchangeSource = 'config' | 'metadata' | 'default'

/** What Keyway does at one connection's provider. */
export interface OAuthClient {
  readonly connection: string
  /** The issuer identifier: discovered, or (explicit endpoints) the authorization or token endpoint's origin. */
  readonly issuer: string
  /** Whether `issuer` is known (discovery) rather than made up from an endpoint (then `iss` cannot be checked). */
  readonly issuerKnown: boolean
  readonly exchange: CredentialExchange
  readonly exchangeSource: ExchangeSource
  readonly authorizationEndpoint: string | undefined
  readonly revocationEndpoint: string | undefined
  /** OpenID Connect Core §5.3 userinfo endpoint from discovery, when the provider has one. */
  readonly userinfoEndpoint: string | undefined
  /** RFC 6749 §4.4: a token for the client itself, with `auth.scopes` and `auth.tokenParams`. */
  clientCredentials(): Promise<TokenSet>
  /** RFC 6749 §6. A `REAUTHORIZATION_REQUIRED` error means the grant is gone (`invalid_grant`). */
  refresh(refreshToken: string): Promise<TokenSet>
  /** RFC 6749 §4.1.1 with RFC 7636 S256 PKCE; `auth.authorizationParams` added. */
  authorizationUrl(p: AuthorizationUrlParams): URL
  /**
   * RFC 6749 §4.1.3: checks `state` and, when present or advertised, `iss` (RFC 9207), then
   * redeems the code once with the PKCE verifier. `callbackUrl` must be the public redirect URI
   * plus the query the browser brought (openid-client sends it, without the query, as `redirect_uri`).
   */
  exchangeCode(callbackUrl: URL, p: { readonly codeVerifier: string; readonly state: string; readonly nonce?: string }): Promise<TokenSet>
  /**
   * OpenID Connect Core §5.3: the claims of the account an access token belongs to, through the
   * egress guard. `expectedSubject` (the ID token's `sub`) must match (§5.3.2).
   */
  userInfo(accessToken: string, expectedSubject: string | undefined): Promise<Readonly<Record<string, unknown>>>
  /** RFC 7009. `false` when the provider has no revocation endpoint (nothing was sent). */
  revoke(token: string, hint: 'access_token' | 'refresh_token'): Promise<boolean>
}

export interface AuthorizationUrlParams {
  readonly redirectUri: string
  readonly state: string
  readonly codeChallenge: string
  readonly nonce?: string
  /** Scopes to ask for; default `auth.scopes`. */
  readonly scopes?: readonly string[]
}

export interface OAuthClientDeps {
  /** A fetch through the egress guard that gives up after `timeoutMs`. */
  readonly fetchFor: (timeoutMs: number) => ProviderFetch
  /** `egress.dangerouslyAllowPrivateNetworks` of the snapshot the connection came from. */
  readonly allowInsecure: () => boolean
  readonly now?: () => number
}

export interface OAuthClients {
  /** The client of a connection, made once per connection object (a reload makes new ones). */
  get(connection: Connection): Promise<OAuthClient>
}

/** Creates the per-connection client cache. A failed discovery is not cached: the next call retries. */
export function createOAuthClients(deps: OAuthClientDeps): OAuthClients {
  const cache = new WeakMap<Connection, Promise<OAuthClient>>()
  return {
    get(connection) {
      let p = cache.get(connection)
      if (!p) {
        p = createOAuthClient(connection, deps)
        cache.set(connection, p)
        p.catch(() => cache.delete(connection))
      }
      return p
    },
  }
}

/** The OAuth settings of a connection, or an `INTERNAL` error for a static-token connection. */
export function oauthSettings(connection: Connection): OAuthSettings {
  if (connection.auth.type === 'bearer_token') throw new AppError('INTERNAL', `connection "${connection.name}" does not use OAuth`)
  return connection.auth
}

/**
 * The exchange to use when `auth.credentialExchange` is left out (design.md §1), from RFC 8414
 * `token_endpoint_auth_methods_supported`: `client_secret_basic` → `header_only`, else
 * `client_secret_post` → `body_only`, else (nothing usable published) `header_and_body`.
 */
export function chooseExchange(methods: unknown): { exchange: CredentialExchange; source: ExchangeSource } {
  if (!Array.isArray(methods) || methods.length === 0) return { exchange: 'header_and_body', source: 'default' }
  if (methods.includes('client_secret_basic')) return { exchange: 'header_only', source: 'metadata' }
  if (methods.includes('client_secret_post')) return { exchange: 'body_only', source: 'metadata' }
  return { exchange: 'header_and_body', source: 'default' }
}

/**
 * Client authentication for an exchange. `header_only` is RFC 6749 §2.3.1 Basic (id and secret
 * form-url-encoded first), `body_only` the form parameters, `header_and_body` both at once for
 * providers that want both; strict servers refuse that (RFC 6749 §2.3: one method per request).
 */
export function clientAuthFor(exchange: CredentialExchange, secret: string): oidc.ClientAuth {
  switch (exchange) {
    case 'header_only':
      return oidc.ClientSecretBasic(secret)
    case 'body_only':
      return oidc.ClientSecretPost(secret)
    case 'header_and_body':
      return (_as, client, body, headers) => {
        headers.set('authorization', `Basic ${basicClientCredentials(client.client_id, secret)}`)
        body.set('client_id', client.client_id)
        body.set('client_secret', secret)
      }
    default: {
      const never: never = exchange
      throw new AppError('INTERNAL', `unknown credential exchange ${String(never)}`)
    }
  }
}

async function createOAuthClient(connection: Connection, deps: OAuthClientDeps): Promise<OAuthClient> {
  const auth = oauthSettings(connection)
  const name = connection.name
  const secret = auth.clientSecret.reveal()
  const allowInsecure = deps.allowInsecure()
  const now = deps.now ?? Date.now
  const timeoutMs = Math.min(connection.timeoutMs, PROVIDER_REQUEST_TIMEOUT_MS)
  const fetchImpl = deps.fetchFor(timeoutMs)
  const mapCtx = (operation: Operation, exchange: CredentialExchange, sent: readonly string[]): MapContext => ({
    connection: name,
    operation,
    exchange,
    timeoutMs,
    sent: [secret, ...sent],
  })

  let server: oidc.ServerMetadata
  let issuerKnown: boolean
  if (auth.issuer) {
    server = await discover(auth.issuer, fetchImpl, allowInsecure, timeoutMs, mapCtx('discovery', auth.credentialExchange ?? 'header_and_body', []))
    // Before any request to them: a discovered endpoint must be on the issuer's origin unless
    // the config sets it, so a metadata document cannot send the client secret elsewhere.
    server = confineToIssuerOrigin(server, server.issuer, {
      used: USED_ENDPOINTS,
      explicit: new Set(EXPLICIT_SETTINGS.filter(([, key]) => auth[key] !== undefined).map(([field]) => field)),
      code: 'EGRESS_BLOCKED',
      who: `connection "${name}"`,
      settingFor: (field) => {
        const key = EXPLICIT_SETTINGS.find(([f]) => f === field)?.[1]
        return key && `auth.${key}`
      },
      detail: { connection: name, operation: 'discovery' },
    })
    issuerKnown = true
  } else {
    // Explicit endpoints and no issuer: openid-client needs an issuer identifier; the endpoint's
    // origin stands in, and `iss` in callbacks cannot be checked (the README recommends issuer).
    const anchor = auth.authorizationEndpoint ?? auth.tokenEndpoint
    if (!anchor) throw new AppError('CONFIG_INVALID', `connection "${name}": give auth.issuer or auth.tokenEndpoint`)
    server = { issuer: new URL(anchor).origin }
    issuerKnown = false
  }
  // Explicit endpoints win over discovered ones.
  server = {
    ...server,
    ...(auth.authorizationEndpoint ? { authorization_endpoint: auth.authorizationEndpoint } : {}),
    ...(auth.tokenEndpoint ? { token_endpoint: auth.tokenEndpoint } : {}),
    ...(auth.revocationEndpoint ? { revocation_endpoint: auth.revocationEndpoint } : {}),
  }
  if (!server.token_endpoint)
    throw new AppError('CREDENTIAL_UNAVAILABLE', `connection "${name}": the provider metadata has no token_endpoint; set auth.tokenEndpoint`, {
      detail: { connection: name, reason: 'no-token-endpoint', transient: false },
    })
  for (const field of ['token_endpoint', 'authorization_endpoint', 'revocation_endpoint'] as const) {
    const v = server[field]
    if (typeof v === 'string' && new URL(v).protocol !== 'https:' && !allowInsecure)
      throw new AppError(
        'CREDENTIAL_UNAVAILABLE',
        `connection "${name}": the provider's ${field} is not https; only egress.dangerouslyAllowPrivateNetworks allows http://`,
        {
          detail: { connection: name, reason: 'insecure-endpoint', transient: false },
        },
      )
  }

  const chosen = auth.credentialExchange
    ? { exchange: auth.credentialExchange, source: 'config' as const }
    : chooseExchange(server.token_endpoint_auth_methods_supported)
  const config = new oidc.Configuration(server, auth.clientId, { client_secret: secret }, clientAuthFor(chosen.exchange, secret))
  config[oidc.customFetch] = fetchImpl
  // openid-client's own deadline (whole seconds), a little after the egress one so that one fires first.
  config.timeout = Math.ceil(timeoutMs / 1000) + 1
  if (allowInsecure) oidc.allowInsecureRequests(config)

  const tokenParams = filterParams(auth.tokenParams, RESERVED_TOKEN_PARAMS)
  const scope = auth.scopes.join(' ')
  /** `sentAt`: the clock just before the request was sent, where `expires_in` is counted from. */
  const toSet = (r: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers, sentAt: number): TokenSet => {
    // The raw `expires_in`: the helper `expiresIn()` floors what is left to whole seconds from now.
    const expiresAt = tokenExpiresAt(r.access_token, sentAt, typeof r.expires_in === 'number' ? r.expires_in : undefined)
    const claims = r.id_token ? r.claims() : undefined
    const exchanged = [secret, r.access_token, ...(r.refresh_token ? [r.refresh_token] : [])]
    const scope = typeof r.scope === 'string' ? sanitizeScope(r.scope, exchanged) : undefined
    // Account fields are shown on pages and in the audit: never with something the provider echoed back.
    const account = Object.fromEntries(
      ACCOUNT_FIELDS.flatMap((k) => (typeof r[k] === 'string' && r[k] !== '' ? [[k, redactText(r[k], formsOf(exchanged)).value]] : [])),
    )
    return {
      accessToken: r.access_token,
      tokenType: r.token_type,
      ...(r.refresh_token ? { refreshToken: r.refresh_token } : {}),
      ...(scope ? { scope } : {}),
      ...(expiresAt === undefined ? {} : { expiresAt }),
      ...(claims ? { idTokenClaims: { ...claims } } : {}),
      ...(Object.keys(account).length > 0 ? { accountFields: account } : {}),
    }
  }
  const exchange = chosen.exchange

  const client: OAuthClient = {
    connection: name,
    issuer: server.issuer,
    issuerKnown,
    exchange,
    exchangeSource: chosen.source,
    authorizationEndpoint: server.authorization_endpoint,
    revocationEndpoint: server.revocation_endpoint,
    userinfoEndpoint: server.userinfo_endpoint,

    async clientCredentials() {
      const sentAt = now()
      try {
        return toSet(await oidc.clientCredentialsGrant(config, { ...(scope ? { scope } : {}), ...tokenParams }), sentAt)
      } catch (e) {
        throw mapOAuthError(e, mapCtx('client_credentials', exchange, []))
      }
    },

    async refresh(refreshToken) {
      const sentAt = now()
      try {
        return toSet(await oidc.refreshTokenGrant(config, refreshToken, tokenParams), sentAt)
      } catch (e) {
        throw mapOAuthError(e, mapCtx('refresh_token', exchange, [refreshToken]))
      }
    },

    authorizationUrl(p) {
      if (!server.authorization_endpoint)
        throw new AppError('CONFIG_INVALID', `connection "${name}": the provider metadata has no authorization_endpoint; set auth.authorizationEndpoint`)
      const scopes = (p.scopes ?? auth.scopes).join(' ')
      return oidc.buildAuthorizationUrl(config, {
        ...filterParams(auth.authorizationParams, RESERVED_AUTHORIZATION_PARAMS),
        redirect_uri: p.redirectUri,
        ...(scopes ? { scope: scopes } : {}),
        state: p.state,
        code_challenge: p.codeChallenge,
        code_challenge_method: 'S256',
        ...(p.nonce ? { nonce: p.nonce } : {}),
      })
    },

    async exchangeCode(callbackUrl, p) {
      const url = new URL(callbackUrl)
      // Without a known issuer there is nothing to compare `iss` with; openid-client would
      // compare it with the stand-in origin and fail a legitimate response.
      if (!issuerKnown) url.searchParams.delete('iss')
      const code = url.searchParams.get('code') ?? ''
      const sentAt = now()
      try {
        const r = await oidc.authorizationCodeGrant(
          config,
          url,
          { pkceCodeVerifier: p.codeVerifier, expectedState: p.state, ...(p.nonce ? { expectedNonce: p.nonce } : {}) },
          tokenParams,
        )
        return toSet(r, sentAt)
      } catch (e) {
        throw mapOAuthError(e, mapCtx('authorization_code', exchange, [code, p.codeVerifier]))
      }
    },

    async userInfo(accessToken, expectedSubject) {
      try {
        return { ...(await oidc.fetchUserInfo(config, accessToken, expectedSubject ?? oidc.skipSubjectCheck)) }
      } catch (e) {
        throw mapOAuthError(e, mapCtx('userinfo', exchange, [accessToken]))
      }
    },

    async revoke(token, hint) {
      if (!server.revocation_endpoint) return false
      try {
        await oidc.tokenRevocation(config, token, { token_type_hint: hint })
        return true
      } catch (e) {
        throw mapOAuthError(e, mapCtx('revocation', exchange, [token]))
      }
    },
  }
  return Object.freeze(client)
}

/** OpenID Connect Discovery first, then RFC 8414 `oauth-authorization-server`. */
async function discover(issuer: string, fetchImpl: ProviderFetch, allowInsecure: boolean, timeoutMs: number, ctx: MapContext): Promise<oidc.ServerMetadata> {
  const options = (algorithm: 'oidc' | 'oauth2'): oidc.DiscoveryRequestOptions => ({
    [oidc.customFetch]: fetchImpl,
    algorithm,
    timeout: Math.ceil(timeoutMs / 1000) + 1,
    ...(allowInsecure ? { execute: [oidc.allowInsecureRequests] } : {}),
  })
  let first: unknown
  for (const algorithm of ['oidc', 'oauth2'] as const) {
    try {
      const c = await oidc.discovery(new URL(issuer), 'keyway-discovery', undefined, oidc.None(), options(algorithm))
      return { ...c.serverMetadata() }
    } catch (e) {
      first ??= e
      // Only a missing document is worth the second location; a timeout or a refusal is not.
      if (!(e instanceof oidc.ClientError && e.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM')) break
    }
  }
  throw mapOAuthError(first, ctx)
}

function filterParams(params: Readonly<Record<string, string>>, reserved: ReadonlySet<string>): Record<string, string> {
  return Object.fromEntries(Object.entries(params).filter(([k]) => !reserved.has(k)))
}

/** Which request to the provider failed; named in messages. */
export type Operation = 'discovery' | 'client_credentials' | 'refresh_token' | 'authorization_code' | 'userinfo' | 'revocation'

interface MapContext {
  readonly connection: string
  readonly operation: Operation
  readonly exchange: CredentialExchange
  readonly timeoutMs: number
  /** Values Keyway sent; scrubbed from anything the provider echoes. */
  readonly sent: readonly string[]
}

const OTHER_EXCHANGE: Readonly<Record<CredentialExchange, string>> = {
  header_only: 'body_only',
  body_only: 'header_only',
  header_and_body: 'header_only or body_only',
}

const OPERATION_TEXT: Readonly<Record<Operation, string>> = {
  discovery: 'metadata discovery',
  client_credentials: 'the client_credentials token request',
  refresh_token: 'the token refresh',
  authorization_code: 'the authorization code exchange',
  userinfo: 'the userinfo request',
  revocation: 'the token revocation',
}

/**
 * Maps anything openid-client, egress or the network threw to one `AppError`. `detail.reason`
 * is the OAuth error code or a short failure name; `detail.transient` says whether trying again
 * later may work (timeouts, network, 5xx) as opposed to a refusal that needs a change.
 * `invalid_grant` on a refresh is `REAUTHORIZATION_REQUIRED` (RFC 6749 §5.2: the grant is gone).
 */
export function mapOAuthError(e: unknown, ctx: MapContext): AppError {
  const c = ctx.connection
  const what = OPERATION_TEXT[ctx.operation]
  // Whatever the provider or the library wrote is redacted of everything Keyway sent, in every
  // form it may be echoed in (Basic header, form encoding, ...).
  const forms = formsOf(ctx.sent)
  const fail = <C extends AppErrorCode>(code: C, message: string, reason: ReasonOf<C>, transient: boolean): AppError =>
    new AppError(code, redactText(`connection "${c}": ${message}`, forms).value, {
      cause: e,
      detail: { connection: c, reason, transient, operation: ctx.operation },
    })

  if (e instanceof oidc.ResponseBodyError) {
    const desc = describe(e.error_description)
    switch (e.error) {
      case 'invalid_grant':
        if (ctx.operation === 'refresh_token')
          return fail(
            'REAUTHORIZATION_REQUIRED',
            `the provider refused the stored refresh token (invalid_grant${desc}): the grant was revoked or expired`,
            'invalid_grant',
            false,
          )
        if (ctx.operation === 'authorization_code')
          return fail(
            'FLOW_INVALID',
            `the provider refused the authorization code (invalid_grant${desc}): it expired or was used already; start the sign-in again`,
            'invalid_grant',
            false,
          )
        return fail('CREDENTIAL_UNAVAILABLE', `the provider refused ${what} (invalid_grant${desc})`, 'invalid_grant', false)
      case 'invalid_client':
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the provider refused client authentication ${ctx.exchange} (invalid_client${desc}): check auth.clientId and auth.clientSecret, ` +
            `or set auth.credentialExchange to ${OTHER_EXCHANGE[ctx.exchange]} if the client is registered for that method`,
          'invalid_client',
          false,
        )
      case 'invalid_request':
        if (ctx.exchange === 'header_and_body')
          return fail(
            'CREDENTIAL_UNAVAILABLE',
            `the provider refused client authentication header_and_body (invalid_request${desc}): set auth.credentialExchange to header_only or body_only (RFC 6749 §2.3 allows one method)`,
            'invalid_request',
            false,
          )
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the provider refused ${what} as malformed (invalid_request${desc}): check auth.tokenParams`,
          'invalid_request',
          false,
        )
      case 'unauthorized_client':
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the client auth.clientId may not use ${what} at the provider (unauthorized_client${desc}): allow that grant type in the client's registration`,
          'unauthorized_client',
          false,
        )
      case 'unsupported_grant_type':
        return fail('CREDENTIAL_UNAVAILABLE', `the provider does not support ${what} (unsupported_grant_type${desc})`, 'unsupported_grant_type', false)
      case 'invalid_scope':
        return fail('CREDENTIAL_UNAVAILABLE', `the provider refused the requested scopes (invalid_scope${desc}): check auth.scopes`, 'invalid_scope', false)
      case 'invalid_target':
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the provider refused the requested resource (invalid_target${desc}): check auth.tokenParams.resource (RFC 8707)`,
          'invalid_target',
          false,
        )
      default: {
        const transient = e.status >= 500 || e.error === 'temporarily_unavailable' || e.error === 'server_error'
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the provider answered ${what} with ${safeErrorCode(e.error)} (status ${e.status}${desc})`,
          externalReason(safeErrorCode(e.error)),
          transient,
        )
      }
    }
  }
  if (e instanceof oidc.AuthorizationResponseError) {
    return fail('FLOW_INVALID', `the provider returned ${safeErrorCode(e.error)} to the callback`, externalReason(safeErrorCode(e.error)), false)
  }
  // egress refusals and failures arrive wrapped by openid-client ("something went wrong").
  const app = findAppError(e)
  if (app) {
    if (app.code === 'EGRESS_BLOCKED')
      return fail(
        'EGRESS_BLOCKED',
        `${what} was refused by the egress policy (${app.message}); check egress.allowedHosts and the provider URLs in auth`,
        'egress-blocked',
        false,
      )
    if (app.code === 'UPSTREAM_TIMEOUT')
      return fail('CREDENTIAL_UNAVAILABLE', `the provider did not answer ${what} within ${ctx.timeoutMs} ms`, 'timeout', true)
    return fail('CREDENTIAL_UNAVAILABLE', `the provider could not be reached for ${what} (${app.code.toLowerCase()})`, 'unreachable', true)
  }
  if (e instanceof oidc.ClientError) {
    switch (e.code) {
      case 'OAUTH_TIMEOUT':
      case 'OAUTH_ABORT':
        return fail('CREDENTIAL_UNAVAILABLE', `the provider did not answer ${what} within ${ctx.timeoutMs} ms`, 'timeout', true)
      case 'OAUTH_HTTP_REQUEST_FORBIDDEN':
        return fail('CREDENTIAL_UNAVAILABLE', `${what} needs http://, allowed only with egress.dangerouslyAllowPrivateNetworks`, 'insecure-endpoint', false)
      case 'OAUTH_RESPONSE_IS_NOT_CONFORM':
      case 'OAUTH_RESPONSE_IS_NOT_JSON': {
        const status = responseStatus(e)
        const transient = status === undefined || status >= 500 || status === 429
        const where = ctx.operation === 'discovery' ? ': check auth.issuer' : ''
        return fail(
          'CREDENTIAL_UNAVAILABLE',
          `the provider answered ${what} with ${status === undefined ? 'an unexpected response' : `status ${status}`}${where}`,
          'bad-response',
          transient,
        )
      }
      case 'OAUTH_JSON_ATTRIBUTE_COMPARISON':
        if (ctx.operation === 'discovery')
          return fail(
            'CREDENTIAL_UNAVAILABLE',
            'the provider metadata names another issuer: set auth.issuer to the exact issuer identifier',
            'issuer-mismatch',
            false,
          )
        return fail('FLOW_INVALID', `the callback did not match the sign-in it answers (${e.message}); start the sign-in again`, 'response-mismatch', false)
      case 'OAUTH_INVALID_RESPONSE':
      case 'OAUTH_JWT_CLAIM_COMPARISON':
      case 'OAUTH_JWT_TIMESTAMP_CHECK':
        return fail(
          ctx.operation === 'authorization_code' ? 'FLOW_INVALID' : 'CREDENTIAL_UNAVAILABLE',
          `the provider's answer to ${what} failed validation (${e.message})`,
          'invalid-response',
          false,
        )
      default:
        return fail('CREDENTIAL_UNAVAILABLE', `${what} failed (${e.message})`, e.code === undefined ? 'client-error' : externalReason(e.code), true)
    }
  }
  if (e instanceof TypeError) {
    // fetch() rejects with TypeError for DNS, connection refused and reset.
    return fail('CREDENTIAL_UNAVAILABLE', `the provider could not be reached for ${what}`, 'unreachable', true)
  }
  if (e instanceof oidc.WWWAuthenticateChallengeError && ctx.operation === 'userinfo') {
    return fail(
      'CREDENTIAL_UNAVAILABLE',
      `the provider refused ${what} with the new access token (status ${e.status}): add openid to auth.scopes so the ID token names the account`,
      'challenge',
      false,
    )
  }
  if (e instanceof oidc.WWWAuthenticateChallengeError) {
    return fail(
      'CREDENTIAL_UNAVAILABLE',
      `the provider refused ${what} with a WWW-Authenticate challenge (status ${e.status}): check auth.credentialExchange, auth.clientId and auth.clientSecret`,
      'challenge',
      false,
    )
  }
  return fail('CREDENTIAL_UNAVAILABLE', `${what} failed unexpectedly`, 'unexpected', true)
}

/** Longest granted `scope` kept: real grants list a few dozen scopes at most. */
const MAX_SCOPE_CHARS = 2048

/**
 * A granted `scope` as stored and shown (`keyway credentials`): RFC 6749 §3.3 scope tokens only
 * (printable ASCII without `"` and `\`), bounded, and redacted of the secrets of the exchange in
 * case the provider echoed its request into it.
 */
export function sanitizeScope(scope: string, secrets: readonly string[]): string {
  const tokens = redactText(scope, formsOf(secrets))
    .value.split(' ')
    .filter((t) => /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(t))
  let out = ''
  for (const t of tokens) {
    if (out.length + t.length + 1 > MAX_SCOPE_CHARS) break
    out = out ? `${out} ${t}` : t
  }
  return out
}

/** Whether a failure from this module is worth trying again later (network, timeout, 5xx). */
export function isTransient(e: unknown): boolean {
  return isAppError(e) && e.detail?.transient === true
}

function findAppError(e: unknown): AppError | undefined {
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    if (isAppError(cur)) return cur
    cur = cur instanceof Error ? cur.cause : undefined
  }
  return undefined
}

function responseStatus(e: oidc.ClientError): number | undefined {
  const cause: unknown = e.cause
  return cause instanceof Response ? cause.status : undefined
}

/** `: <description>` as one bounded line (the caller redacts it). */
function describe(description: string | undefined): string {
  const d = description ? oneLine(description, MAX_DESCRIPTION_CHARS) : ''
  return d ? `: ${d}` : ''
}
