/**
 * OIDC mode end to end with real peers only: oidc-provider on 127.0.0.1 issuing JWT access
 * tokens for Keyway's `<publicUrl>/mcp`, a listening Keyway, a recording loopback upstream, the
 * official MCP clients of both eras, and headless Chromium signing a person in. The OAuth-capable
 * client starts from nothing but Keyway's URL: the 401, the RFC 9728 metadata, the provider's
 * login and consent pages, a loopback redirect (as native clients such as Claude Code use), then
 * tools by the groups claim. Forged and misdirected tokens are refused with a 401 that points at
 * the metadata, before any tool runs. Only loopback addresses are used.
 * @module
 */
import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { decodeJwt, type JWTPayload } from 'jose'
import {
  Client,
  StreamableHTTPClientTransport,
  UnauthorizedError,
  type FetchLike,
  type OAuthClientMetadata,
  type OAuthClientProvider,
  type OAuthDiscoveryState,
  type StoredOAuthTokens,
} from '@modelcontextprotocol/client'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { launchBrowser, skipBrowserTests, signInAtProvider, type TestBrowser } from '../helpers/browser.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { foreignKey, fromPrivateJwk, goodClaims, hmacWithPublicKey, signJwt, unsignedJwt, type SigningKey } from '../helpers/jwt-forge.js'
import { connectClient, ERAS, textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const UPSTREAM_TOKEN = 'sk-CANARY-oidc-upstream-0123456789'
const NATIVE_CLIENT_ID = 'keyway-test-native-client'
// Groups that only the identity provider's token carries: Keyway's config defines neither.
const ENG = 'oidc-eng'
const FINANCE = 'oidc-finance'
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'
// Another resource at the same AS; nothing listens there, it is only an audience.
const OTHER_RESOURCE = 'http://127.0.0.1:9/other'
// What Okta (the authorization server's audience) or Entra ID (the API's id) put in `aud`
// instead of the resource URL; one Keyway is configured with it as `audience`.
const API_AUDIENCE = 'api://keyway-test'
const MODERN_INFO = { name: 'keyway-test-oauth', version: '1.0.0' }

const audit = createMemoryAuditLog()
const log = createMemoryLogger()
/** Every access token a caller presented to Keyway in this file; none may reach the upstream. */
const callerTokens = new Set<string>()

let upstream: Upstream
let redirects: RedirectReceiver
let as: AuthorizationServer
let asKey: SigningKey
let keyway: HttpKeyway
let scoped: HttpKeyway
let publicUrl: string
let mcpUrl: string
let scopedPublicUrl: string
let scopedMcpUrl: string
let audienced: HttpKeyway
let audiencedPublicUrl: string
let audiencedMcpUrl: string

beforeAll(async () => {
  upstream = await startUpstream()
  redirects = await startRedirectReceiver()
  const [port, scopedPort, audiencedPort] = [await freePort(), await freePort(), await freePort()]
  publicUrl = `http://127.0.0.1:${port}`
  mcpUrl = `${publicUrl}/mcp`
  scopedPublicUrl = `http://127.0.0.1:${scopedPort}`
  scopedMcpUrl = `${scopedPublicUrl}/mcp`
  audiencedPublicUrl = `http://127.0.0.1:${audiencedPort}`
  audiencedMcpUrl = `${audiencedPublicUrl}/mcp`
  as = await startAuthorizationServer({
    clients: [
      {
        // A native MCP client pre-registered by the admin: public, PKCE, loopback redirect (RFC 8252 §7.3).
        client_id: NATIVE_CLIENT_ID,
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: [redirects.redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    resources: {
      [mcpUrl]: { scope: 'mcp' },
      [scopedMcpUrl]: { scope: 'mcp mcp:tools' },
      [audiencedMcpUrl]: { scope: 'mcp', audience: API_AUDIENCE },
      [OTHER_RESOURCE]: { scope: 'other' },
    },
    groupsOf: { [ALICE]: [ENG], [BOB]: [FINANCE] },
  })
  const rsa = as.signingKeys.find((k) => k.kty === 'RSA')
  if (!rsa) throw new Error('test AS has no RSA key')
  asKey = fromPrivateJwk(rsa, 'RS256')

  const start = async (p: number, oidc: Omit<KeywayOidc, 'port'> = {}): Promise<HttpKeyway> =>
    startHttp((await loadTestConfig(keywayConfig({ port: p, ...oidc }), { UPSTREAM_TOKEN })).snapshot, { audit, log })
  keyway = await start(port)
  scoped = await start(scopedPort, { requiredScopes: ['mcp:tools'] })
  audienced = await start(audiencedPort, { audience: API_AUDIENCE })
})

afterAll(async () => {
  await keyway?.close()
  await scoped?.close()
  await audienced?.close()
  await as?.close()
  await redirects?.close()
  await upstream?.close()
})

interface KeywayOidc {
  readonly port: number
  readonly requiredScopes?: readonly string[]
  readonly audience?: string
}

function keywayConfig({ port, requiredScopes = [], audience }: KeywayOidc): string {
  return `
version: 1
server: { publicUrl: http://127.0.0.1:${port}, host: 127.0.0.1, port: ${port} }
identity:
  oidc:
    issuer: ${as.issuer}
    groupsClaim: groups
    requiredScopes: [${requiredScopes.join(', ')}]${audience ? `\n    audience: "${audience}"` : ''}
  apiKeys:
${apiKeyLines({ carol: [ENG] })}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  issues:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
  payroll:
    host: ${upstream.origin}
    basePath: /payroll
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
grants:
  - { privilege: USE CONNECTION, on: issues, to: { group: ${ENG} } }
  - { privilege: USE CONNECTION, on: payroll, to: { group: ${FINANCE} } }
`
}

const nowS = (): number => Math.floor(Date.now() / 1000)
const metadataUrlOf = (origin: string): string => `${origin}/.well-known/oauth-protected-resource/mcp`
const toolCalls = (): number => audit.events.filter((e) => e.type === 'tool.call').length

async function userToken(user: string, opts: { resource?: string; scope?: string } = {}): Promise<string> {
  const token = await as.userToken(user, { resource: opts.resource ?? mcpUrl, ...(opts.scope ? { scope: opts.scope } : {}) })
  callerTokens.add(token)
  return token
}

describe.skipIf(skipBrowserTests())('an MCP client with OAuth support signs in through the browser', () => {
  let browser: TestBrowser
  beforeAll(async () => {
    browser = await launchBrowser()
  })
  afterAll(async () => {
    await browser?.close()
  })

  // Clients take the scope to ask for from the challenge, else from the metadata, else from their
  // own configuration (MCP authorization, "scope selection"). With no scope at all oidc-provider,
  // like Okta, Entra ID and Google, refuses the request (access_denied), so both ways are covered.
  test.each([
    ['learns the scope from the 401 (requiredScopes set)', 'scoped', undefined, 'mcp:tools'],
    ['asks for the scope it is configured with (no requiredScopes)', 'plain', 'mcp', 'mcp'],
    ["gets a token whose aud is the IdP's API identifier (audience set)", 'audienced', 'mcp', 'mcp'],
  ] as const)(
    '401 → metadata → sign-in and consent in Chromium → code, PKCE, resource → tools by groups claim: the client %s [identity:oidc-e2e]',
    async (_how, which, clientScope, expectScope) => {
      const origin = { plain: publicUrl, scoped: scopedPublicUrl, audienced: audiencedPublicUrl }[which]
      const url = `${origin}/mcp`
      const audience = which === 'audienced' ? API_AUDIENCE : url
      const traffic: { method: string; url: string; status: number; challenge: string | null; body: string }[] = []
      const recordingFetch: FetchLike = async (u, init) => {
        const res = await fetch(u, init)
        const body = typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : ''
        traffic.push({ method: init?.method ?? 'GET', url: String(u), status: res.status, challenge: res.headers.get('www-authenticate'), body })
        return res
      }
      let signIn: Promise<URL> | undefined
      const oauth = createTestOAuthClient({
        clientId: NATIVE_CLIENT_ID,
        redirectUri: redirects.redirectUri,
        ...(clientScope ? { scope: clientScope } : {}),
        // Like a desktop client: open the system browser, then wait for the loopback redirect.
        openBrowser: (authorizationUrl) => {
          signIn = (async () => {
            const page = await browser.newPage()
            await page.goto(authorizationUrl.href)
            return signInAtProvider(page, ALICE)
          })()
        },
      })

      const first = new StreamableHTTPClientTransport(new URL(url), { authProvider: oauth, fetch: recordingFetch })
      const refused = await new Client(MODERN_INFO, { capabilities: {} }).connect(first).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(refused).toBeInstanceOf(UnauthorizedError)
      // Discovery started from Keyway's 401 and went through its metadata to the issuer's.
      expect(traffic[0]).toMatchObject({ method: 'POST', url, status: 401 })
      expect(traffic[0]?.challenge).toContain(`resource_metadata="${metadataUrlOf(origin)}"`)
      expect(traffic.map((t) => `${t.method} ${t.url} ${t.status}`)).toContain(`GET ${metadataUrlOf(origin)} 200`)
      expect(traffic.some((t) => t.url.startsWith(`${as.issuer}/.well-known/`) && t.status === 200)).toBe(true)

      const authorizationUrl = oauth.authorizationUrls[0]
      expect(authorizationUrl?.origin).toBe(as.issuer)
      expect(authorizationUrl?.searchParams.get('resource')).toBe(url)
      expect(authorizationUrl?.searchParams.get('client_id')).toBe(NATIVE_CLIENT_ID)
      expect(authorizationUrl?.searchParams.get('code_challenge_method')).toBe('S256')
      expect(authorizationUrl?.searchParams.get('scope')?.split(' ')).toContain(expectScope)

      if (!signIn) throw new Error('the client never opened the browser')
      const landed = await signIn
      const callback = await redirects.next()
      expect(landed.origin + landed.pathname).toBe(redirects.redirectUri)
      expect(callback.get('error')).toBeNull()
      expect(callback.get('state')).toBe(oauth.states.at(-1))
      expect(callback.get('iss')).toBe(as.issuer)
      await first.finishAuth(callback)

      const tokenRequest = traffic.find((t) => t.method === 'POST' && t.url === `${as.issuer}/token`)
      const form = new URLSearchParams(tokenRequest?.body ?? '')
      expect(form.get('grant_type')).toBe('authorization_code')
      expect(form.get('resource')).toBe(url)
      expect(form.get('client_id')).toBe(NATIVE_CLIENT_ID)
      expect(form.get('code_verifier')).toBeTruthy()
      const accessToken = oauth.currentTokens()?.access_token
      if (!accessToken) throw new Error('no access token was saved')
      callerTokens.add(accessToken)
      expect(decodeJwt(accessToken)).toMatchObject({
        iss: as.issuer,
        aud: audience,
        sub: ALICE,
        groups: [ENG],
        client_id: NATIVE_CLIENT_ID,
        scope: expectScope,
      })

      const client = new Client(MODERN_INFO, { capabilities: {} })
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: oauth, fetch: recordingFetch }))
      try {
        expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['issues'])
        const before = upstream.requests.length
        const r = (await client.callTool({ name: 'issues', arguments: { path: '/items', query: { q: which } } })) as ToolCallResult
        expect(r.isError).toBeFalsy()
        expect(upstream.requests.length).toBe(before + 1)
        expect(upstream.last()).toMatchObject({ path: '/api/items', query: `?q=${which}` })
        expect(upstream.last()?.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`)
        const denied = (await client.callTool({ name: 'payroll', arguments: { path: '/' } })) as ToolCallResult
        expect(textOf(denied)).toMatch(/^PERMISSION_DENIED: /)
      } finally {
        await client.close()
      }
      expect(audit.events).toContainEqual(
        expect.objectContaining({
          type: 'tool.call',
          user: ALICE,
          via: 'oidc',
          connection: 'issues',
          path: '/items',
          decision: 'allow',
          rule: `grant to group ${ENG}`,
        }),
      )
    },
  )
})

describe('bearer access tokens from the identity provider, both protocol eras', () => {
  test.each(ERAS)('the %s client lists tools by the groups claim and calls one [identity:oidc-jwt]', async (era) => {
    const alice = await connectClient(era, mcpUrl, { bearer: await userToken(ALICE) })
    const bob = await connectClient(era, mcpUrl, { bearer: await userToken(BOB) })
    try {
      expect(await alice.listToolNames()).toEqual(['issues'])
      expect(await bob.listToolNames()).toEqual(['payroll'])
      const before = upstream.requests.length
      const r = await bob.callTool('payroll', { method: 'POST', path: '/runs', body: { month: 11 } })
      expect(r.isError).toBeFalsy()
      expect(upstream.requests.length).toBe(before + 1)
      expect(upstream.last()).toMatchObject({ method: 'POST', path: '/payroll/runs', body: '{"month":11}' })
      expect(upstream.last()?.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`)
      expect(textOf(await alice.callTool('payroll', { path: '/' }))).toMatch(/^PERMISSION_DENIED: user alice@example\.com /)
    } finally {
      await alice.close()
      await bob.close()
    }
  })

  test('with audience set, tokens carrying that aud are accepted and ones naming the /mcp URL are not [identity:audience-bound]', async () => {
    const token = await userToken(ALICE, { resource: audiencedMcpUrl })
    expect(decodeJwt(token).aud).toBe(API_AUDIENCE)
    const alice = await connectClient('legacy-v1', audiencedMcpUrl, { bearer: token })
    try {
      expect(await alice.listToolNames()).toEqual(['issues'])
    } finally {
      await alice.close()
    }
    const byUrl = await signJwt(asKey, goodClaims(as.issuer, audiencedMcpUrl, nowS(), { sub: ALICE, groups: [ENG] }))
    callerTokens.add(byUrl)
    expect((await postMcp(audiencedMcpUrl, byUrl)).status).toBe(401)
    expect((await postMcp(mcpUrl, token)).status).toBe(401)
  })

  test('API keys keep working next to OIDC, and a key group grants like a claim group', async () => {
    const carol = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.carol })
    const alice = await connectClient('legacy-v1', mcpUrl, { bearer: await userToken(ALICE) })
    try {
      expect(await carol.listToolNames()).toEqual(['issues'])
      expect((await carol.callTool('issues', { path: '/k' })).isError).toBeFalsy()
      expect(upstream.last()?.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`)
      expect((await alice.callTool('issues', { path: '/o' })).isError).toBeFalsy()
    } finally {
      await carol.close()
      await alice.close()
    }
    const vias = audit.events.flatMap((e) => (e.type === 'tool.call' && (e.path === '/k' || e.path === '/o') ? [`${e.user} ${e.via}`] : []))
    expect(vias).toEqual([`carol@example.com api_key`, `${ALICE} oidc`])
  })
})

describe('protected resource metadata (RFC 9728)', () => {
  test('served at the path-specific well-known URL, naming Keyway /mcp and the issuer', async () => {
    const res = await fetch(metadataUrlOf(publicUrl))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await res.json()).toEqual({
      resource: mcpUrl,
      authorization_servers: [as.issuer],
      bearer_methods_supported: ['header'],
      resource_name: 'Keyway',
    })
  })

  test('with requiredScopes it lists them as scopes_supported', async () => {
    expect(await (await fetch(metadataUrlOf(scopedPublicUrl))).json()).toEqual({
      resource: scopedMcpUrl,
      authorization_servers: [as.issuer],
      scopes_supported: ['mcp:tools'],
      bearer_methods_supported: ['header'],
      resource_name: 'Keyway',
    })
  })

  test('with a custom audience the metadata still names Keyway /mcp as the resource (RFC 9728 §3.3)', async () => {
    expect(await (await fetch(metadataUrlOf(audiencedPublicUrl))).json()).toMatchObject({ resource: audiencedMcpUrl })
  })

  test('a request without credentials gets 401 with a challenge that points at the metadata', async () => {
    const res = await postMcp(mcpUrl, undefined)
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${metadataUrlOf(publicUrl)}"`)
  })
})

describe('refused tokens: 401 pointing at the metadata, and no tool runs [identity:refuse-before-tools]', () => {
  // A real tools/call as the modern client sends it, replayed with each refused token.
  let replay: (token: string, url?: string) => Promise<Response>

  beforeAll(async () => {
    replay = await captureToolCall(await userToken(ALICE), { name: 'issues', arguments: { path: '/replayed' } })
  })

  const forged: [string, () => Promise<string>][] = [
    ['a real token for another resource [identity:audience-bound]', () => userToken(ALICE, { resource: OTHER_RESOURCE })],
    ['a token signed by the issuer for another audience [identity:audience-bound]', () => signJwt(asKey, claims({ aud: OTHER_RESOURCE }))],
    [
      'a token with no audience [identity:audience-bound]',
      async () => {
        const { aud: _aud, ...rest } = claims()
        return signJwt(asKey, rest)
      },
    ],
    ['an expired token [identity:exp]', () => signJwt(asKey, claims({ iat: nowS() - 900, exp: nowS() - 120 }))],
    ['a token that is not yet valid (nbf) [identity:nbf]', () => signJwt(asKey, claims({ nbf: nowS() + 600, exp: nowS() + 900 }))],
    [
      'a real token whose payload was altered (bad signature) [identity:signature]',
      async () => {
        const real = await userToken(BOB)
        const [h, , s] = real.split('.')
        const payload = Buffer.from(JSON.stringify({ ...decodeJwt(real), sub: ALICE, groups: [ENG] })).toString('base64url')
        return `${h}.${payload}.${s}`
      },
    ],
    [
      "a token signed by another key under the issuer's kid (bad signature) [identity:signature]",
      async () => signJwt(await foreignKey('RS256', asKey.kid), claims()),
    ],
    ['an unsigned token (alg: none) [identity:alg-allowlist]', async () => unsignedJwt(claims(), asKey.kid)],
    ["an HS256 token keyed with the issuer's public key [identity:alg-allowlist]", () => hmacWithPublicKey(asKey, claims())],
    ['a token signed by a key the issuer does not publish (unknown kid) [identity:signature]', async () => signJwt(await foreignKey('RS256'), claims())],
    ["a token from another issuer, signed with the issuer's key [identity:issuer]", () => signJwt(asKey, claims({ iss: 'http://127.0.0.1:9/evil' }))],
    ['an unknown API key', async () => 'kw_not_a_key_0000000000000000000000000000'],
    ['an opaque string (no introspection configured)', async () => 'opaque-token-that-is-not-a-jwt'],
  ]

  test.each(forged)('%s', async (_title, make) => {
    const token = await make()
    callerTokens.add(token)
    const [calls, sent] = [toolCalls(), upstream.requests.length]
    const res = await replay(token)
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${metadataUrlOf(publicUrl)}", error="invalid_token"`)
    expect(await res.json()).toMatchObject({ error: { message: 'Unauthorized: a valid bearer token is required' } })
    expect(toolCalls()).toBe(calls)
    expect(upstream.requests.length).toBe(sent)
  })

  test('control: the same replayed call with a forged token that is right in every claim runs the tool', async () => {
    const token = await signJwt(asKey, claims())
    callerTokens.add(token)
    const calls = toolCalls()
    const res = await replay(token)
    expect(res.status).toBe(200)
    await res.text()
    expect(toolCalls()).toBe(calls + 1)
    expect(audit.events.at(-1)).toMatchObject({ type: 'tool.call', user: ALICE, via: 'oidc', connection: 'issues', decision: 'allow' })
  })

  test('requiredScopes: a valid token without the scope gets 403 insufficient_scope naming it [identity:required-scopes]', async () => {
    const [calls, sent] = [toolCalls(), upstream.requests.length]
    const narrow = await userToken(ALICE, { resource: scopedMcpUrl, scope: 'mcp' })
    const res = await replay(narrow, scopedMcpUrl)
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toBe(
      `Bearer resource_metadata="${metadataUrlOf(scopedPublicUrl)}", error="insufficient_scope", scope="mcp:tools"`,
    )
    expect(toolCalls()).toBe(calls)
    expect(upstream.requests.length).toBe(sent)
    // A token for the other Keyway is a wrong audience here: 401, with this Keyway's metadata.
    const elsewhere = await replay(await userToken(ALICE), scopedMcpUrl)
    expect(elsewhere.status).toBe(401)
    expect(elsewhere.headers.get('www-authenticate')).toBe(
      `Bearer resource_metadata="${metadataUrlOf(scopedPublicUrl)}", error="invalid_token", scope="mcp:tools"`,
    )
  })

  test('requiredScopes: with the scope the caller lists and calls; API keys are not scope-checked', async () => {
    const wide = await connectClient('legacy-v1', scopedMcpUrl, { bearer: await userToken(ALICE, { resource: scopedMcpUrl, scope: 'mcp mcp:tools' }) })
    const key = await connectClient('modern', scopedMcpUrl, { bearer: TEST_KEYS.carol })
    try {
      expect(await wide.listToolNames()).toEqual(['issues'])
      expect((await wide.callTool('issues', { path: '/scoped' })).isError).toBeFalsy()
      expect(await key.listToolNames()).toEqual(['issues'])
    } finally {
      await wide.close()
      await key.close()
    }
  })

  function claims(over: JWTPayload = {}): JWTPayload {
    return goodClaims(as.issuer, mcpUrl, nowS(), { sub: ALICE, groups: [ENG], ...over })
  }
})

describe('the caller token stays at Keyway [identity:no-token-passthrough] [secret:never-logged]', () => {
  test('every upstream request carried the connection token, and no caller token in any header, query or body', () => {
    expect(upstream.requests.length).toBeGreaterThan(5)
    expect(callerTokens.size).toBeGreaterThan(10)
    for (const r of upstream.requests) {
      expect(r.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`)
      const seen = [...Object.values(r.headers).flat(), r.query, decodeURIComponent(r.query), r.path, r.body].join('\n')
      for (const t of callerTokens) {
        expect(seen).not.toContain(t)
        // Not even a recognisable part (the signature segment of a JWT).
        const signature = t.split('.')[2]
        if (signature && signature.length > 16) expect(seen).not.toContain(signature)
      }
    }
  })

  test('no caller token or upstream token is in the audit log or the logs', () => {
    const everything = JSON.stringify(audit.events) + log.lines.join('\n')
    expect(everything).not.toContain(UPSTREAM_TOKEN)
    for (const t of callerTokens) expect(everything).not.toContain(t)
  })
})

// ---------------------------------------------------------------------------------------------

interface RedirectReceiver {
  /** `http://127.0.0.1:<port>/callback`, registered at the AS for the native client. */
  readonly redirectUri: string
  /** The query of the next redirect that arrives (or one that already did). */
  next(): Promise<URLSearchParams>
  close(): Promise<void>
}

/** The loopback listener a native OAuth client runs for its redirect (RFC 8252 §7.3). */
async function startRedirectReceiver(): Promise<RedirectReceiver> {
  const arrived: URLSearchParams[] = []
  const waiting: ((p: URLSearchParams) => void)[] = []
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (u.pathname !== '/callback') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<p>Signed in. You can close this tab.</p>')
    const w = waiting.shift()
    if (w) w(u.searchParams)
    else arrived.push(u.searchParams)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    redirectUri: `http://127.0.0.1:${port}/callback`,
    next: () => {
      const p = arrived.shift()
      return p ? Promise.resolve(p) : new Promise((r) => waiting.push(r))
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

interface TestOAuthClient extends OAuthClientProvider {
  readonly authorizationUrls: URL[]
  readonly states: string[]
  currentTokens(): StoredOAuthTokens | undefined
}

/** An in-memory OAuth client of a pre-registered public client (no secret, PKCE). */
function createTestOAuthClient(o: { clientId: string; redirectUri: string; scope?: string; openBrowser: (url: URL) => void }): TestOAuthClient {
  let tokens: StoredOAuthTokens | undefined
  let verifier: string | undefined
  let discovery: OAuthDiscoveryState | undefined
  const authorizationUrls: URL[] = []
  const states: string[] = []
  const clientMetadata: OAuthClientMetadata = {
    client_name: 'Keyway test MCP client',
    redirect_uris: [o.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...(o.scope ? { scope: o.scope } : {}),
  }
  return {
    authorizationUrls,
    states,
    currentTokens: () => tokens,
    redirectUrl: o.redirectUri,
    clientMetadata,
    state: () => {
      const s = randomUUID()
      states.push(s)
      return s
    },
    clientInformation: () => ({ client_id: o.clientId }),
    tokens: () => tokens,
    saveTokens: (t) => {
      tokens = t
    },
    redirectToAuthorization: (url) => {
      authorizationUrls.push(url)
      o.openBrowser(url)
    },
    saveCodeVerifier: (v) => {
      verifier = v
    },
    codeVerifier: () => {
      if (!verifier) throw new Error('no code verifier saved')
      return verifier
    },
    saveDiscoveryState: (s) => {
      discovery = s
    },
    discoveryState: () => discovery,
    invalidateCredentials: (scope) => {
      if (scope === 'all' || scope === 'tokens') tokens = undefined
      if (scope === 'all' || scope === 'verifier') verifier = undefined
      if (scope === 'all' || scope === 'discovery') discovery = undefined
    },
  }
}

/**
 * Runs one tools/call with the modern client and records the exact HTTP request it sent; the
 * returned function replays that request with another bearer (to another Keyway, if given).
 */
async function captureToolCall(
  bearer: string,
  call: { name: string; arguments: Record<string, unknown> },
): Promise<(token: string, url?: string) => Promise<Response>> {
  let captured: { headers: Record<string, string>; body: string } | undefined
  const capturing: FetchLike = async (url, init) => {
    const body = typeof init?.body === 'string' ? init.body : ''
    if (init?.method === 'POST' && body.includes('"tools/call"')) captured = { headers: Object.fromEntries(new Headers(init.headers)), body }
    return fetch(url, init)
  }
  const client = new Client(MODERN_INFO, { capabilities: {} })
  await client.connect(
    new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${bearer}` } }, fetch: capturing }),
  )
  try {
    const r = (await client.callTool(call)) as ToolCallResult
    expect(r.isError).toBeFalsy()
  } finally {
    await client.close()
  }
  const request = captured
  if (!request) throw new Error('the client sent no tools/call request')
  return (token, url = mcpUrl) => fetch(url, { method: 'POST', headers: { ...request.headers, authorization: `Bearer ${token}` }, body: request.body })
}

function postMcp(url: string, bearer: string | undefined): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
  })
}
