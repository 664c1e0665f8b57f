/**
 * `oauth_m2m` end to end with real peers: a listening Keyway, a real oidc-provider issuing
 * client_credentials tokens, a loopback upstream that records what it receives, a tiny recording
 * token endpoint for what a strict server cannot show, and a real MCP client. Time is injected
 * (a clock offset) except in the one test that proves a real short lifetime works.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { Connection } from '../../src/config/load.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const RESOURCE = 'https://api.example.test/'
const SHORT_RESOURCE = 'https://short.example.test/'
const SECRETS = { BASIC_SECRET: 'basic-secret-0123456789abcdef', POST_SECRET: 'post-secret-0123456789abcdef', FLAKY_SECRET: 'flaky-secret-0123456789' }

let as: AuthorizationServer
let te: TokenEndpoint
let meta: TokenEndpoint
let upstream: Upstream
let keyway: HttpKeyway
let bob: TestClient
let offset = 0
const now = (): number => Date.now() + offset
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

beforeAll(async () => {
  as = await startAuthorizationServer({
    clients: [
      {
        client_id: 'm2m-basic',
        client_secret: SECRETS.BASIC_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'm2m-post',
        client_secret: SECRETS.POST_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    strictClientAuthMethod: true,
    resources: {
      [RESOURCE]: { scope: 'api:read api:write', accessTokenTTL: 600 },
      [SHORT_RESOURCE]: { scope: 'api:read', accessTokenTTL: 3 },
    },
  })
  te = await startTokenEndpoint()
  meta = await startTokenEndpoint()
  upstream = await startUpstream()
  const oauth = (name: string, fields: string): string => `
  ${name}:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, ${fields} }`
  const viaAs = `issuer: "${as.issuer}", scopes: [api:read]`
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 3000 }
connections:${oauth('crm', `${viaAs}, clientId: m2m-basic, clientSecret: { env: BASIC_SECRET }, tokenParams: { resource: "${RESOURCE}" }`)}${oauth(
      'short',
      `${viaAs}, clientId: m2m-basic, clientSecret: { env: BASIC_SECRET }, tokenParams: { resource: "${SHORT_RESOURCE}" }`,
    )}${oauth('flaky', `tokenEndpoint: "${te.tokenUrl}", clientId: flaky, clientSecret: { env: FLAKY_SECRET }, scopes: [api:read]`)}${oauth(
      'hdr_ok',
      `${viaAs}, clientId: m2m-basic, clientSecret: { env: BASIC_SECRET }, credentialExchange: header_only, tokenParams: { resource: "${RESOURCE}" }`,
    )}${oauth('hdr_bad', `${viaAs}, clientId: m2m-post, clientSecret: { env: POST_SECRET }, credentialExchange: header_only, tokenParams: { resource: "${RESOURCE}" }`)}${oauth(
      'body_ok',
      `${viaAs}, clientId: m2m-post, clientSecret: { env: POST_SECRET }, credentialExchange: body_only, tokenParams: { resource: "${RESOURCE}" }`,
    )}${oauth('body_bad', `${viaAs}, clientId: m2m-basic, clientSecret: { env: BASIC_SECRET }, credentialExchange: body_only, tokenParams: { resource: "${RESOURCE}" }`)}${oauth(
      'both_strict',
      `${viaAs}, clientId: m2m-basic, clientSecret: { env: BASIC_SECRET }, credentialExchange: header_and_body, tokenParams: { resource: "${RESOURCE}" }`,
    )}${oauth('meta_post', `issuer: "${meta.issuer}", clientId: meta, clientSecret: { env: FLAKY_SECRET }`)}${oauth(
      'meta_none',
      `issuer: "${meta.issuer}", clientId: meta, clientSecret: { env: FLAKY_SECRET }`,
    )}
grants:
  - { privilege: USE CONNECTION, on: crm, to: { user: bob@example.com } }
  - { privilege: USE CONNECTION, on: short, to: { user: bob@example.com } }
  - { privilege: USE CONNECTION, on: flaky, to: { user: bob@example.com } }
`,
    SECRETS,
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log, now })
  bob = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.bob })
})

afterAll(async () => {
  await bob?.close()
  await keyway?.close()
  await upstream?.close()
  await te?.close()
  await meta?.close()
  await as?.close()
})

beforeEach(() => {
  upstream.setHandler(undefined)
})

const call = (tool: string): ReturnType<TestClient['callTool']> => bob.callTool(tool, { method: 'GET', path: '/things' })
const bearerSeen = (): string => String(upstream.last()?.headers.authorization ?? '')
const claimsOf = (authorization: string): Record<string, unknown> =>
  JSON.parse(Buffer.from(authorization.replace(/^Bearer /, '').split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
/** Waits (polling the store) until the connection's stored token is no longer `bearer`. */
const storedTokenChanges = async (name: string, bearer: string): Promise<void> => {
  const deadline = Date.now() + 5_000
  while ((await keyway.runtime.store.getToken({ connection: name, user: null }))?.accessToken === bearer.replace(/^Bearer /, '')) {
    if (Date.now() > deadline) throw new Error(`the token of ${name} was not refreshed within 5 s`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
const connection = (name: string): Connection => {
  const c = keyway.runtime.snapshot().connections.get(name)
  if (!c) throw new Error(`no connection ${name}`)
  return c
}

describe('oauth_m2m through a tool call', () => {
  test('client_credentials with scopes and resource; the token is cached in the store [oauth:m2m-issue]', async () => {
    const before = as.tokenEndpointHits('m2m-basic')
    const r = await call('crm')
    expect(r.isError, textOf(r)).toBeFalsy()
    const first = bearerSeen()
    expect(claimsOf(first)).toMatchObject({ aud: RESOURCE, client_id: 'm2m-basic', scope: 'api:read' })
    await call('crm')
    expect(bearerSeen()).toBe(first)
    expect(as.tokenEndpointHits('m2m-basic') - before).toBe(1)
    const stored = await keyway.runtime.store.getToken({ connection: 'crm', user: null })
    expect(stored).toMatchObject({ method: 'oauth_m2m', tokenType: 'bearer' })
    expect(stored?.refreshToken).toBeUndefined()
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'credential.obtained', connection: 'crm', authMethod: 'oauth_m2m' }))
  })

  test('a token inside the refresh skew is served at once and replaced in the background (injected clock) [refresh:skew]', async () => {
    await call('crm')
    const old = bearerSeen()
    const before = as.tokenEndpointHits('m2m-basic')
    offset += 600_000 - 30_000 // 30 s left of 600 s: inside the 60 s skew
    const r = await call('crm')
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(bearerSeen()).toBe(old) // still valid: the caller does not wait for the refresh
    await storedTokenChanges('crm', old)
    await call('crm')
    expect(bearerSeen()).not.toBe(old)
    expect(as.tokenEndpointHits('m2m-basic') - before).toBe(1)
    expect((await keyway.runtime.store.getToken({ connection: 'crm', user: null }))?.lastRefreshAt).toBeDefined()
  })

  test('a real 3-second token is refreshed in real time [refresh:short-lifetime]', async () => {
    await call('short')
    const first = bearerSeen()
    expect(claimsOf(first).aud).toBe(SHORT_RESOURCE)
    await new Promise((r) => setTimeout(r, 2_400)) // past 3 s − skew (a quarter: 0.75 s)
    await call('short') // served with the valid token, refreshed ahead in the background
    await storedTokenChanges('short', first)
    await call('short')
    expect(bearerSeen()).not.toBe(first)
  })

  test('20 concurrent calls at expiry make exactly one token request [refresh:single-flight]', async () => {
    await call('crm')
    offset += 700_000 // expired
    const before = as.tokenEndpointHits('m2m-basic')
    const seenBefore = upstream.requests.length
    const results = await Promise.all(Array.from({ length: 20 }, () => call('crm')))
    for (const r of results) expect(r.isError, textOf(r)).toBeFalsy()
    expect(as.tokenEndpointHits('m2m-basic') - before).toBe(1)
    const sent = new Set(upstream.requests.slice(seenBefore).map((q) => q.headers.authorization))
    expect(sent.size).toBe(1)
  })

  test('upstream 401 to a valid token: one forced refresh and one retry, never a loop [refresh:401-retry]', async () => {
    await call('crm')
    const rejected = bearerSeen()
    upstream.setHandler((req, res) => {
      res.writeHead(req.headers.authorization === rejected ? 401 : 200, { 'content-type': 'application/json' })
      res.end('{}')
    })
    const hits = as.tokenEndpointHits('m2m-basic')
    const sent = upstream.requests.length
    const r = await call('crm')
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(as.tokenEndpointHits('m2m-basic') - hits).toBe(1)
    expect(upstream.requests.length - sent).toBe(2)
    expect(bearerSeen()).not.toBe(rejected)

    upstream.setHandler((_req, res) => {
      res.writeHead(401)
      res.end()
    })
    const hits2 = as.tokenEndpointHits('m2m-basic')
    const sent2 = upstream.requests.length
    const again = await call('crm')
    expect(again.structuredContent?.status).toBe(401)
    // Within the forced-refresh cooldown (30 s) the upstream's 401 is the answer: no token request, no retry.
    expect(as.tokenEndpointHits('m2m-basic') - hits2).toBe(0)
    expect(upstream.requests.length - sent2).toBe(1)
  })

  test('token endpoint down: the cached token keeps serving until it expires, then a clear CREDENTIAL_UNAVAILABLE [refresh:transient]', async () => {
    te.setMode('ok')
    const r = await call('flaky')
    expect(r.isError, textOf(r)).toBeFalsy()
    const cached = bearerSeen()
    te.setMode('fail')
    offset += 600_000 - 20_000 // inside the skew window: a refresh is due, the token still valid
    const during = await call('flaky')
    expect(during.isError, textOf(during)).toBeFalsy()
    expect(bearerSeen()).toBe(cached)
    offset += 30_000 // expired
    const after = await call('flaky')
    expect(after.isError).toBe(true)
    expect(textOf(after)).toMatch(
      /^CREDENTIAL_UNAVAILABLE: connection "flaky": the provider answered the client_credentials token request with status 503; retry after \d+ s$/,
    )
    te.setMode('ok')
    offset += 60_000 // past the back-off
    const healed = await call('flaky')
    expect(healed.isError, textOf(healed)).toBeFalsy()
  })
})

describe('credentialExchange [oauth:credential-exchange]', () => {
  const tokenFor = async (name: string): Promise<unknown> => (await keyway.runtime.oauth.get(connection(name))).clientCredentials()

  test('header_only is accepted by a client registered for client_secret_basic and refused by a client_secret_post one', async () => {
    await expect(tokenFor('hdr_ok')).resolves.toMatchObject({ tokenType: 'bearer' })
    const err = await tokenFor('hdr_bad').catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE' })
    expect((err as Error).message).toContain('the provider refused client authentication header_only (invalid_client')
    expect((err as Error).message).toContain('set auth.credentialExchange to body_only')
  })

  test('body_only is accepted by a client registered for client_secret_post and refused by a client_secret_basic one', async () => {
    await expect(tokenFor('body_ok')).resolves.toMatchObject({ tokenType: 'bearer' })
    const err = await tokenFor('body_bad').catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE' })
    expect((err as Error).message).toContain('the provider refused client authentication body_only (invalid_client')
    expect((err as Error).message).toContain('set auth.credentialExchange to header_only')
  })

  test('header_and_body sends the Basic header and the body fields (recorded by a permissive endpoint)', async () => {
    const at = te.requests.length
    te.setMode('ok')
    const client = await keyway.runtime.oauth.get(connection('flaky'))
    expect(client.exchange).toBe('header_and_body') // explicit endpoints, no metadata: the default
    await client.clientCredentials()
    const seen = te.requests[at]
    expect(seen?.authorization).toBe(`Basic ${Buffer.from(`flaky:${SECRETS.FLAKY_SECRET}`).toString('base64')}`)
    expect(seen?.body.get('client_id')).toBe('flaky')
    expect(seen?.body.get('client_secret')).toBe(SECRETS.FLAKY_SECRET)
    expect(seen?.body.get('grant_type')).toBe('client_credentials')
    expect(seen?.body.get('scope')).toBe('api:read')
  })

  test('header_and_body against oidc-provider: refused, and the error says which setting to use', async () => {
    const err = await tokenFor('both_strict').catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE' })
    expect((err as Error).message).toBe(
      'connection "both_strict": the provider refused client authentication header_and_body (invalid_request: client authentication must only be provided using one mechanism): set auth.credentialExchange to header_only or body_only (RFC 6749 §2.3 allows one method)',
    )
    expect((err as Error).message).not.toContain(SECRETS.BASIC_SECRET)
  })

  test('left out, it is chosen from token_endpoint_auth_methods_supported [oauth:exchange-from-metadata]', async () => {
    const crm = await keyway.runtime.oauth.get(connection('crm'))
    expect([crm.exchange, crm.exchangeSource]).toEqual(['header_only', 'metadata']) // oidc-provider lists client_secret_basic

    meta.setMetadata({ token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt'] })
    const post = await keyway.runtime.oauth.get(connection('meta_post'))
    expect([post.exchange, post.exchangeSource]).toEqual(['body_only', 'metadata'])
    const at = meta.requests.length
    await post.clientCredentials()
    expect(meta.requests[at]?.authorization).toBeUndefined()
    expect(meta.requests[at]?.body.get('client_secret')).toBe(SECRETS.FLAKY_SECRET)

    meta.setMetadata({})
    const none = await keyway.runtime.oauth.get(connection('meta_none'))
    expect([none.exchange, none.exchangeSource]).toEqual(['header_and_body', 'default'])
    await none.clientCredentials()
    expect(meta.requests.at(-1)?.authorization).toMatch(/^Basic /)
    expect(meta.requests.at(-1)?.body.get('client_secret')).toBe(SECRETS.FLAKY_SECRET)
  })

  test('no secret reaches the log or the audit log [secret:never-logged]', () => {
    const everything = JSON.stringify(audit.events) + log.lines.join('')
    for (const s of Object.values(SECRETS)) expect(everything).not.toContain(s)
    expect(everything).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./) // no JWT access token
    expect(everything).not.toContain('tok-1')
  })
})
