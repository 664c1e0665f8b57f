/**
 * Per-user OAuth MCP servers behind Keyway (issue 13, README "Upstream MCP servers"), with real
 * peers only: a real oidc-provider issuing JWT access tokens for `https://notes.example.test/`; two
 * protected MCP servers of the tests' own (2026-07-28 stateless, and 2025-era sessionful) that
 * verify every bearer against the provider's JWKS (jose) and answer as its `sub`; headless
 * Chromium signing people in; `keyway authorize` run in-process against the same SQLite store as
 * the Keyway serving the MCP endpoint; the official MCP clients of both eras. The catalog is read
 * with the owner's token, and only once the owner has connected; every call goes with the caller's
 * own token after their consent; two users never share an upstream session. Only 127.0.0.1 is used.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { run as authorize } from '../../tools/authorize.js'
import { launchBrowser, skipBrowserTests, type TestBrowser } from '../helpers/browser.js'
import { consentInBrowser as consentInBrowserAt, type BrowserRun } from '../helpers/consent-browser.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startProtectedMcpServer, type ProtectedMcpServer } from '../helpers/start-upstream-mcp.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { captureIo } from '../helpers/cli-io.js'
import { waitFor } from '../helpers/wait.js'

/** The notes servers' resource indicator (RFC 8707) and the `aud` they require; nothing listens there. */
const API = 'https://notes.example.test/'
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'
const NOTES_SECRET = 'notes-client-secret-0123456789abcdef'
const API_TOKEN = 'api-bearer-token-0123456789abcdef'
const ENV = { NOTES_SECRET, API_TOKEN, KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }
const LINK = /(http:\/\/127\.0\.0\.1:\d+\/connect\/[A-Za-z0-9_-]{43})\b/

type User = keyof typeof TEST_KEYS

let as: AuthorizationServer
let modern: ProtectedMcpServer
let legacy: ProtectedMcpServer
let api: Upstream
let browser: TestBrowser
let keyway: HttpKeyway
let url: string
let file: string
let dir: string
const audit = createMemoryAuditLog()

/** The `auth` block of every per-user connection here: the test provider's client, tokens for the notes resource. */
const perUserAuth = (): string => `
    auth:
      type: oauth_u2m_per_user
      issuer: "${as.issuer}"
      clientId: keyway-notes
      clientSecret: { env: NOTES_SECRET }
      scopes: [openid, offline_access, notes:read]
      authorizationParams: { prompt: consent, resource: "${API}" }
      tokenParams: { resource: "${API}" }`

beforeAll(async () => {
  if (skipBrowserTests()) return
  const port = await freePort()
  url = `http://127.0.0.1:${port}`
  as = await startAuthorizationServer({
    clients: [
      {
        client_id: 'keyway-notes',
        client_secret: NOTES_SECRET,
        redirect_uris: [`${url}${CALLBACK_PATH}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['notes:read'],
    resources: { [API]: { scope: 'notes:read' } },
  })
  // Both notes servers accept only a JWT access token from this provider for this audience, and act as its `sub`.
  const jwks = createRemoteJWKSet(new URL(as.jwksUri))
  const verify = async (bearer: string): Promise<string | undefined> => {
    try {
      const { payload } = await jwtVerify(bearer, jwks, { issuer: as.issuer, audience: API, typ: 'at+jwt' })
      return payload.sub
    } catch {
      return undefined
    }
  }
  modern = await startProtectedMcpServer({ verify, era: 'modern' })
  legacy = await startProtectedMcpServer({ verify, era: 'legacy' })
  // An HTTP API every grantee may use, so a tools/list without the notes tools is still a list.
  api = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"ok":true}')
  })
  const auth = perUserAuth()
  const loaded = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${url}, host: 127.0.0.1, port: ${port} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "sqlite://./keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  api:
    host: ${api.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: ${ALICE} }
    auth: { type: bearer_token, token: { env: API_TOKEN } }
  notes:
    host: ${modern.origin}
    basePath: /mcp/
    protocol: mcp
    isMcpConnection: true
    owner: { user: ${ALICE} }${auth}
  notes_legacy:
    host: ${legacy.origin}
    basePath: /mcp/
    protocol: mcp
    isMcpConnection: true
    owner: { user: ${ALICE} }${auth}
    mcp: { catalog: { credential: owner } }
  notes_each:
    host: ${modern.origin}
    basePath: /mcp/
    protocol: mcp
    isMcpConnection: true
    owner: { user: ${ALICE} }${auth}
    mcp: { prefix: each, catalog: { credential: caller } }
  drive:
    host: ${api.origin}
    basePath: /drive
    isMcpConnection: true
    owner: { user: ${ALICE} }${auth}
grants:
  - { privilege: USE CONNECTION, on: api, to: { user: ${BOB} } }
  - { privilege: USE CONNECTION, on: notes, to: { user: ${BOB} } }
  - { privilege: USE CONNECTION, on: notes_legacy, to: { user: ${BOB} } }
  - { privilege: USE CONNECTION, on: notes, to: { user: carol@example.com } }
`,
    ENV,
  )
  ;({ file, dir } = loaded)
  // Keyway holds the configured port, so `keyway authorize` finds it and lets it complete the sign-in.
  keyway = await startHttp(loaded.snapshot, { audit, log: createMemoryLogger() })
  browser = await launchBrowser()
})

afterAll(async () => {
  await keyway?.close()
  await browser?.close()
  await modern?.close()
  await legacy?.close()
  await api?.close()
  await as?.close()
})

// ---------------------------------------------------------------------------------------------
// Helpers

/** A person opens a link in a fresh browser as `user`: the confirmation page (API-key mode), then sign-in and consent at the provider. */
const consentInBrowser = (link: string, user: string): Promise<BrowserRun> => consentInBrowserAt(browser, as.issuer, link, user)

const linkIn = (text: string): string => {
  const m = LINK.exec(text)
  if (!m?.[1]) throw new Error(`no consent link in: ${text}`)
  return m[1]
}

/** The `sub` of a `Bearer <JWT>` header value (the tokens are verified by the servers; this only reads them). */
const subOf = (authorization: string | undefined): unknown => {
  const jwt = (authorization ?? '').replace(/^Bearer /, '')
  return (JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: unknown }).sub
}

/** (JSON-RPC method, user) of every authenticated request the 2026-07-28 server answered, in order. */
const modernCalls = (): { method: string; user: string }[] => modern.rec.methods.map((method, i) => ({ method, user: modern.rec.users[i] ?? '' }))

/** A 2025-era v1 client declaring nothing (so no URL elicitation): one call, then it disconnects. */
async function plainCall(user: User, tool: string): Promise<ToolCallResult> {
  const client = await connectClient('legacy-v1', `${url}/mcp`, { bearer: TEST_KEYS[user] })
  try {
    return await client.callTool(tool, {})
  } finally {
    await client.close()
  }
}

async function listNames(user: User): Promise<string[]> {
  const client = await connectClient('modern', `${url}/mcp`, { bearer: TEST_KEYS[user] })
  try {
    return await client.listToolNames()
  } finally {
    await client.close()
  }
}

/** `keyway authorize <connection>` in-process; the owner opens the printed link as alice. Returns its output. */
async function ownerConnects(connection: string): Promise<{ code: number; out: string[]; err: string; page: BrowserRun }> {
  const io = captureIo(ENV, dir)
  const exit = authorize([connection, '--config', file, '--timeout', '60s'], io)
  const link = await waitFor(
    'the link',
    () => io.outLines.find((l) => l.startsWith(`${url}/connect/`)) ?? (io.errLines.some((l) => l.includes('authorize:')) ? io.errLines.join('\n') : undefined),
  )
  if (!link.startsWith(url)) throw new Error(`keyway authorize failed: ${link}`)
  const page = await consentInBrowser(link, ALICE)
  return { code: await exit, out: io.outLines, err: io.errLines.join('\n'), page }
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('per-user OAuth MCP servers: owner catalog, consent per caller, sessions per user', () => {
  test('before the owner connected no notes__ tool is listed (the other tools are); keyway authorize notes, then they are, read with the owner token [mcp:catalog-credential]', async () => {
    for (const user of ['alice', 'bob'] as const) {
      const names = await listNames(user)
      expect(names).toContain('api')
      expect(names.filter((n) => n.startsWith('notes'))).toEqual([])
    }
    // A caller whose only source is that connection gets an error naming the reason, not an empty list (README "Failures").
    const carol = await connectClient('modern', `${url}/mcp`, { bearer: TEST_KEYS.carol })
    try {
      await expect(carol.listToolNames()).rejects.toThrow(
        /UPSTREAM_UNAVAILABLE: tools of "notes" are unavailable: the owner alice@example\.com has not connected/,
      )
    } finally {
      await carol.close()
    }
    // Without the owner's token nothing was sent to either notes server.
    expect(modern.rec.authorizations).toEqual([])
    expect(legacy.rec.authorizations).toEqual([])
    // Calling a tool that is not listed answers like an unknown tool.
    await expect(plainCall('bob', 'notes__whoami')).rejects.toThrow(/unknown tool "notes__whoami"/)

    const { code, out, err, page } = await ownerConnects('notes')
    expect(err).toContain(`sign-in of ${ALICE}'s own account to "notes" (oauth_u2m_per_user), which reads its MCP tool list`)
    expect(err).toContain('completes the sign-in (it uses the same store)')
    expect(out).toHaveLength(1)
    expect(page.status).toBe(200)
    expect(page.text).toContain('Connected notes')
    expect(code).toBe(0)
    expect(err).toContain('connection "notes" is signed in')
    expect(err).toContain('refresh token: yes')
    const stored = await keyway.runtime.store.getToken({ connection: 'notes', user: ALICE })
    expect(stored).toMatchObject({ method: 'oauth_u2m_per_user', subject: ALICE })

    // bob asks first (he has connected nothing): the list is still read, with the owner's token.
    for (const user of ['bob', 'carol', 'alice'] as const) {
      const names = await listNames(user)
      expect(names).toEqual(expect.arrayContaining(['notes__whoami', 'notes__echo', 'notes__slow_progress']))
      // notes_legacy's owner has not connected it yet.
      expect(names.filter((n) => n.startsWith('notes_legacy'))).toEqual([])
    }
    // The upstream saw only alice's token, and tools/list requests among them.
    const seen = modernCalls()
    expect(seen.filter((c) => c.method === 'tools/list').length).toBeGreaterThan(0)
    expect(new Set(seen.map((c) => c.user))).toEqual(new Set([ALICE]))
    expect(modern.rec.authorizations.every((a) => subOf(a) === ALICE)).toBe(true)
    expect(modern.rec.authorizations).toContain(`Bearer ${stored?.accessToken}`)
  })

  test("bob's first call asks for his consent (CONSENT_REQUIRED link); after it the call reaches the upstream with bob's token while the catalog stays alice's [mcp:consent]", async () => {
    const before = modernCalls().length
    const first = await plainCall('bob', 'notes__whoami')
    expect(first.isError).toBe(true)
    expect(textOf(first)).toMatch(
      /^CONSENT_REQUIRED: connect your account to "notes" first: open http:\/\/\S+ in a browser, sign in, then retry after authorizing$/,
    )
    // Nothing was sent upstream for bob without his token.
    expect(
      modernCalls()
        .slice(before)
        .filter((c) => c.method === 'tools/call'),
    ).toEqual([])
    const page = await consentInBrowser(linkIn(textOf(first)), BOB)
    expect(page.status).toBe(200)
    expect(page.text).toContain('Connected notes')
    expect(page.text).toMatch(/Used by\s+bob@example\.com/)

    const r = await plainCall('bob', 'notes__whoami')
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(r.structuredContent).toEqual({ user: BOB })
    expect(textOf(r)).toBe(BOB)
    const seen = modernCalls()
    expect(seen.filter((c) => c.method === 'tools/call')).toEqual([{ method: 'tools/call', user: BOB }])
    expect(seen.filter((c) => c.method === 'tools/list').every((c) => c.user === ALICE)).toBe(true)
    const bobs = await keyway.runtime.store.getToken({ connection: 'notes', user: BOB })
    expect(modern.rec.authorizations.at(-1)).toBe(`Bearer ${bobs?.accessToken}`)
    expect(audit.events).toContainEqual(
      expect.objectContaining({ type: 'tool.call', user: BOB, connection: 'notes', tool: 'whoami', method: 'tools/call', decision: 'allow' }),
    )
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'consent.granted', user: BOB, connection: 'notes' }))
  })

  test('a 2026-07-28 client declaring URL elicitation: input_required, consent in Chromium, accept, the retry answers as bob [mcp:consent]', async () => {
    await keyway.runtime.store.deleteToken({ connection: 'notes', user: BOB })
    const seen: { mode?: string; url: string; message: string }[] = []
    const pages: BrowserRun[] = []
    const client = new ModernClient(
      { name: 'per-user-mcp-modern', version: '1.0.0' },
      { capabilities: { elicitation: { url: {} } }, versionNegotiation: { mode: 'auto' } },
    )
    client.setRequestHandler('elicitation/create', async (request) => {
      const p = request.params as { mode?: string; url: string; message: string }
      seen.push(p)
      pages.push(await consentInBrowser(p.url, BOB))
      return { action: 'accept' }
    })
    await client.connect(new ModernTransport(new URL(`${url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${TEST_KEYS.bob}` } } }))
    const calls = modernCalls().filter((c) => c.method === 'tools/call').length
    try {
      const r = (await client.callTool({ name: 'notes__whoami', arguments: {} })) as ToolCallResult
      expect(r.isError, textOf(r)).toBeFalsy()
      expect(r.structuredContent).toEqual({ user: BOB })
    } finally {
      await client.close()
    }
    expect(seen).toHaveLength(1)
    expect(seen[0]?.mode).toBe('url')
    expect(seen[0]?.url).toMatch(new RegExp(`^${url}/connect/[A-Za-z0-9_-]{43}$`))
    expect(seen[0]?.message).toContain('"notes"')
    expect(pages[0]?.text).toContain('Connected notes')
    // One upstream call, after the consent, with bob's new token.
    expect(
      modernCalls()
        .filter((c) => c.method === 'tools/call')
        .slice(calls),
    ).toEqual([{ method: 'tools/call', user: BOB }])
    const bobs = await keyway.runtime.store.getToken({ connection: 'notes', user: BOB })
    expect(modern.rec.authorizations.at(-1)).toBe(`Bearer ${bobs?.accessToken}`)
  })

  test("sessionful upstream: alice's and bob's calls each reuse their own session; no session is ever used with another user's token [mcp:sessions]", async () => {
    const owner = await ownerConnects('notes_legacy')
    expect(owner.code).toBe(0)
    expect((await listNames('bob')).filter((n) => n.startsWith('notes_legacy__'))).toEqual(
      expect.arrayContaining(['notes_legacy__whoami', 'notes_legacy__echo']),
    )
    const first = await plainCall('bob', 'notes_legacy__whoami')
    expect(textOf(first)).toMatch(/^CONSENT_REQUIRED: connect your account to "notes_legacy" first/)
    expect((await consentInBrowser(linkIn(textOf(first)), BOB)).text).toContain('Connected notes_legacy')

    const rec = legacy.rec
    /** The (user, session id) of each POST the server received in a window; a GET stream (list_changed) is left aside. */
    const postsIn = (from: number, to: number): { user: unknown; sid: string | undefined }[] =>
      rec.headers
        .slice(from, to)
        .map((h, i) => ({ h, user: subOf(rec.authorizations[from + i]) }))
        .filter(({ h }) => h['content-type'] !== undefined)
        .map(({ h, user }) => ({ user, sid: typeof h['mcp-session-id'] === 'string' ? h['mcp-session-id'] : undefined }))
    const sessionsOf = new Map<string, Set<string>>()
    for (const [user, key] of [
      [ALICE, 'alice'],
      [BOB, 'bob'],
      [ALICE, 'alice'],
      [BOB, 'bob'],
    ] as const) {
      const from = rec.headers.length
      const initializes = rec.initializeCount
      const second = sessionsOf.has(user)
      const r = await plainCall(key, 'notes_legacy__whoami')
      expect(r.isError, textOf(r)).toBeFalsy()
      expect(r.structuredContent).toEqual({ user })
      const posts = postsIn(from, rec.headers.length)
      expect(posts.length).toBeGreaterThan(0)
      expect(posts.every((p) => p.user === user)).toBe(true)
      const sids = new Set(posts.map((p) => p.sid).filter((s): s is string => s !== undefined))
      expect(sids.size).toBe(1)
      if (second) {
        // The second call reused the session of the first: no new initialize, the same id.
        expect(rec.initializeCount).toBe(initializes)
        expect(sids).toEqual(sessionsOf.get(user))
      } else sessionsOf.set(user, sids)
    }
    const [aliceSid] = sessionsOf.get(ALICE) ?? []
    const [bobSid] = sessionsOf.get(BOB) ?? []
    expect(aliceSid).toBeDefined()
    expect(bobSid).toBeDefined()
    expect(aliceSid).not.toBe(bobSid)
    expect(rec.userBySession.get(aliceSid ?? '')).toBe(ALICE)
    expect(rec.userBySession.get(bobSid ?? '')).toBe(BOB)
    // Over the whole run: every request carrying a session id came with the token of the user who opened it.
    const used = rec.headers.flatMap((h, i) =>
      typeof h['mcp-session-id'] === 'string' ? [{ sid: h['mcp-session-id'], user: subOf(rec.authorizations[i]) }] : [],
    )
    expect(used.length).toBeGreaterThan(0)
    for (const { sid, user } of used) expect(user, sid).toBe(rec.userBySession.get(sid))
    expect(new Set(rec.userBySession.values())).toEqual(new Set([ALICE, BOB]))
  })

  test('keyway authorize refuses a per-user HTTP connection and a per-user MCP connection whose catalog is read per caller, with the existing message', async () => {
    const hint =
      'with oauth_u2m_per_user each user connects on first use from their agent; only the owner of a protocol: mcp connection whose catalog.credential is owner signs in here'
    for (const name of ['drive', 'notes_each']) {
      const io = captureIo(ENV, dir)
      expect(await authorize([name, '--config', file], io)).toBe(1)
      expect(io.outLines).toEqual([])
      // The last line is the refusal (a config warning such as the private-network one may come first).
      expect(io.errLines.at(-1)).toBe(`keyway authorize: keyway authorize is for oauth_u2m_shared connections; "${name}" uses oauth_u2m_per_user (${hint})`)
    }
    expect(await keyway.runtime.store.getToken({ connection: 'drive', user: ALICE })).toBeUndefined()
  })
})
