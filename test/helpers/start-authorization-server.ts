/**
 * A real OAuth 2.1 / OpenID Connect authorization server for tests: `oidc-provider` on
 * `127.0.0.1:<random port>`, with fresh signing keys per instance, resource indicators (RFC 8707)
 * so tokens can name Keyway's `/mcp` as audience, client credentials, introspection (RFC 7662)
 * and revocation (RFC 7009) enabled, PKCE (S256) required for every client, and devInteractions
 * so any login is accepted. It also drives login and consent over plain HTTP (`completeLogin`,
 * `userToken`), so a test gets a user's bearer without a browser. It owns nothing of Keyway and
 * must never listen beyond loopback. The `oidc-provider` typings are our own minimal ones
 * (`oidc-provider.d.ts`); all casts to its loose shapes live here, not in tests.
 * @module
 */
import { randomBytes, randomUUID, createHash } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import Provider, { errors as providerErrors, type ProviderContext } from 'oidc-provider'

/** Client metadata as oidc-provider takes it (OpenID Connect Dynamic Client Registration names). */
export type ClientMetadata = Readonly<Record<string, unknown>> & { readonly client_id: string }

/** One protected resource the AS issues tokens for (RFC 8707 resource indicator). */
export interface ResourceServerOptions {
  /** Space-separated scopes this resource accepts, e.g. `'mcp'`. */
  readonly scope: string
  /** `jwt` (RFC 9068, `typ: at+jwt`) or `opaque` (verify by introspection). Default `jwt`. */
  readonly accessTokenFormat?: 'jwt' | 'opaque'
  /** Seconds. Default 600. */
  readonly accessTokenTTL?: number
  /** The `aud` of tokens for this resource. Default: the resource URL itself. */
  readonly audience?: string
}

/** Lifetimes in seconds; anything not given keeps oidc-provider's default. */
export interface TtlOverrides {
  readonly AccessToken?: number
  readonly ClientCredentials?: number
  readonly RefreshToken?: number
  readonly AuthorizationCode?: number
  readonly IdToken?: number
  readonly Grant?: number
  readonly Session?: number
  readonly Interaction?: number
}

export interface StartAuthorizationServerOptions {
  /** Passed through to oidc-provider; the internal `test-helper` client is added to them. */
  readonly clients?: readonly ClientMetadata[]
  /** Resource URL → how tokens for it look. */
  readonly resources?: Readonly<Record<string, ResourceServerOptions>>
  /** The resource used when a client asks for none (must be a key of `resources`). */
  readonly defaultResource?: string
  /** user id → groups, put in the `groups` claim of access tokens, ID tokens and userinfo. */
  readonly groupsOf?: Readonly<Record<string, readonly string[]>>
  /** Extra OpenID scopes besides `openid`, `offline_access`, `email` and `groups`. */
  readonly scopes?: readonly string[]
  /** Default false (oidc-provider's own default rotates only in some cases). */
  readonly rotateRefreshToken?: boolean
  readonly ttl?: TtlOverrides
  /** JWS algorithm of JWT access tokens. Default RS256. */
  readonly accessTokenAlg?: 'RS256' | 'PS256' | 'ES256'
  /**
   * Accept only the client's registered `token_endpoint_auth_method` at the token endpoint, as
   * strict providers do. oidc-provider itself takes `client_secret_basic` and `client_secret_post`
   * interchangeably; with this, the other one is answered 401 `invalid_client`.
   */
  readonly strictClientAuthMethod?: boolean
  /** Last word on the configuration object before the provider is built (escape hatch). */
  readonly configure?: (configuration: Record<string, unknown>) => void
}

/** An RFC 6749 §5.1 token response. */
export interface TokenResponse {
  readonly access_token: string
  readonly token_type: string
  readonly expires_in?: number
  readonly refresh_token?: string
  readonly id_token?: string
  readonly scope?: string
}

export interface UserTokenOptions {
  /** RFC 8707 resource; default: `defaultResource`, else the only configured resource. */
  readonly resource?: string
  /** Scope to request (besides `openid`); default: the resource's scope. */
  readonly scope?: string
  /** A client_id from `clients` (needs a secret or auth method `none`, and a redirect URI); default `test-helper`. */
  readonly client?: string
  /** Ask for `offline_access` with `prompt=consent`, so a refresh token is issued. */
  readonly offline?: boolean
}

export interface AuthorizationServer extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`; also the base URL of every endpoint. */
  readonly issuer: string
  readonly url: string
  readonly jwksUri: string
  readonly provider: Provider
  /** The private signing keys the provider publishes (public halves) at `jwksUri`; for forging valid-signature tokens in tests. */
  readonly signingKeys: readonly JWK[]
  /** The confidential client the helper uses for `userToken`. */
  readonly helperClient: { readonly clientId: string; readonly clientSecret: string; readonly redirectUri: string }
  /**
   * Logs `user` in and consents at any authorization URL of this AS (one built by Keyway, say),
   * with a fresh cookie jar, and returns the URL the AS redirected the browser to (the client's
   * redirect URI with `code`, `state`, `iss`, or `error`). It does not request that URL.
   */
  completeLogin(authorizationUrl: string | URL, user: string): Promise<URL>
  /** Full authorization code flow with PKCE for `user`; returns the token response. */
  userGrant(user: string, opts?: UserTokenOptions): Promise<TokenResponse>
  /** `userGrant(...).access_token`. */
  userToken(user: string, opts?: UserTokenOptions): Promise<string>
  /** RFC 6749 §4.4 token for a configured client (secret taken from its metadata). */
  clientCredentialsToken(clientId: string, params?: { readonly resource?: string; readonly scope?: string }): Promise<TokenResponse>
  /** POST requests to the token endpoint, for one client or all. */
  tokenEndpointHits(clientId?: string): number
  /** Requests to a path (e.g. `/jwks`, `/token/introspection`), or all requests. */
  requestCount(pathname?: string): number
  close(): Promise<void>
}

const HELPER_CLIENT_ID = 'test-helper'
// Never served: completeLogin stops at the redirect and reads its Location.
const HELPER_REDIRECT_URI = 'http://127.0.0.1/cb'
const DEFAULT_ACCESS_TOKEN_TTL_S = 600
// Guards the scripted login against redirect loops.
const MAX_LOGIN_STEPS = 20

export async function startAuthorizationServer(opts: StartAuthorizationServerOptions = {}): Promise<AuthorizationServer> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const issuer = `http://127.0.0.1:${port}`

  const helperClient = { clientId: HELPER_CLIENT_ID, clientSecret: randomBytes(16).toString('hex'), redirectUri: HELPER_REDIRECT_URI }
  const clients: ClientMetadata[] = [
    {
      client_id: helperClient.clientId,
      client_secret: helperClient.clientSecret,
      redirect_uris: [helperClient.redirectUri],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...(opts.clients ?? []),
  ]
  const resources = opts.resources ?? {}
  const groupsOf = (id: string): string[] => [...(opts.groupsOf?.[id] ?? [])]
  const signingKeys = await generateSigningKeys()
  const alg = opts.accessTokenAlg ?? 'RS256'

  const configuration: Record<string, unknown> = {
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'email', 'groups', ...(opts.scopes ?? [])],
    claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
    findAccount: async (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: id, groups: groupsOf(id) }),
    }),
    // Access tokens carry who and which groups, as Okta / Entra do when configured to.
    extraTokenClaims: async (_ctx: unknown, token: { accountId?: string }) =>
      token.accountId === undefined ? undefined : { email: token.accountId, groups: groupsOf(token.accountId) },
    pkce: { required: () => true },
    rotateRefreshToken: () => opts.rotateRefreshToken ?? false,
    // Explicit values (oidc-provider's defaults, or the resource's TTL) also silence its "you SHOULD change" notices.
    ttl: {
      AccessToken: (_ctx: unknown, token: TokenWithResource) => token.resourceServer?.accessTokenTTL ?? DEFAULT_ACCESS_TOKEN_TTL_S,
      ClientCredentials: (_ctx: unknown, token: TokenWithResource) => token.resourceServer?.accessTokenTTL ?? DEFAULT_ACCESS_TOKEN_TTL_S,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
      Interaction: 3600,
      ...opts.ttl,
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      // Confidential clients may introspect and revoke any token; public ones only their own (oidc-provider's default rule).
      introspection: { enabled: true, allowedPolicy: ownTokensForPublicClients },
      revocation: { enabled: true, allowedPolicy: ownTokensForPublicClients },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string) => oneOf ?? opts.defaultResource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, indicator: string) => {
          const r = resources[indicator]
          if (!r) throw new providerErrors.InvalidTarget(`unknown resource ${indicator}`)
          return {
            scope: r.scope,
            audience: r.audience ?? indicator,
            accessTokenTTL: r.accessTokenTTL ?? DEFAULT_ACCESS_TOKEN_TTL_S,
            accessTokenFormat: r.accessTokenFormat ?? 'jwt',
            ...(r.accessTokenFormat === 'opaque' ? {} : { jwt: { sign: { alg } } }),
          }
        },
      },
    },
  }
  opts.configure?.(configuration)
  const provider = new Provider(issuer, configuration)

  const requests = new Map<string, number>()
  const tokenHits = new Map<string, number>()
  provider.use(async (ctx: ProviderContext, next) => {
    requests.set(ctx.path, (requests.get(ctx.path) ?? 0) + 1)
    try {
      await next()
      if (opts.strictClientAuthMethod) enforceRegisteredAuthMethod(ctx)
    } finally {
      if (ctx.method === 'POST' && ctx.path === '/token') {
        const id = ctx.oidc?.client?.clientId ?? basicClientId(ctx.headers.authorization) ?? bodyClientId(ctx) ?? '(unknown)'
        tokenHits.set(id, (tokenHits.get(id) ?? 0) + 1)
      }
    }
  })
  server.on('request', provider.callback())

  const clientById = (id: string): ClientMetadata => {
    const c = clients.find((x) => x.client_id === id)
    if (!c) throw new Error(`no client "${id}" is registered at the test authorization server`)
    return c
  }

  const tokenRequest = async (client: ClientMetadata, params: Record<string, string>): Promise<TokenResponse> => {
    const body = new URLSearchParams(params)
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }
    const method = typeof client.token_endpoint_auth_method === 'string' ? client.token_endpoint_auth_method : 'client_secret_basic'
    const secret = typeof client.client_secret === 'string' ? client.client_secret : ''
    if (method === 'client_secret_basic') {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(secret)}`).toString('base64')}`
    } else if (method === 'client_secret_post') {
      body.set('client_id', client.client_id)
      body.set('client_secret', secret)
    } else if (method === 'none') {
      body.set('client_id', client.client_id)
    } else {
      throw new Error(`the test helper cannot authenticate as "${client.client_id}" (${method})`)
    }
    const res = await fetch(`${issuer}/token`, { method: 'POST', headers, body })
    const json: unknown = await res.json()
    if (!res.ok || !isTokenResponse(json)) throw new Error(`token request failed: ${res.status} ${JSON.stringify(json)}`)
    return json
  }

  const resourceOrDefault = (resource: string | undefined): string => {
    const r = resource ?? opts.defaultResource ?? (Object.keys(resources).length === 1 ? Object.keys(resources)[0] : undefined)
    if (!r) throw new Error('userToken needs a resource (none given and no single or default resource configured)')
    return r
  }

  const completeLogin = async (authorizationUrl: string | URL, user: string): Promise<URL> => {
    const jar = new Map<string, string>()
    let url = new URL(authorizationUrl)
    let form: URLSearchParams | undefined
    for (let step = 0; step < MAX_LOGIN_STEPS; step++) {
      const headers: Record<string, string> = {}
      if (jar.size > 0) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
      if (form) headers['content-type'] = 'application/x-www-form-urlencoded'
      const res = await fetch(url, { method: form ? 'POST' : 'GET', headers, redirect: 'manual', ...(form ? { body: form } : {}) })
      updateJar(jar, res.headers.getSetCookie())
      form = undefined
      const location = res.headers.get('location')
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel()
        const next = new URL(location, url)
        if (next.origin !== issuer || !(next.pathname.startsWith('/auth') || next.pathname.startsWith('/interaction/'))) return next
        url = next
        continue
      }
      const html = await res.text()
      const prompt = res.status === 200 && url.pathname.startsWith('/interaction/') ? /name="prompt" value="(\w+)"/.exec(html)?.[1] : undefined
      if (prompt === 'login') form = new URLSearchParams({ prompt: 'login', login: user, password: 'any' })
      else if (prompt === 'consent') form = new URLSearchParams({ prompt: 'consent' })
      else
        throw new Error(
          `scripted login stopped: ${res.status} at ${url.pathname}: ${html
            .replace(/<[^>]*>/g, ' ')
            .replace(/\s+/g, ' ')
            .slice(0, 300)}`,
        )
    }
    throw new Error('scripted login did not finish (redirect loop)')
  }

  const userGrant = async (user: string, o: UserTokenOptions = {}): Promise<TokenResponse> => {
    const client = clientById(o.client ?? HELPER_CLIENT_ID)
    const redirectUri = Array.isArray(client.redirect_uris) && typeof client.redirect_uris[0] === 'string' ? client.redirect_uris[0] : undefined
    if (!redirectUri) throw new Error(`client "${client.client_id}" has no redirect_uris`)
    const resource = resourceOrDefault(o.resource)
    const scope = ['openid', ...(o.offline ? ['offline_access'] : []), o.scope ?? resources[resource]?.scope ?? ''].join(' ').trim()
    const verifier = randomBytes(32).toString('base64url')
    const state = randomUUID()
    const auth = new URL(`${issuer}/auth`)
    auth.search = new URLSearchParams({
      client_id: client.client_id,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope,
      resource,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      // offline_access is dropped without an explicit consent prompt (api-facts §10).
      ...(o.offline ? { prompt: 'consent' } : {}),
    }).toString()
    const back = await completeLogin(auth, user)
    const code = back.searchParams.get('code')
    if (back.searchParams.get('state') !== state || !code)
      throw new Error(`authorization failed: ${back.searchParams.get('error') ?? 'no code'} ${back.searchParams.get('error_description') ?? ''}`)
    return tokenRequest(client, { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, resource })
  }

  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }

  return {
    issuer,
    url: issuer,
    jwksUri: `${issuer}/jwks`,
    provider,
    signingKeys,
    helperClient,
    completeLogin,
    userGrant,
    userToken: async (user, o) => (await userGrant(user, o)).access_token,
    clientCredentialsToken: async (clientId, params = {}) => {
      const resource = resourceOrDefault(params.resource)
      return tokenRequest(clientById(clientId), {
        grant_type: 'client_credentials',
        resource,
        ...(params.scope !== undefined ? { scope: params.scope } : resources[resource] ? { scope: resources[resource].scope } : {}),
      })
    },
    tokenEndpointHits: (clientId) => (clientId === undefined ? [...tokenHits.values()].reduce((a, b) => a + b, 0) : (tokenHits.get(clientId) ?? 0)),
    requestCount: (pathname) => (pathname === undefined ? [...requests.values()].reduce((a, b) => a + b, 0) : (requests.get(pathname) ?? 0)),
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** After a successful token request: refuse it if the client authenticated with a method other than its registered one. */
function enforceRegisteredAuthMethod(ctx: ProviderContext): void {
  if (ctx.method !== 'POST' || ctx.path !== '/token' || ctx.status !== 200) return
  const registered = (ctx.oidc?.client as { readonly clientAuthMethod?: string } | undefined)?.clientAuthMethod
  const usedBasic = typeof ctx.headers.authorization === 'string' && /^basic /i.test(ctx.headers.authorization)
  if ((registered === 'client_secret_post' && usedBasic) || (registered === 'client_secret_basic' && !usedBasic)) {
    const writable = ctx as unknown as { status: number; body: unknown }
    writable.status = 401
    writable.body = { error: 'invalid_client', error_description: 'client authentication failed: not the registered method' }
  }
}

interface TokenWithResource {
  readonly resourceServer?: { readonly accessTokenTTL?: number }
}

async function ownTokensForPublicClients(
  _ctx: unknown,
  client: { readonly clientAuthMethod: string; readonly clientId: string },
  token: { readonly clientId?: string },
): Promise<boolean> {
  return client.clientAuthMethod !== 'none' || token.clientId === client.clientId
}

/** One RSA key (RS256/PS256, ID tokens) and one P-256 key (ES256), each with a random `kid`. */
async function generateSigningKeys(): Promise<JWK[]> {
  const rsa = await generateKeyPair('RS256', { extractable: true })
  const ec = await generateKeyPair('ES256', { extractable: true })
  return [
    { ...(await exportJWK(rsa.privateKey)), kid: `rsa-${randomUUID()}`, use: 'sig' },
    { ...(await exportJWK(ec.privateKey)), kid: `ec-${randomUUID()}`, use: 'sig' },
  ]
}

function updateJar(jar: Map<string, string>, setCookies: readonly string[]): void {
  for (const line of setCookies) {
    const [pair = '', ...attrs] = line.split(';')
    const eq = pair.indexOf('=')
    if (eq <= 0) continue
    const name = pair.slice(0, eq).trim()
    const value = pair.slice(eq + 1).trim()
    const expired = attrs.some((a) => {
      const [k = '', v = ''] = a.split('=').map((s) => s.trim())
      return (k.toLowerCase() === 'max-age' && Number(v) <= 0) || (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now())
    })
    if (expired || value === '') jar.delete(name)
    else jar.set(name, value)
  }
}

function basicClientId(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string' || !/^basic /i.test(header)) return undefined
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  try {
    return decodeURIComponent(decoded.slice(0, colon))
  } catch {
    return undefined
  }
}

function bodyClientId(ctx: ProviderContext): string | undefined {
  const id = ctx.oidc?.body?.client_id
  return typeof id === 'string' ? id : undefined
}

function isTokenResponse(v: unknown): v is TokenResponse {
  return typeof v === 'object' && v !== null && typeof (v as { access_token?: unknown }).access_token === 'string'
}
