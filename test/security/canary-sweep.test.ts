/**
 * Attack suite, the canary-secret sweep: unique secrets are planted in every credential kind (a
 * static token, two client secrets, access, refresh and ID tokens, the authorization code, the
 * PKCE verifier, the state, the API keys, a caller's own OIDC access token, the store key), then
 * a real `keyway serve` process is driven through success and failure paths of every auth
 * method, against an upstream and a token endpoint that echo everything they receive. Then
 * every tool result, the consent pages, the operational log, the audit file and the output of
 * the commands are searched for each canary in any encoding (`helpers/canary.ts`): zero hits.
 * Each canary is also shown to have been in play (the peers received it), so a clean sweep
 * means something. Real peers only: oidc-provider, Chromium, loopback servers, MCP clients.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { launchBrowser, skipBrowserTests, type TestBrowser } from '../helpers/browser.js'
import { findCanaries } from '../helpers/canary.js'
import { apiKeyLines, TEST_KEYS, writeTempConfig } from '../helpers/config.js'
import { consentInBrowser } from '../helpers/consent-browser.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { runKeyway, spawnKeyway, type SpawnedKeyway } from '../helpers/spawn-keyway.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const ALICE = 'alice@example.com'
const API = 'https://drive.example.test/'
const STATIC_TOKEN = `sk-CANARY-static-${randomBytes(9).toString('base64url')}`
const M2M_SECRET = `m2m/CANARY+secret=${randomBytes(9).toString('hex')}`
const DRIVE_SECRET = `drive-CANARY-secret-${randomBytes(9).toString('hex')}`
const M2M_TOKEN_PREFIX = `at-CANARY-m2m-${randomBytes(6).toString('hex')}-`
const ENCRYPTION_KEY = randomBytes(32).toString('base64')
const ENV = { STATIC_TOKEN, M2M_SECRET, DRIVE_SECRET, KEYWAY_ENCRYPTION_KEY: ENCRYPTION_KEY }
const LINK = /(http:\/\/127\.0\.0\.1:\d+\/connect\/[A-Za-z0-9_-]{43})\b/

let as: AuthorizationServer
let upstream: Upstream
let tokens: TokenEndpoint
let echoingTokens: TokenEndpoint
let browser: TestBrowser
let keyway: SpawnedKeyway
/** The upstream answers its next request 401 (to force a refresh). */
let fail401Once = false
let dir: string
let file: string
/** Every secret issued or captured during the run, by name. */
const planted: Record<string, string> = {
  staticToken: STATIC_TOKEN,
  m2mClientSecret: M2M_SECRET,
  driveClientSecret: DRIVE_SECRET,
  encryptionKey: ENCRYPTION_KEY,
  aliceApiKey: TEST_KEYS.alice,
  bobApiKey: TEST_KEYS.bob,
}
/** Everything Keyway showed anyone, by where it was seen. */
const seen: Record<string, string[]> = { 'tool results': [], 'consent pages': [], 'command output': [] }

/** Plants a secret captured from a peer under a fresh name. */
function plant(kind: string, value: unknown): void {
  if (typeof value !== 'string' || value === '') return
  // One value may be planted under several kinds (the callback's code is also the code redeemed).
  if (!Object.entries(planted).some(([k, v]) => v === value && k.replace(/\d+$/, '') === kind)) planted[`${kind}${Object.keys(planted).length}`] = value
}

beforeAll(async () => {
  if (skipBrowserTests()) return
  const port = await freePort()
  const publicUrl = `http://127.0.0.1:${port}`
  as = await startAuthorizationServer({
    clients: [
      {
        client_id: 'keyway-drive',
        client_secret: DRIVE_SECRET,
        redirect_uris: [`${publicUrl}${CALLBACK_PATH}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['api:read', 'mcp'],
    resources: { [API]: { scope: 'api:read' }, [`${publicUrl}/mcp`]: { scope: 'mcp' } },
    defaultResource: API,
  })
  // Every token response and every code exchange the provider completes is a canary.
  as.provider.on('grant.success', (...args: unknown[]) => {
    const ctx = args[0] as { body?: Record<string, unknown>; oidc?: { params?: Record<string, unknown> } }
    for (const k of ['access_token', 'refresh_token', 'id_token']) plant(k, ctx.body?.[k])
    for (const k of ['code', 'code_verifier', 'refresh_token']) plant(k, ctx.oidc?.params?.[k])
  })
  // An httpbin-style upstream: echoes every header, the query and the body; /e401 answers 401
  // with the echo (as does any request after `fail401Once` is set); /hang never answers.
  upstream = await startUpstream((req, res) => {
    if (req.path.endsWith('/hang')) return
    const status = req.path.endsWith('/e401') || fail401Once ? 401 : 200
    fail401Once = false
    res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': String(req.headers.authorization ?? '') })
    res.end(JSON.stringify({ headers: req.headers, query: req.query, body: req.body }))
  })
  tokens = await startTokenEndpoint()
  tokens.setIssue({ prefix: M2M_TOKEN_PREFIX })
  echoingTokens = await startTokenEndpoint()
  echoingTokens.setMode('echo')

  const owner = '{ user: admin@example.com }'
  ;({ dir, file } = await writeTempConfig(`
version: 1
server: { publicUrl: ${publicUrl}, host: 127.0.0.1, port: ${port} }
identity:
  oidc: { issuer: "${as.issuer}" }
  apiKeys:
${apiKeyLines()}
store: { url: "sqlite://./keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  static:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: ${owner}
    timeoutMs: 1000
    auth: { type: bearer_token, token: { env: STATIC_TOKEN } }
  private:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: ${ALICE} }
    auth: { type: bearer_token, token: { env: STATIC_TOKEN } }
  m2m:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: ${owner}
    auth: { type: oauth_m2m, tokenEndpoint: "${tokens.tokenUrl}", clientId: m2m-client, clientSecret: { env: M2M_SECRET }, credentialExchange: header_only }
  m2m_echo:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: ${owner}
    auth: { type: oauth_m2m, tokenEndpoint: "${echoingTokens.tokenUrl}", clientId: m2m-client, clientSecret: { env: M2M_SECRET }, credentialExchange: body_only }
  drive:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: ${owner}
    auth:
      type: oauth_u2m_per_user
      issuer: "${as.issuer}"
      clientId: keyway-drive
      clientSecret: { env: DRIVE_SECRET }
      scopes: [openid, offline_access, api:read]
      authorizationParams: { prompt: consent, resource: "${API}" }
      tokenParams: { resource: "${API}" }
grants:
${['static', 'm2m', 'm2m_echo', 'drive'].map((c) => `  - { privilege: USE CONNECTION, on: ${c}, to: { group: "account users" } }`).join('\n')}
`))
  keyway = await spawnKeyway(['serve', '--no-watch', '--config', file], { env: ENV, cwd: dir })
  browser = await launchBrowser()
}, 60_000)

afterAll(async () => {
  await keyway?.stop()
  await browser?.close()
  await echoingTokens?.close()
  await tokens?.close()
  await upstream?.close()
  await as?.close()
})

describe.skipIf(skipBrowserTests())('canary-secret sweep [redact:canary-sweep]', () => {
  test('no planted secret appears in any tool result, page, log line, audit line or command output', { timeout: 120_000 }, async () => {
    const mcpUrl = keyway.mcpUrl as string
    const callerToken = await as.userToken(ALICE, { resource: `${mcpUrl}`, scope: 'mcp' })
    plant('callerOidcToken', callerToken)
    const viaKey = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.alice })
    const viaOidc = await connectClient('legacy-v1', mcpUrl, { bearer: callerToken })
    const bob = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.bob })
    const call = async (client: TestClient, tool: string, args: Record<string, unknown>): Promise<ToolCallResult> => {
      const r = await client.callTool(tool, args)
      seen['tool results']?.push(JSON.stringify(r))
      return r
    }
    const echo = { method: 'GET', path: '/echo', query: { q: 'x' } }

    // Static token: success, an error page, a timeout, refusals before anything is sent.
    for (const client of [viaKey, viaOidc]) expect((await call(client, 'static', echo)).structuredContent?.redacted).toBeGreaterThan(0)
    expect((await call(viaKey, 'static', { method: 'POST', path: '/e401', body: { a: 1 } })).isError).toBe(true)
    expect(textOf(await call(viaKey, 'static', { method: 'GET', path: '/hang' }))).toMatch(/^UPSTREAM_TIMEOUT/)
    expect(textOf(await call(viaKey, 'static', { method: 'GET', path: '//evil.example/x' }))).toMatch(/^EGRESS_BLOCKED/)
    expect(textOf(await call(viaKey, 'static', { method: 'BOGUS', path: '/x' }))).toMatch(/^INVALID_REQUEST/)
    expect(textOf(await call(bob, 'private', echo))).toMatch(/^PERMISSION_DENIED/)

    // Machine-to-machine: a token obtained and echoed; a token endpoint that echoes its request.
    expect((await call(viaKey, 'm2m', echo)).structuredContent?.redacted).toBeGreaterThan(0)
    expect(textOf(await call(viaKey, 'm2m_echo', echo))).toMatch(/^CREDENTIAL_UNAVAILABLE/)
    expect(echoingTokens.requests[0]?.body.get('client_secret')).toBe(M2M_SECRET)

    // Per-user: consent in a browser, then calls with alice's own token, then a forced refresh.
    const link = LINK.exec(textOf(await call(viaKey, 'drive', echo)))?.[1]
    expect(link).toBeDefined()
    const run = await consentInBrowser(browser, as.issuer, link as string, ALICE)
    seen['consent pages']?.push(run.text)
    const answer = new URL(run.callbacks.at(-1) as string)
    plant('authorizationCode', answer.searchParams.get('code'))
    plant('state', answer.searchParams.get('state'))
    expect((await call(viaKey, 'drive', echo)).structuredContent?.redacted).toBeGreaterThan(0)
    fail401Once = true
    expect((await call(viaKey, 'drive', echo)).structuredContent?.status).toBe(200)

    for (const client of [viaKey, viaOidc, bob]) await client.close()
    // Tokens as the upstream received them (m2m's come from the loopback token endpoint).
    for (const r of upstream.requests) plant('sentToken', String(r.headers.authorization ?? '').replace(/^Bearer /, ''))

    // The commands an administrator runs, against the same store and audit file.
    for (const args of [['credentials', '--json'], ['credentials'], ['audit'], ['audit', '--json'], ['validate']]) {
      const out = await runKeyway([...args, '--config', file], { env: ENV, cwd: dir })
      seen['command output']?.push(out.stdout, out.stderr)
    }
    await keyway.stop()
    seen['operational log'] = [keyway.stderr(), keyway.stdout()]
    seen['audit file'] = [await readFile(path.join(dir, 'audit.jsonl'), 'utf8')]

    // Every kind was in play: the sweep below is not vacuous.
    const kinds = Object.keys(planted).map((k) => k.replace(/\d+$/, ''))
    for (const kind of ['access_token', 'refresh_token', 'id_token', 'code', 'code_verifier', 'authorizationCode', 'state', 'callerOidcToken', 'sentToken'])
      expect(kinds, `no ${kind} was captured`).toContain(kind)
    expect(upstream.requests.some((r) => r.headers.authorization === `Bearer ${STATIC_TOKEN}`)).toBe(true)
    expect(tokens.requests[0]?.authorization).toMatch(/^Basic /)

    const hits = Object.entries(seen).flatMap(([where, texts]) => findCanaries(texts.join('\n'), planted).map((name) => `${name} in ${where}`))
    expect(hits).toEqual([])
  })
})
