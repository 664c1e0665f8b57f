/**
 * `oauth_u2m_per_user` end to end with real peers only (design.md §7, issue 5): a real
 * oidc-provider with users alice and bob, a client for the per-user connection and Keyway's own
 * browser client; an upstream API that verifies every bearer it receives against that provider's
 * JWKS (jose) and answers whose token it was (`sub`); headless Chromium doing the sign-in and
 * consent at `/connect/<flowId>` and at the provider; the official MCP clients of both eras over
 * HTTP, and the built bin over stdio. For each kind of client the first call asks the right way,
 * the retried (or waiting) call succeeds, and the upstream sees alice's own token. Then the
 * refusals: bob at alice's link, replayed callback, wrong state, expired link; the missing
 * refresh token warning; `invalid_grant` back to consent; `keyway credentials --user`.
 * Only 127.0.0.1 is used.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { StdioClientTransport as ModernStdio } from '@modelcontextprotocol/client/stdio'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport as LegacyStdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema, UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { createMemoryLogger } from '../../src/log.js'
import { CONSENT_WAIT_MS } from '../../src/mcp/consent.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { openTokenStore, type TokenStore } from '../../src/store/index.js'
import { run as credentials } from '../../tools/credentials.js'
import { launchBrowser, skipBrowserTests, type TestBrowser } from '../helpers/browser.js'
import { consentInBrowser as consentInBrowserAt, type BrowserRun } from '../helpers/consent-browser.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS, writeTempConfig } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import type { ToolCallResult } from '../helpers/mcp-clients.js'
import { KEYWAY_BIN } from '../helpers/spawn-keyway.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { captureIo } from '../helpers/cli-io.js'

/** The API's resource indicator (RFC 8707) and the `aud` the upstream requires; nothing listens there. */
const API = 'https://drive.example.test/'
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'
const DRIVE_SECRET = 'drive-client-secret-0123456789abcdef'
const WEB_SECRET = 'keyway-web-secret-0123456789abcdef'
const ENV = { DRIVE_SECRET, WEB_SECRET, KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }
const LINK = /(http:\/\/127\.0\.0\.1:\d+\/connect\/[A-Za-z0-9_-]{43})\b/
const CALL = { method: 'GET', path: '/files' } as const

let as: AuthorizationServer
let upstream: Upstream
let browser: TestBrowser
/** Keyway in OIDC identity mode: the browser user is signed in at the identity provider. */
let oidcKeyway: HttpKeyway
let oidcUrl: string
let oidcDir: string
let oidcFile: string
/** Keyway in API-key mode (confirmation page), on a clock the tests move. */
let keyKeyway: HttpKeyway
let keyUrl: string
let keyStore: TokenStore
let offset = 0
const clock = (): number => Date.now() + offset
let stdioPort: number
const audit = createMemoryAuditLog()
const keyAudit = createMemoryAuditLog()

const driveYaml = (name: string, scopes: string): string => `
  ${name}:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: admin@example.com }
    description: Files of the team
    auth:
      type: oauth_u2m_per_user
      issuer: "${as.issuer}"
      clientId: keyway-drive
      clientSecret: { env: DRIVE_SECRET }
      scopes: [${scopes}]
      authorizationParams: { prompt: consent, resource: "${API}" }
      tokenParams: { resource: "${API}" }`

const grantsYaml = `
grants:
  - { privilege: USE CONNECTION, on: drive, to: { group: "account users" } }
  - { privilege: USE CONNECTION, on: drive_nort, to: { group: "account users" } }`

beforeAll(async () => {
  if (skipBrowserTests()) return
  const [oidcPort, keyPort] = [await freePort(), await freePort()]
  stdioPort = await freePort()
  oidcUrl = `http://127.0.0.1:${oidcPort}`
  keyUrl = `http://127.0.0.1:${keyPort}`
  as = await startAuthorizationServer({
    clients: [
      {
        client_id: 'keyway-drive',
        client_secret: DRIVE_SECRET,
        redirect_uris: [oidcUrl, keyUrl, `http://127.0.0.1:${stdioPort}`].map((u) => `${u}${CALLBACK_PATH}`),
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'keyway-web',
        client_secret: WEB_SECRET,
        redirect_uris: [`${oidcUrl}${CALLBACK_PATH}`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['api:read'],
    resources: { [API]: { scope: 'api:read' } },
  })
  // The API: accepts only a JWT access token from this provider for this audience, and says whose it was.
  const jwks = createRemoteJWKSet(new URL(as.jwksUri))
  upstream = await startUpstream(async (req, res) => {
    const bearer = String(req.headers.authorization ?? '').replace(/^Bearer /, '')
    try {
      const { payload } = await jwtVerify(bearer, jwks, { issuer: as.issuer, audience: API, typ: 'at+jwt' })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ sub: payload.sub, client_id: payload.client_id, scope: payload.scope, path: req.path }))
    } catch {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token"' })
      res.end('{"error":"invalid_token"}')
    }
  })

  const oidc = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${oidcUrl}, host: 127.0.0.1, port: ${oidcPort} }
identity:
  oidc:
    issuer: "${as.issuer}"
    browserClient: { clientId: keyway-web, clientSecret: { env: WEB_SECRET } }
  apiKeys:
${apiKeyLines()}
store: { url: "sqlite://./keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:${driveYaml('drive', 'openid, offline_access, api:read')}${driveYaml('drive_nort', 'openid, api:read')}${grantsYaml}
`,
    ENV,
  )
  oidcDir = oidc.dir
  oidcFile = oidc.file
  oidcKeyway = await startHttp(oidc.snapshot, { audit, log: createMemoryLogger() })

  const keys = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${keyUrl}, host: 127.0.0.1, port: ${keyPort} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:${driveYaml('drive', 'openid, offline_access, api:read')}${driveYaml('drive_nort', 'openid, api:read')}${grantsYaml}
`,
    ENV,
  )
  keyStore = await openTokenStore(keys.snapshot.store, { warn: () => {}, now: clock })
  keyKeyway = await startHttp(keys.snapshot, { audit: keyAudit, log: createMemoryLogger(), now: clock, store: keyStore })
  browser = await launchBrowser()
})

afterAll(async () => {
  await oidcKeyway?.close()
  await keyKeyway?.close()
  await keyStore?.close()
  await browser?.close()
  await upstream?.close()
  await as?.close()
})

// ---------------------------------------------------------------------------------------------
// Helpers

/** A person opens a consent link in a fresh browser as `user` (test/helpers/consent-browser.ts). */
const consentInBrowser = (link: string, user: string): Promise<BrowserRun> => consentInBrowserAt(browser, as.issuer, link, user)

const bearer = (key: keyof typeof TEST_KEYS): Record<string, string> => ({ authorization: `Bearer ${TEST_KEYS[key]}` })
const textOf = (r: ToolCallResult): string => r.content[0]?.text ?? ''
const linkIn = (text: string): string => {
  const m = LINK.exec(text)
  if (!m?.[1]) throw new Error(`no consent link in: ${text}`)
  return m[1]
}
const bodyOf = (r: ToolCallResult): Record<string, unknown> => (r.structuredContent?.body ?? {}) as Record<string, unknown>
const subOfLastBearer = (): unknown => {
  const token = String(upstream.last()?.headers.authorization ?? '').replace(/^Bearer /, '')
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')).sub
}

async function modernClient(url: string, key: keyof typeof TEST_KEYS, capabilities: Record<string, unknown>): Promise<ModernClient> {
  const client = new ModernClient({ name: 'per-user-test-modern', version: '1.0.0' }, { capabilities, versionNegotiation: { mode: 'auto' } })
  await client.connect(new ModernTransport(new URL(`${url}/mcp`), { requestInit: { headers: bearer(key) } }))
  return client
}

async function legacyClient(url: string, key: keyof typeof TEST_KEYS, capabilities: Record<string, unknown>): Promise<LegacyClient> {
  const client = new LegacyClient({ name: 'per-user-test-legacy', version: '1.0.0' }, { capabilities })
  await client.connect(new LegacyTransport(new URL(`${url}/mcp`), { requestInit: { headers: bearer(key) } }))
  return client
}

/** A client without URL elicitation (2025-era v1, declaring nothing): gets the CONSENT_REQUIRED link. */
async function plainCall(url: string, key: keyof typeof TEST_KEYS, tool = 'drive'): Promise<ToolCallResult> {
  const client = await legacyClient(url, key, {})
  try {
    return (await client.callTool({ name: tool, arguments: { ...CALL } })) as ToolCallResult
  } finally {
    await client.close()
  }
}

const oidcStore = (): TokenStore => oidcKeyway.runtime.store
const tokenOf = (store: TokenStore, user: string, connection = 'drive') => store.getToken({ connection, user })

async function storedTokens(store: TokenStore, connection = 'drive'): Promise<string[]> {
  const users: string[] = []
  for await (const { ref } of store.listTokens({ connection })) users.push(ref.user ?? '(shared)')
  return users.sort()
}

/** The upstream answered for alice with alice's own stored token (verified against the provider's JWKS). */
async function expectAlicesOwnToken(r: ToolCallResult, store: TokenStore): Promise<void> {
  expect(r.isError, textOf(r)).toBeFalsy()
  expect(bodyOf(r)).toMatchObject({ sub: ALICE, client_id: 'keyway-drive', path: '/api/files' })
  const stored = await tokenOf(store, ALICE)
  expect(stored?.method).toBe('oauth_u2m_per_user')
  expect(upstream.last()?.headers.authorization).toBe(`Bearer ${stored?.accessToken}`)
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('first use through each kind of MCP client (OIDC sign-in at the link)', () => {
  beforeEach(async () => {
    for (const user of [ALICE, BOB]) await oidcStore().deleteToken({ connection: 'drive', user })
  })

  test('2026-07-28 client declaring URL elicitation: input_required, consent in Chromium, accept, the retry reaches the API as alice [consent:per-user-modern-elicitation]', async () => {
    const seen: { mode?: string; url: string; message: string }[] = []
    const pages: BrowserRun[] = []
    const client = await modernClient(oidcUrl, 'alice', { elicitation: { url: {} } })
    client.setRequestHandler('elicitation/create', async (request) => {
      const p = request.params as { mode?: string; url: string; message: string }
      seen.push(p)
      pages.push(await consentInBrowser(p.url, ALICE))
      return { action: 'accept' }
    })
    try {
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      await expectAlicesOwnToken(r, oidcStore())
    } finally {
      await client.close()
    }
    expect(seen).toHaveLength(1)
    expect(seen[0]?.mode).toBe('url')
    // The link carries the flow id and nothing else; the message names the connection and no secret.
    expect(seen[0]?.url).toMatch(new RegExp(`^${oidcUrl}/connect/[A-Za-z0-9_-]{43}$`))
    expect(seen[0]?.message).toContain('"drive"')
    expect(pages[0]?.status).toBe(200)
    expect(pages[0]?.text).toContain('Connected drive')
    expect(pages[0]?.text).toMatch(/Used by\s+alice@example\.com/)
    expect(pages[0]?.text).toContain('api:read')
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'consent.started', user: ALICE, connection: 'drive' }))
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'consent.granted', user: ALICE, connection: 'drive' }))
  })

  test('2026-07-28 client that accepts before the sign-in is done: the retry waits for the token, then answers [consent:per-user-wait]', async () => {
    let background: Promise<BrowserRun> | undefined
    const client = await modernClient(oidcUrl, 'alice', { elicitation: { url: {} } })
    client.setRequestHandler('elicitation/create', async (request) => {
      // As real clients do: "accept" means the person agreed to open the link, not that they finished.
      background = consentInBrowser((request.params as { url: string }).url, ALICE)
      background.catch(() => undefined)
      return { action: 'accept' }
    })
    const started = Date.now()
    const seen = audit.events.length
    try {
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      await expectAlicesOwnToken(r, oidcStore())
    } finally {
      await client.close()
    }
    expect(Date.now() - started).toBeLessThan(CONSENT_WAIT_MS)
    expect((await background)?.text).toContain('Connected drive')
    // The retry waited first and then ran once: one link made, one call refused, one call served.
    const during = audit.events.slice(seen)
    expect(during.filter((e) => e.type === 'consent.started')).toHaveLength(1)
    expect(during.filter((e) => e.type === 'tool.call').map((e) => ('error' in e ? e.error : undefined) ?? ('status' in e ? e.status : undefined))).toEqual([
      'CONSENT_REQUIRED',
      200,
    ])
  })

  test('2026-07-28 client whose user declines: CONSENT_REQUIRED with the link, nothing stored', async () => {
    const client = await modernClient(oidcUrl, 'alice', { elicitation: { url: {} } })
    client.setRequestHandler('elicitation/create', async () => ({ action: 'decline' }))
    try {
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(
        /^CONSENT_REQUIRED: connecting "drive" was declined; to connect later, open http:\/\/127\.0\.0\.1:\d+\/connect\/\S+ in a browser, sign in, then retry after authorizing$/,
      )
    } finally {
      await client.close()
    }
    expect(await tokenOf(oidcStore(), ALICE)).toBeUndefined()
  })

  test('2025-era v1 client declaring URL elicitation over HTTP: error -32042 with the link; open it; the retry succeeds [consent:per-user-32042]', async () => {
    const client = await legacyClient(oidcUrl, 'alice', { elicitation: { url: {} } })
    try {
      const refused = await client.callTool({ name: 'drive', arguments: { ...CALL } }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(refused).toBeInstanceOf(UrlElicitationRequiredError)
      const e = refused as UrlElicitationRequiredError
      expect(e.code).toBe(-32042)
      expect(e.elicitations).toHaveLength(1)
      const elicitation = e.elicitations[0]
      expect(elicitation?.mode).toBe('url')
      expect(elicitation?.elicitationId).toMatch(/^[0-9a-f-]{36}$/)
      expect(elicitation?.url).toMatch(new RegExp(`^${oidcUrl}/connect/[A-Za-z0-9_-]{43}$`))
      // A client that only shows the error text still shows the link.
      expect(e.message).toContain(elicitation?.url)
      const page = await consentInBrowser(elicitation?.url ?? '', ALICE)
      expect(page.text).toContain('Connected drive')
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      await expectAlicesOwnToken(r, oidcStore())
    } finally {
      await client.close()
    }
  })

  test.each([
    ['a 2025-era v1 client declaring no elicitation', 'legacy', {}],
    ['a 2026-07-28 client declaring form elicitation only (elicitation: {})', 'modern', { elicitation: {} }],
  ] as const)('%s gets the CONSENT_REQUIRED link; open it; the retry succeeds [consent:per-user-text]', async (_what, era, capabilities) => {
    const client = era === 'legacy' ? await legacyClient(oidcUrl, 'alice', capabilities) : await modernClient(oidcUrl, 'alice', capabilities)
    try {
      const first = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      expect(first.isError).toBe(true)
      expect(textOf(first)).toMatch(
        /^CONSENT_REQUIRED: connect your account to "drive" first: open http:\/\/\S+ in a browser, sign in, then retry after authorizing$/,
      )
      const link = linkIn(textOf(first))
      expect(link.startsWith(`${oidcUrl}/connect/`)).toBe(true)
      const page = await consentInBrowser(link, ALICE)
      expect(page.text).toContain('Connected drive')
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      await expectAlicesOwnToken(r, oidcStore())
    } finally {
      await client.close()
    }
  })

  test('the same unopened link is handed out again rather than a new one per call', async () => {
    const first = linkIn(textOf(await plainCall(oidcUrl, 'alice')))
    const second = linkIn(textOf(await plainCall(oidcUrl, 'alice')))
    expect(second).toBe(first)
    // bob gets his own link, never alice's
    expect(linkIn(textOf(await plainCall(oidcUrl, 'bob')))).not.toBe(first)
  })

  test("each user reaches the API with their own token; bob never receives alice's [credential:per-user-isolation]", async () => {
    await consentInBrowser(linkIn(textOf(await plainCall(oidcUrl, 'alice'))), ALICE)
    const bobFirst = await plainCall(oidcUrl, 'bob')
    expect(textOf(bobFirst)).toMatch(/^CONSENT_REQUIRED: /)
    await consentInBrowser(linkIn(textOf(bobFirst)), BOB)
    const asBob = await plainCall(oidcUrl, 'bob')
    expect(bodyOf(asBob)).toMatchObject({ sub: BOB })
    expect(subOfLastBearer()).toBe(BOB)
    const asAlice = await plainCall(oidcUrl, 'alice')
    expect(bodyOf(asAlice)).toMatchObject({ sub: ALICE })
    const [a, b] = [await tokenOf(oidcStore(), ALICE), await tokenOf(oidcStore(), BOB)]
    expect(a?.accessToken).not.toBe(b?.accessToken)
    expect(a?.subject).toBe(ALICE)
    expect(b?.subject).toBe(BOB)
  })
})

describe.skipIf(skipBrowserTests())('the browser user must be the flow user; links and callbacks work once', () => {
  beforeEach(async () => {
    for (const user of [ALICE, BOB]) await oidcStore().deleteToken({ connection: 'drive', user })
  })

  test("bob opening alice's link is refused after signing in, and nothing is stored for anyone [consent:per-user-wrong-user]", async () => {
    const link = linkIn(textOf(await plainCall(oidcUrl, 'alice')))
    const page = await consentInBrowser(link, BOB)
    expect(page.status).toBe(403)
    expect(page.text).toContain('This link was made for someone else')
    expect(page.text).toContain(`You are signed in as ${BOB}`)
    expect(page.text).toContain(`made for user ${ALICE}`)
    expect(page.text).toContain('Nothing was stored')
    expect(await storedTokens(oidcStore())).toEqual([])
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'consent.failed', user: BOB, connection: 'drive', reason: 'wrong-user' }))
    // The link is spent: alice gets a new one, and the old one says so.
    const fresh = linkIn(textOf(await plainCall(oidcUrl, 'alice')))
    expect(fresh).not.toBe(link)
    const again = await browser.newPage()
    try {
      const res = await again.goto(link)
      expect(res?.status()).toBe(410)
      expect(await again.locator('main').innerText()).toContain('This link has expired or was already used')
    } finally {
      await again.context().close()
    }
  })

  test('a replayed callback is refused with the used-link page and changes nothing [consent:per-user-replay]', async () => {
    const page = await consentInBrowser(linkIn(textOf(await plainCall(oidcUrl, 'alice'))), ALICE)
    const stored = await tokenOf(oidcStore(), ALICE)
    const providerCallback = page.callbacks.at(-1)
    expect(providerCallback).toContain('code=')
    const replay = await browser.newPage()
    try {
      const res = await replay.goto(providerCallback ?? '')
      expect(res?.status()).toBe(410)
      expect(await replay.locator('main').innerText()).toContain('This link has expired or was already used')
    } finally {
      await replay.context().close()
    }
    expect((await tokenOf(oidcStore(), ALICE))?.accessToken).toBe(stored?.accessToken)
  })
})

describe.skipIf(skipBrowserTests())('no refresh token, revocation and keyway credentials --user', () => {
  test('a token response without a refresh token is a loud warning on the page, in the audit log and in keyway credentials [consent:no-refresh-token-warning]', async () => {
    const first = await plainCall(oidcUrl, 'alice', 'drive_nort')
    const page = await consentInBrowser(linkIn(textOf(first)), ALICE)
    expect(page.status).toBe(200)
    expect(page.text).toContain('Connected drive_nort, but access will stop at first expiry')
    expect(page.text).toContain('WARNING: the provider issued no refresh token')
    expect(page.text).toContain('offline_access')
    expect(audit.events).toContainEqual(
      expect.objectContaining({ type: 'consent.granted', user: ALICE, connection: 'drive_nort', warning: expect.stringContaining('no refresh token') }),
    )
    expect(bodyOf(await plainCall(oidcUrl, 'alice', 'drive_nort'))).toMatchObject({ sub: ALICE })
    const io = captureIo(ENV, oidcDir)
    expect(await credentials(['--config', oidcFile, '--user', ALICE, '--connection', 'drive_nort'], io)).toBe(0)
    expect(io.outLines.join('\n')).toMatch(/^drive_nort\s+alice@example\.com\s+oauth_u2m_per_user\s.*\bNO\b.*WARNING: no refresh token was issued/m)
    const json = captureIo(ENV, oidcDir)
    expect(await credentials(['--config', oidcFile, '--user', ALICE, '--connection', 'drive_nort', '--json'], json)).toBe(0)
    expect(json.outLines.map((l) => JSON.parse(l) as unknown)).toEqual([
      expect.objectContaining({
        connection: 'drive_nort',
        user: ALICE,
        method: 'oauth_u2m_per_user',
        refreshable: false,
        subject: ALICE,
        warnings: expect.arrayContaining([expect.stringContaining('no refresh token was issued')]),
      }),
    ])
  })

  test('keyway credentials --user lists only that user; revoke C --user deletes theirs (and revokes at the provider); their next call asks again [cli:credentials-per-user]', async () => {
    for (const [user, key] of [
      [ALICE, 'alice'],
      [BOB, 'bob'],
    ] as const) {
      if (!(await tokenOf(oidcStore(), user))) await consentInBrowser(linkIn(textOf(await plainCall(oidcUrl, key))), user)
    }
    const list = captureIo(ENV, oidcDir)
    expect(await credentials(['--config', oidcFile, '--user', ALICE], list)).toBe(0)
    const rows = list.outLines.slice(1)
    expect(rows.length).toBeGreaterThan(0)
    expect(rows.every((l) => /^\S+\s+alice@example\.com\s+oauth_u2m_per_user\b/.test(l))).toBe(true)
    expect(list.outLines.join('\n')).toMatch(/^drive\s+alice@example\.com\s+oauth_u2m_per_user\s+\S+ \(.+\)\s+yes\s+/m)
    const aliceToken = await tokenOf(oidcStore(), ALICE)
    for (const secret of [aliceToken?.accessToken ?? 'x', aliceToken?.refreshToken ?? 'x', DRIVE_SECRET]) expect(list.outLines.join('\n')).not.toContain(secret)

    const revocations = as.requestCount('/token/revocation')
    const io = captureIo(ENV, oidcDir)
    expect(await credentials(['revoke', 'drive', '--user', ALICE, '--config', oidcFile], io)).toBe(0)
    expect(io.outLines).toHaveLength(1)
    expect(io.outLines[0]).toMatch(/^drive alice@example\.com: deleted; /)
    expect(as.requestCount('/token/revocation')).toBeGreaterThan(revocations)
    expect(await tokenOf(oidcStore(), ALICE)).toBeUndefined()
    expect(await tokenOf(oidcStore(), BOB)).toBeDefined()
    expect(textOf(await plainCall(oidcUrl, 'alice'))).toMatch(/^CONSENT_REQUIRED: /)
    expect(bodyOf(await plainCall(oidcUrl, 'bob'))).toMatchObject({ sub: BOB })
  })
})

describe.skipIf(skipBrowserTests())('API-key mode (confirmation page), expiry and dead grants', () => {
  test('the confirmation page names the user the link was made for, so someone else would notice; opening it stores nothing [consent:per-user-confirm-page]', async () => {
    const link = linkIn(textOf(await plainCall(keyUrl, 'alice')))
    const page = await browser.newPage()
    try {
      const res = await page.goto(link)
      expect(res?.status()).toBe(200)
      const text = await page.locator('main').innerText()
      expect(text).toContain(`This link was made for user ${ALICE} to sign in to connection drive`)
      expect(text).toMatch(/The token will be used by\s+alice@example\.com/)
      expect(text).toContain(`This connects the provider account you sign in with to Keyway user ${ALICE}. If you are not ${ALICE}, stop.`)
    } finally {
      await page.context().close()
    }
    expect(await storedTokens(keyStore)).toEqual([])
  })

  test('a callback with a wrong state is refused and does not spend the real one [consent:per-user-state]', async () => {
    const CAROL = 'carol@example.com'
    const link = linkIn(textOf(await plainCall(keyUrl, 'carol')))
    const context = await browser.newContext()
    const page = await context.newPage()
    // The browser goes to the provider; the provider's answer is obtained by a scripted sign-in
    // with the same authorization request, so it is held back instead of reaching Keyway.
    const authorizationRequests: string[] = []
    page.on('request', (r) => {
      if (r.url().startsWith(`${as.issuer}/auth?`)) authorizationRequests.push(r.url())
    })
    try {
      await page.goto(link)
      await page.click('button[type="submit"]')
      await page.waitForURL((u) => u.origin === as.issuer, { timeout: 10_000 })
      const answer = await as.completeLogin(authorizationRequests[0] ?? '', CAROL)
      expect(answer.pathname).toBe(CALLBACK_PATH)
      const forged = new URL(answer)
      forged.searchParams.set('state', randomBytes(32).toString('base64url'))
      const refused = await page.goto(forged.href)
      expect(refused?.status()).toBe(410)
      expect(await page.locator('main').innerText()).toContain('This link has expired or was already used')
      expect(await tokenOf(keyStore, CAROL)).toBeUndefined()
      const real = await page.goto(answer.href)
      expect(real?.status()).toBe(200)
      expect(await page.locator('main').innerText()).toContain('Connected drive')
    } finally {
      await context.close()
    }
    expect(bodyOf(await plainCall(keyUrl, 'carol'))).toMatchObject({ sub: CAROL })
  })

  test('an expired link is refused with the expired-link page [consent:per-user-expired]', async () => {
    const link = linkIn(textOf(await plainCall(keyUrl, 'bob')))
    offset += 11 * 60_000 // past the 10-minute flow lifetime
    const page = await browser.newPage()
    try {
      const res = await page.goto(link)
      expect(res?.status()).toBe(410)
      const text = await page.locator('main').innerText()
      expect(text).toContain('This link has expired or was already used')
      expect(text).toContain('Sign-in links work once and for 10 minutes. Nothing was stored.')
    } finally {
      await page.context().close()
    }
    // And the caller is simply given a new link.
    expect(linkIn(textOf(await plainCall(keyUrl, 'bob')))).not.toBe(link)
  })

  test('cancelled at the provider while the client waits: an explaining page, and the waiting call answers with the reason and a new link [consent:per-user-provider-error]', async () => {
    let background: Promise<string> | undefined
    const cancelAtProvider = async (link: string): Promise<string> => {
      const page = await browser.newPage()
      try {
        await page.goto(link)
        await page.click('button[type="submit"]')
        await page.waitForURL((u) => u.origin === as.issuer, { timeout: 10_000 })
        await page.fill('input[name="login"]', BOB)
        await page.fill('input[name="password"]', 'any')
        await page.click('form button[type="submit"]')
        await page.waitForSelector('input[name="prompt"][value="consent"]', { state: 'attached', timeout: 10_000 })
        await page.click('a[href$="/abort"]') // devInteractions' "Cancel": error=access_denied
        await page.waitForURL((u) => u.pathname === CALLBACK_PATH, { timeout: 10_000 })
        return await page.locator('main').innerText()
      } finally {
        await page.context().close()
      }
    }
    const client = await modernClient(keyUrl, 'bob', { elicitation: { url: {} } })
    client.setRequestHandler('elicitation/create', async (request) => {
      background = cancelAtProvider((request.params as { url: string }).url)
      background.catch(() => undefined)
      return { action: 'accept' }
    })
    try {
      const r = (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(
        /^CONSENT_REQUIRED: the sign-in for "drive" did not complete \(access_denied\); open http:\/\/127\.0\.0\.1:\d+\/connect\/\S+ in a browser, sign in, then retry after authorizing$/,
      )
    } finally {
      await client.close()
    }
    const page = (await background) ?? ''
    expect(page).toContain('Access was not granted')
    expect(page).toContain('access_denied')
    expect(page).toContain('call the tool again from your agent to get a new link')
    expect(await tokenOf(keyStore, BOB)).toBeUndefined()
    expect(keyAudit.events).toContainEqual(expect.objectContaining({ type: 'consent.failed', connection: 'drive', reason: 'access_denied' }))
  })

  test('invalid_grant on refresh deletes the record and leads back to consent; consenting again works [refresh:per-user-invalid-grant]', async () => {
    const page = await consentInBrowser(linkIn(textOf(await plainCall(keyUrl, 'alice'))), ALICE)
    expect(page.text).toContain('Connected drive')
    await expectAlicesOwnToken(await plainCall(keyUrl, 'alice'), keyStore)
    const stored = await tokenOf(keyStore, ALICE)
    if (!stored?.refreshToken) throw new Error('no refresh token')
    // The grant is revoked at the provider (RFC 7009): the stored refresh token is dead.
    const res = await fetch(`${as.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`keyway-drive:${DRIVE_SECRET}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ token: stored.refreshToken, token_type_hint: 'refresh_token' }),
    })
    expect(res.status).toBe(200)
    offset += 601_000 // the access token has expired: the next call refreshes
    const r = await plainCall(keyUrl, 'alice')
    expect(r.isError).toBe(true)
    expect(textOf(r)).toMatch(/^CONSENT_REQUIRED: connect your account to "drive" first: open /)
    expect(await tokenOf(keyStore, ALICE)).toBeUndefined()
    expect(keyAudit.events).toContainEqual(
      expect.objectContaining({ type: 'credential.refresh_failed', connection: 'drive', user: ALICE, reason: 'invalid_grant' }),
    )
    expect(keyAudit.events).toContainEqual(expect.objectContaining({ type: 'consent.started', connection: 'drive', user: ALICE, reason: 'invalid_grant' }))
    await consentInBrowser(linkIn(textOf(r)), ALICE)
    await expectAlicesOwnToken(await plainCall(keyUrl, 'alice'), keyStore)
  })

  test("refresh per user: an expired token is renewed with that user's refresh token, once [refresh:per-user]", async () => {
    const before = await tokenOf(keyStore, ALICE)
    if (!before?.refreshToken) throw new Error('no token')
    const hits = as.tokenEndpointHits('keyway-drive')
    offset += 601_000
    const results = await Promise.all([plainCall(keyUrl, 'alice'), plainCall(keyUrl, 'alice'), plainCall(keyUrl, 'alice')])
    for (const r of results) expect(bodyOf(r)).toMatchObject({ sub: ALICE })
    expect(as.tokenEndpointHits('keyway-drive') - hits).toBe(1)
    const after = await tokenOf(keyStore, ALICE)
    expect(after?.accessToken).not.toBe(before.accessToken)
    expect(after?.lastRefreshAt).toBeDefined()
    expect(keyAudit.events).toContainEqual(
      expect.objectContaining({ type: 'credential.refreshed', connection: 'drive', user: ALICE, authMethod: 'oauth_u2m_per_user' }),
    )
  })
})

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('stdio: the built bin, a live connection', () => {
  let configFile: string
  beforeAll(async () => {
    ;({ file: configFile } = await writeTempConfig(`
version: 1
server: { publicUrl: "http://127.0.0.1:${stdioPort}", host: 127.0.0.1, port: ${stdioPort} }
identity: { stdioUser: ${ALICE} }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:${driveYaml('drive', 'openid, offline_access, api:read')}${grantsYaml.replace(/\n.*drive_nort.*$/m, '')}
`))
  })

  const childEnv = (): Record<string, string> => ({
    ...Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined)),
    ...ENV,
  })

  test.each(['legacy-v1', 'modern'] as const)(
    'a %s stdio client declaring URL elicitation is asked with elicitation in URL mode; it accepts, signs in, and the waiting call answers as alice [consent:per-user-stdio]',
    async (kind) => {
      const args = [KEYWAY_BIN, 'serve', '--stdio', '--no-watch', '--config', configFile]
      let stderr = ''
      const seen: { mode?: string; url: string }[] = []
      let background: Promise<BrowserRun> | undefined
      const open = (p: { mode?: string; url: string }): { action: 'accept' } => {
        seen.push(p)
        // Accept at once (the person agreed to open the link); the sign-in finishes while the call waits.
        background = consentInBrowser(p.url, ALICE)
        background.catch(() => undefined)
        return { action: 'accept' }
      }
      let call: () => Promise<ToolCallResult>
      let close: () => Promise<void>
      if (kind === 'legacy-v1') {
        const transport = new LegacyStdio({ command: process.execPath, args, env: childEnv(), stderr: 'pipe' })
        transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
        const client = new LegacyClient({ name: 'stdio-v1', version: '1.0.0' }, { capabilities: { elicitation: { url: {} } } })
        client.setRequestHandler(ElicitRequestSchema, async (request) => open(request.params as { mode?: string; url: string }))
        await client.connect(transport)
        call = async () => (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
        close = () => client.close()
      } else {
        const transport = new ModernStdio({ command: process.execPath, args, env: childEnv(), stderr: 'pipe' })
        transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
        const client = new ModernClient(
          { name: 'stdio-v2', version: '1.0.0' },
          { capabilities: { elicitation: { url: {} } }, versionNegotiation: { mode: 'auto' } },
        )
        client.setRequestHandler('elicitation/create', async (request) => open(request.params as { mode?: string; url: string }))
        await client.connect(transport)
        call = async () => (await client.callTool({ name: 'drive', arguments: { ...CALL } })) as ToolCallResult
        close = () => client.close()
      }
      try {
        const r = await call()
        expect(r.isError, `${textOf(r)}\n${stderr}`).toBeFalsy()
        expect(bodyOf(r)).toMatchObject({ sub: ALICE, client_id: 'keyway-drive' })
        expect(subOfLastBearer()).toBe(ALICE)
        expect(seen).toHaveLength(1)
        expect(seen[0]?.mode).toBe('url')
        expect(seen[0]?.url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${stdioPort}/connect/[A-Za-z0-9_-]{43}$`))
        const page = await background
        expect(page?.text).toContain('Connected drive')
        // The next call needs no consent.
        expect(bodyOf(await call())).toMatchObject({ sub: ALICE })
        expect(seen).toHaveLength(1)
        expect(stderr).not.toContain(DRIVE_SECRET)
      } finally {
        await close()
      }
    },
  )
})
