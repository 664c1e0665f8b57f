/**
 * `oauth_u2m_shared` end to end with real peers: a real oidc-provider (refresh-token rotation on,
 * PKCE required), headless Chromium filling its login and consent pages, `keyway authorize` run
 * in-process (serving the pages itself, and delegating to a running Keyway), Keyway on a SQLite
 * store, a recording loopback upstream and a real MCP client for a grantee. Then refresh, a 401
 * retry, rotation, a dead grant, the at-rest checks (no token bytes in the file, tampering and a
 * wrong key fail closed) and `keyway credentials`. A second part signs the browser user in at the
 * identity provider (OIDC mode) and refuses a different user.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { ConfigSnapshot } from '../../src/config/load.js'
import { createConsentFlow } from '../../src/consent/records.js'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { revokeCredentials } from '../../src/admin/revoke.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { createBackend } from '../../src/store/index.js'
import { tokenKey } from '../../src/store/keys.js'
import { run as authorize } from '../../tools/authorize.js'
import { run as credentials } from '../../tools/credentials.js'
import { skipBrowserTests, launchBrowser, signInAtProvider, type TestBrowser } from '../helpers/browser.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, textOf, type TestClient } from '../helpers/mcp-clients.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { captureIo } from '../helpers/cli-io.js'
import { waitFor } from '../helpers/wait.js'

const RESOURCE = 'https://crm.example.test/'
const CRM_SECRET = 'crm-web-secret-0123456789abcdef'
const WEB_SECRET = 'keyway-web-secret-0123456789abcdef'
const ENV = {
  CRM_SECRET,
  WEB_SECRET,
  KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
}
const OWNER = 'alice@example.com'
const SHARED = { connection: 'crm', user: null } as const

let as: AuthorizationServer
let upstream: Upstream
let browser: TestBrowser
let port: number
let oidcPort: number
let publicUrl: string
let file: string
let dir: string
let snapshot: ConfigSnapshot
let keyway: HttpKeyway
let bob: TestClient
let offset = 0
const now = (): number => Date.now() + offset
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

const connectionYaml = (name: string, scopes: string, owner = `{ user: ${OWNER} }`): string => `
  ${name}:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: ${owner}
    description: CRM of the sales team
    auth:
      type: oauth_u2m_shared
      issuer: "${as.issuer}"
      clientId: crm-web
      clientSecret: { env: CRM_SECRET }
      scopes: [${scopes}]
      authorizationParams: { prompt: consent, resource: "${RESOURCE}" }
      tokenParams: { resource: "${RESOURCE}" }`

beforeAll(async () => {
  if (skipBrowserTests()) return
  port = await freePort()
  oidcPort = await freePort()
  publicUrl = `http://127.0.0.1:${port}`
  upstream = await startUpstream()
  as = await startAuthorizationServer({
    rotateRefreshToken: true,
    clients: [
      {
        client_id: 'crm-web',
        client_secret: CRM_SECRET,
        redirect_uris: [`${publicUrl}${CALLBACK_PATH}`, `http://127.0.0.1:${oidcPort}${CALLBACK_PATH}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'keyway-web',
        client_secret: WEB_SECRET,
        redirect_uris: [`http://127.0.0.1:${oidcPort}${CALLBACK_PATH}`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['crm:read'],
    resources: { [RESOURCE]: { scope: 'crm:read', accessTokenTTL: 600 } },
  })
  const loaded = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${publicUrl}, host: 127.0.0.1, port: ${port} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "sqlite://./keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:${connectionYaml('crm', 'openid, offline_access, crm:read')}${connectionYaml('crm_nort', 'openid, crm:read')}
grants:
  - { privilege: USE CONNECTION, on: crm, to: { user: bob@example.com } }
  - { privilege: USE CONNECTION, on: crm_nort, to: { user: bob@example.com } }
`,
    ENV,
  )
  ;({ snapshot, file, dir } = loaded)
  // MCP on a random port: the configured one stays free for `keyway authorize` to serve the pages.
  keyway = await startHttp(snapshot, { port: 0, audit, log, now })
  bob = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.bob })
  browser = await launchBrowser()
})

afterAll(async () => {
  await bob?.close()
  await keyway?.close()
  await browser?.close()
  await upstream?.close()
  await as?.close()
})

/** Runs `keyway authorize` and returns its exit promise, output and the printed link. */
async function startAuthorize(connection: string): Promise<{ exit: Promise<number>; io: ReturnType<typeof captureIo>; link: string }> {
  const io = captureIo(ENV, dir)
  const exit = authorize([connection, '--config', file, '--timeout', '60s'], io)
  const link = await waitFor(
    'the link',
    () =>
      io.outLines.find((l) => l.startsWith(`${publicUrl}/connect/`)) ??
      (io.errLines.some((l) => l.includes('authorize:')) ? io.errLines.join('\n') : undefined),
  )
  if (!link.startsWith(publicUrl)) throw new Error(`keyway authorize failed: ${link}`)
  return { exit, io, link }
}

/** The owner opens the link: confirmation page, provider login and consent, callback page. Returns the final page's text. */
async function completeAsOwner(link: string, user: string): Promise<{ confirmText: string; resultText: string; csp: string | undefined }> {
  const page = await browser.newPage()
  try {
    const res = await page.goto(link)
    const csp = res?.headers()['content-security-policy']
    const confirmText = await page.locator('main').innerText()
    await page.click('button[type="submit"]')
    await page.waitForURL((u) => u.origin === as.issuer, { timeout: 10_000 })
    await signInAtProvider(page, user)
    await page.waitForURL((u) => u.pathname === CALLBACK_PATH, { timeout: 10_000 })
    await page.waitForLoadState('domcontentloaded')
    return { confirmText, resultText: await page.locator('main').innerText(), csp }
  } finally {
    await page.context().close()
  }
}

const call = (tool = 'crm'): ReturnType<TestClient['callTool']> => bob.callTool(tool, { method: 'GET', path: '/accounts' })
const bearerSeen = (): string => String(upstream.last()?.headers.authorization ?? '')
const claimsOf = (authorization: string): Record<string, unknown> =>
  JSON.parse(Buffer.from(authorization.replace(/^Bearer /, '').split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>

/** Redeems a refresh token at the provider directly, as crm-web. */
async function redeem(refreshToken: string): Promise<{ status: number; error?: string }> {
  const res = await fetch(`${as.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`crm-web:${CRM_SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  })
  const body = (await res.json()) as { error?: string }
  return { status: res.status, ...(body.error ? { error: body.error } : {}) }
}

describe.skipIf(skipBrowserTests())('oauth_u2m_shared: authorize, use, refresh, revoke', () => {
  test('before any sign-in a grantee gets NOT_AUTHORIZED naming the owner and the command', async () => {
    const r = await call()
    expect(r.isError).toBe(true)
    expect(textOf(r)).toBe(`NOT_AUTHORIZED: connection "crm" is not signed in yet; its owner (user ${OWNER}) must run: keyway authorize crm`)
  })

  test('keyway authorize serves the pages; the owner confirms, signs in and consents in Chromium [consent:shared-e2e]', async () => {
    const { exit, io, link } = await startAuthorize('crm')
    expect(io.errLines.join('\n')).toContain(`serving the sign-in pages on ${publicUrl}`)
    const { confirmText, resultText, csp } = await completeAsOwner(link, OWNER)
    expect(confirmText).toContain(`user ${OWNER}`)
    expect(confirmText).toContain('crm')
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).toContain(`form-action 'self' ${as.issuer}`)
    expect(resultText).toContain('Connected crm')
    expect(resultText).toContain('crm:read')
    expect(resultText).toMatch(/Refresh token\s+yes/)
    expect(await exit).toBe(0)
    const report = io.errLines.join('\n')
    expect(report).toContain('connection "crm" is signed in')
    expect(report).toMatch(/scopes: +.*crm:read/)
    expect(report).toContain('refresh token: yes')
    const stored = await keyway.runtime.store.getToken(SHARED)
    expect(stored).toMatchObject({ method: 'oauth_u2m_shared', subject: OWNER })
    expect(stored?.refreshToken).toBeDefined()
    // The link worked once.
    expect(await keyway.runtime.store.getTicket(link.slice(link.lastIndexOf('/') + 1))).toBeUndefined()
    const auditFile = readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')
    expect(auditFile).toMatch(/"type":"consent\.started","user":"alice@example\.com","connection":"crm"/)
    expect(auditFile).toMatch(/"type":"consent\.granted","user":"alice@example\.com","connection":"crm","scopes":"[^"]*crm:read/)
    expect(auditFile).not.toContain(stored?.accessToken ?? 'x')
  })

  test("a grantee's call uses the owner's token [consent:grantee-uses-owner-token]", async () => {
    const r = await call()
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(claimsOf(bearerSeen())).toMatchObject({ sub: OWNER, aud: RESOURCE, client_id: 'crm-web' })
    expect(upstream.last()?.path).toBe('/api/accounts')
  })

  test('authorize delegates to a Keyway already on the port; no refresh token is a loud warning everywhere [consent:no-refresh-token-warning]', async () => {
    const serving = await startHttp(snapshot, { audit, log: createMemoryLogger() })
    try {
      const { exit, io, link } = await startAuthorize('crm_nort')
      expect(io.errLines.join('\n')).toContain('completes the sign-in (it uses the same store)')
      const { resultText } = await completeAsOwner(link, OWNER)
      expect(resultText).toContain('WARNING: the provider issued no refresh token. Access will stop at first expiry')
      expect(resultText).toContain('offline_access')
      expect(await exit).toBe(0)
      const report = io.errLines.join('\n')
      expect(report).toContain('refresh token: NO')
      expect(report).toContain('!!! WARNING: no refresh token was issued: access will stop at first expiry')
      expect(audit.events).toContainEqual(
        expect.objectContaining({ type: 'consent.granted', connection: 'crm_nort', warning: expect.stringContaining('no refresh token') }),
      )
    } finally {
      await serving.close()
    }
    const r = await call('crm_nort')
    expect(r.isError, textOf(r)).toBeFalsy()
  })

  test('the raw SQLite file holds no token bytes [store:encrypted-at-rest]', async () => {
    const stored = await keyway.runtime.store.getToken(SHARED)
    if (!stored?.refreshToken) throw new Error('no stored token')
    const files = ['keyway.sqlite', 'keyway.sqlite-wal', 'keyway.sqlite-journal'].map((f) => path.join(dir, f)).filter((f) => existsSync(f))
    expect(files.length).toBeGreaterThan(0)
    for (const f of files) {
      const bytes = readFileSync(f)
      for (const secret of [stored.accessToken, stored.refreshToken, stored.accessToken.split('.')[1] ?? 'x', CRM_SECRET, OWNER]) {
        expect(bytes.includes(Buffer.from(secret)), `${path.basename(f)} contains a secret`).toBe(false)
      }
    }
  })

  test('a tampered record fails closed: STORE_UNAVAILABLE, not NOT_AUTHORIZED [store:fail-closed]', async () => {
    const backend = await createBackend(snapshot.store.url)
    const key = tokenKey('keyway', SHARED)
    const original = await backend.get(key)
    if (!original) throw new Error('no sealed record')
    const parts = original.split('.')
    const body = parts[3] ?? ''
    parts[3] = `${body.slice(0, 10)}${body[10] === 'A' ? 'B' : 'A'}${body.slice(11)}`
    await backend.set(key, parts.join('.'))
    try {
      const r = await call()
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(/^STORE_UNAVAILABLE: /)
    } finally {
      await backend.set(key, original)
      await backend.close()
    }
    expect((await call()).isError).toBeFalsy()
  })

  test('a wrong encryption key fails closed [store:fail-closed]', async () => {
    const wrong = await loadTestConfig(readFileSync(file, 'utf8').replace('sqlite://./keyway.sqlite', `sqlite://${path.join(dir, 'keyway.sqlite')}`), {
      ...ENV,
      KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    })
    const other = await startHttp(wrong.snapshot, { port: 0, log: createMemoryLogger(), audit: createMemoryAuditLog() })
    const client = await connectClient('modern', `${other.http?.url}/mcp`, { bearer: TEST_KEYS.bob })
    try {
      const r = await client.callTool('crm', { method: 'GET', path: '/accounts' })
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(/^STORE_UNAVAILABLE: stored token record does not open \(unknown-key-id\)/)
    } finally {
      await client.close()
      await other.close()
    }
  })

  test('upstream 401 to a token believed valid: one forced refresh and one retry [refresh:401-retry]', async () => {
    await call()
    const rejected = bearerSeen()
    upstream.setHandler((req, res) => {
      res.writeHead(req.headers.authorization === rejected ? 401 : 200, { 'content-type': 'application/json' })
      res.end('{"ok":true}')
    })
    try {
      const hits = as.tokenEndpointHits('crm-web')
      const sent = upstream.requests.length
      const r = await call()
      expect(r.isError, textOf(r)).toBeFalsy()
      expect(as.tokenEndpointHits('crm-web') - hits).toBe(1)
      expect(upstream.requests.length - sent).toBe(2)
      expect(bearerSeen()).not.toBe(rejected)
    } finally {
      upstream.setHandler(undefined)
    }
  })

  test('refresh-token rotation: the new refresh token is stored before the new access token is used; the old one is dead [refresh:rotation]', async () => {
    const before = await keyway.runtime.store.getToken(SHARED)
    if (!before?.refreshToken) throw new Error('no refresh token')
    let storedWhenUsed: string | undefined
    upstream.setHandler(async (req, res) => {
      if (req.headers.authorization !== `Bearer ${before.accessToken}`) storedWhenUsed = (await keyway.runtime.store.getToken(SHARED))?.refreshToken
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
    try {
      offset += 601_000 // the access token has expired
      const r = await call()
      expect(r.isError, textOf(r)).toBeFalsy()
    } finally {
      upstream.setHandler(undefined)
    }
    const after = await keyway.runtime.store.getToken(SHARED)
    expect(after?.refreshToken).toBeDefined()
    expect(after?.refreshToken).not.toBe(before.refreshToken)
    expect(storedWhenUsed).toBe(after?.refreshToken)
    expect(after?.lastRefreshAt).toBeDefined()
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'credential.refreshed', connection: 'crm', authMethod: 'oauth_u2m_shared' }))
    expect(await redeem(before.refreshToken)).toMatchObject({ status: 400, error: 'invalid_grant' })
  })

  test('keyway credentials lists both connections, warns about the missing refresh token, prints no secret [cli:credentials]', async () => {
    const io = captureIo(ENV, dir)
    expect(await credentials(['--config', file], io)).toBe(0)
    const text = io.outLines.join('\n')
    expect(io.outLines[0]).toMatch(/^CONNECTION\s+USER\s+METHOD\s+EXPIRES\s+REFRESHABLE\s+LAST REFRESH\s+LAST USE\s+SOURCE\s+WARNINGS$/)
    expect(text).toMatch(/^crm\s+\(shared\)\s+oauth_u2m_shared\s+\S+ \(.+\)\s+yes\s+/m)
    expect(text).toMatch(
      /^crm_nort\s+\(shared\)\s+oauth_u2m_shared\s+.*NO\s+never\s+(?:never|unknown|\S+ \([^)]+\))\s+store\s+WARNING: no refresh token was issued/m,
    )
    const json = captureIo(ENV, dir)
    expect(await credentials(['--config', file, '--json', '--connection', 'crm'], json)).toBe(0)
    expect(json.outLines).toHaveLength(1)
    expect(JSON.parse(json.outLines[0] ?? '{}')).toMatchObject({ connection: 'crm', user: null, method: 'oauth_u2m_shared', refreshable: true, subject: OWNER })
    const stored = await keyway.runtime.store.getToken(SHARED)
    for (const secret of [stored?.accessToken ?? 'x', stored?.refreshToken ?? 'x', CRM_SECRET, ENV.KEYWAY_ENCRYPTION_KEY]) {
      expect(text + json.outLines.join('')).not.toContain(secret)
    }
  })

  test('invalid_grant on refresh: the record is deleted and the grantee is told the owner must re-authorize [refresh:fatal]', async () => {
    const stored = await keyway.runtime.store.getToken(SHARED)
    if (!stored?.refreshToken) throw new Error('no refresh token')
    // The owner revokes the grant at the provider (RFC 7009): the stored refresh token is dead.
    const res = await fetch(`${as.issuer}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`crm-web:${CRM_SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: stored.refreshToken, token_type_hint: 'refresh_token' }),
    })
    expect(res.status).toBe(200)
    offset += 601_000
    const r = await call()
    expect(r.isError).toBe(true)
    expect(textOf(r)).toBe(
      `REAUTHORIZATION_REQUIRED: connection "crm" must be signed in again: the provider refused the stored grant (revoked or expired); its owner (user ${OWNER}) must run: keyway authorize crm`,
    )
    expect(await keyway.runtime.store.getToken(SHARED)).toBeUndefined()
  })

  test('keyway credentials revoke: revoked at the provider (RFC 7009) and deleted [cli:credentials-revoke]', async () => {
    const stored = await keyway.runtime.store.getToken({ connection: 'crm_nort', user: null })
    if (!stored) throw new Error('no token')
    const revocations = as.requestCount('/token/revocation')
    const io = captureIo(ENV, dir)
    expect(await credentials(['revoke', 'crm_nort', '--config', file], io)).toBe(0)
    // oidc-provider cannot revoke structured (JWT) access tokens: RFC 7009 §2.2.1 unsupported_token_type.
    expect(io.outLines).toEqual(['crm_nort (shared): deleted; the provider does not revoke this kind of access token, so it stays valid until it expires'])
    expect(as.requestCount('/token/revocation') - revocations).toBe(1)
    expect(await keyway.runtime.store.getToken({ connection: 'crm_nort', user: null })).toBeUndefined()
    expect(io.outLines.join('') + io.errLines.join('')).not.toContain(stored.accessToken)
    const none = captureIo(ENV, dir)
    expect(await credentials(['revoke', 'crm_nort', '--config', file], none)).toBe(1)
  })

  test('the owner cancels at the provider: an explaining page, consent.failed, and authorize reports it [consent:provider-error]', async () => {
    const { exit, io, link } = await startAuthorize('crm')
    const page = await browser.newPage()
    try {
      await page.goto(link)
      await page.click('button[type="submit"]')
      await page.waitForURL((u) => u.origin === as.issuer, { timeout: 10_000 })
      await page.fill('input[name="login"]', OWNER)
      await page.fill('input[name="password"]', 'any')
      await page.click('form button[type="submit"]')
      await page.waitForSelector('input[name="prompt"][value="consent"]', { state: 'attached', timeout: 10_000 })
      await page.click('a[href$="/abort"]') // devInteractions' "Cancel": error=access_denied
      await page.waitForURL((u) => u.pathname === CALLBACK_PATH)
      const text = await page.locator('main').innerText()
      expect(text).toContain('Access was not granted')
      expect(text).toContain('access_denied')
      expect(text).toContain('keyway authorize crm')
    } finally {
      await page.context().close()
    }
    expect(await exit).toBe(1)
    expect(io.errLines.join('\n')).toContain('the sign-in for "crm" failed (access_denied)')
    expect(readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')).toMatch(
      /"type":"consent\.failed","user":"alice@example\.com","connection":"crm","reason":"access_denied"/,
    )
  })

  test('unknown, expired or replayed links and callbacks get an explaining page with the flow-page headers [consent:headers]', async () => {
    const base = keyway.http?.url ?? ''
    for (const url of [
      `${base}/connect/${randomBytes(32).toString('base64url')}`,
      `${base}/connect/not-an-id`,
      `${base}${CALLBACK_PATH}?state=${randomBytes(32).toString('base64url')}&code=x`,
    ]) {
      const res = await fetch(url)
      expect(res.status, url).toBe(410)
      expect(res.headers.get('content-security-policy')).toBe(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      )
      expect(res.headers.get('x-frame-options')).toBe('DENY')
      expect(res.headers.get('referrer-policy')).toBe('no-referrer')
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(await res.text()).toContain('This link has expired or was already used')
    }
    // Without a live state the page is generic (nothing of the query is echoed) but still names the redirect URI.
    const mismatch = await fetch(`${base}${CALLBACK_PATH}?error=redirect_uri_mismatch`)
    expect(mismatch.status).toBe(400)
    const generic = await mismatch.text()
    expect(generic).toContain('This sign-in link is not valid or has expired')
    expect(generic).not.toContain('redirect_uri_mismatch')
    expect(generic).toContain(`<code>${publicUrl}${CALLBACK_PATH}</code>`)
    const ready = await fetch(`${base}/readyz`)
    expect(ready.status).toBe(200)
  })

  test('keyway authorize refuses a memory store and a connection of another method', async () => {
    const memory = await loadTestConfig(readFileSync(file, 'utf8').replace('url: "sqlite://./keyway.sqlite"', 'url: "memory://"'), ENV)
    const io = captureIo(ENV, dir)
    expect(await authorize(['crm', '--config', memory.file], io)).toBe(1)
    expect(io.errLines.join('\n')).toContain('store.url is memory://')
    const other = captureIo(ENV, dir)
    expect(await authorize(['nope', '--config', file], other)).toBe(1)
    expect(other.errLines.join('\n')).toContain('connection "nope" is not in')
  })
})

describe.skipIf(skipBrowserTests())('oauth_u2m_shared in OIDC identity mode: the browser user must be the owner', () => {
  let oidcKeyway: HttpKeyway
  const oidcUrl = (): string => `http://127.0.0.1:${oidcPort}`

  beforeAll(async () => {
    const { snapshot: s } = await loadTestConfig(
      `
version: 1
server: { publicUrl: ${oidcUrl()}, host: 127.0.0.1, port: ${oidcPort} }
identity:
  oidc:
    issuer: "${as.issuer}"
    browserClient: { clientId: keyway-web, clientSecret: { env: WEB_SECRET } }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
groups: { sales-admins: [${OWNER}] }
connections:${connectionYaml('crm', 'openid, offline_access, crm:read')}${connectionYaml('crm_team', 'openid, crm:read', '{ group: sales-admins }')}
`,
      ENV,
    )
    oidcKeyway = await startHttp(s, { log: createMemoryLogger(), audit })
  })
  afterAll(async () => oidcKeyway?.close())

  /** Keyway's own sign-in at the identity provider, then (same provider here) consent for the connection's client. */
  const signInAndConsent = async (page: Page): Promise<void> => {
    await signInAtProvider(page, OWNER)
    const atIdp = page.url() // still the identity provider's last page while the browser heads to the callback
    // The callback answers with a redirect to the provider; wait until its consent page is committed.
    await page.waitForURL((u) => u.origin === as.issuer && u.pathname.startsWith('/interaction/') && u.href !== atIdp, { timeout: 10_000 })
    await signInAtProvider(page, OWNER)
  }

  const newFlow = (connection: string, completer: { user: string } | { group: string }) =>
    createConsentFlow(
      oidcKeyway.runtime.store,
      { connection, method: 'oauth_u2m_shared', tokenUser: null, completer },
      { publicUrl: oidcUrl(), now: Date.now() },
    )

  test('a different signed-in user is refused and nothing is stored [consent:browser-user-must-match]', async () => {
    const flow = await newFlow('crm', { user: OWNER })
    const page = await browser.newPage()
    try {
      await page.goto(flow.url)
      expect(new URL(page.url()).origin).toBe(as.issuer) // straight to the identity provider, no confirmation page
      await signInAtProvider(page, 'mallory@example.com')
      await page.waitForURL((u) => u.pathname === CALLBACK_PATH)
      const text = await page.locator('main').innerText()
      expect(text).toContain('This link was made for someone else')
      expect(text).toContain('mallory@example.com')
    } finally {
      await page.context().close()
    }
    expect(await oidcKeyway.runtime.store.getToken(SHARED)).toBeUndefined()
    const reuse = await fetch(flow.url)
    expect(reuse.status).toBe(410)
    expect(audit.events).toContainEqual(
      expect.objectContaining({ type: 'consent.failed', connection: 'crm', user: 'mallory@example.com', reason: 'wrong-user' }),
    )
  })

  test('the owner signs in at the identity provider, then consents at the provider; the token is stored [consent:oidc-sign-in]', async () => {
    const flow = await newFlow('crm', { user: OWNER })
    const page = await browser.newPage()
    try {
      await page.goto(flow.url)
      await signInAndConsent(page)
      await page.waitForURL((u) => u.pathname === CALLBACK_PATH)
      expect(await page.locator('main').innerText()).toContain('Connected crm')
    } finally {
      await page.context().close()
    }
    expect(await oidcKeyway.runtime.store.getToken(SHARED)).toMatchObject({ method: 'oauth_u2m_shared', subject: OWNER })
  })

  test('revoking a stored grant revokes its refresh token at the provider (RFC 7009) [cli:credentials-revoke]', async () => {
    const stored = await oidcKeyway.runtime.store.getToken(SHARED)
    if (!stored?.refreshToken) throw new Error('no refresh token')
    const rt = stored.refreshToken
    const results = await revokeCredentials({ store: oidcKeyway.runtime.store, clients: oidcKeyway.runtime.oauth, audit }, oidcKeyway.runtime.snapshot(), 'crm')
    expect(results).toEqual([{ ref: SHARED, deleted: true, provider: { kind: 'revoked', tokens: ['refresh_token'], unsupported: ['access_token'] } }])
    expect(await redeem(rt)).toMatchObject({ status: 400, error: 'invalid_grant' })
    expect(await oidcKeyway.runtime.store.getToken(SHARED)).toBeUndefined()
  })

  test('a group-owned connection accepts a member of the group (config groups)', async () => {
    const flow = await newFlow('crm_team', { group: 'sales-admins' })
    const page = await browser.newPage()
    try {
      await page.goto(flow.url)
      await signInAndConsent(page)
      await page.waitForURL((u) => u.pathname === CALLBACK_PATH)
      expect(await page.locator('main').innerText()).toContain('Connected crm_team')
    } finally {
      await page.context().close()
    }
    expect(await oidcKeyway.runtime.store.getToken({ connection: 'crm_team', user: null })).toBeDefined()
  })
})
