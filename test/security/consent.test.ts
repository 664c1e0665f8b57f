/**
 * Attacks on the binding between a Keyway user, the person at the browser and the provider
 * account (issue 10), with real peers only: oidc-provider on 127.0.0.1 (its ID tokens carry
 * `email` and `email_verified`; a login `unverified+X` is an account claiming X without having
 * verified it), Keyway in API-key mode (the consent link is a bearer capability), headless
 * Chromium doing the sign-ins, real MCP clients, and a loopback upstream whose request count
 * proves that nothing was sent on a refusal.
 *
 * - link swap both ways (the caller's link completed by someone else's account, and the
 *   victim's link completed by the attacker's), with `auth.accountMatch` by email and by sub:
 *   nothing stored, both accounts named, `consent.account_mismatch`, the waiting call ends;
 * - without `accountMatch`: the page and the audit name the provider account;
 * - the confirmation form: replayed, cookie-only, field-only, forged and cross-link pairs refused;
 * - the callback page: provider error text only for a live flow, escaped and bounded;
 * - `keyway validate` warns about per-user connections in API-key mode without `accountMatch`.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { FORWARDED_LINK_WARNING } from '../../src/config/load.js'
import { connectPath, createConsentFlow } from '../../src/consent/records.js'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import type { TokenStore } from '../../src/store/index.js'
import type { CliIo } from '../../tools/cli.js'
import { run as validate } from '../../tools/validate.js'
import { launchBrowser, skipBrowserTests, type TestBrowser } from '../helpers/browser.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS, writeTempConfig } from '../helpers/config.js'
import { consentInBrowser, type BrowserRun } from '../helpers/consent-browser.js'
import { freePort } from '../helpers/free-port.js'
import { textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const API = 'https://drive.example.test/'
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'
const CAROL = 'carol@example.com'
const DRIVE_SECRET = 'drive-client-secret-0123456789abcdef'
const ENV = { DRIVE_SECRET, KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }
const CALL = { method: 'GET', path: '/files' } as const
/** devInteractions login name of an account that claims `email` without having verified it. */
const UNVERIFIED_PREFIX = 'unverified+'
/** Text an attacker puts into a callback URL. */
const ATTACK_TEXT = 'Your account is locked. Call +1-555-0100 <a href="//evil.test">here</a>'

let as: AuthorizationServer
let upstream: Upstream
let browser: TestBrowser
let keyway: HttpKeyway
let keyUrl: string
const audit = createMemoryAuditLog()

const perUser = (name: string, accountMatch: string | undefined): string => `
  ${name}:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      issuer: "${as.issuer}"
      clientId: keyway-drive
      clientSecret: { env: DRIVE_SECRET }
      scopes: [openid, email, api:read]
      authorizationParams: { prompt: consent, resource: "${API}" }
      tokenParams: { resource: "${API}" }${
        accountMatch === undefined
          ? ''
          : `
      accountMatch: ${accountMatch}`
      }`

const connectionsYaml = (): string => `
connections:${perUser('drive', undefined)}${perUser('drive_email', '{ claim: email }')}${perUser('drive_sub', `{ claim: sub, map: { "${CAROL}": "${CAROL}", "${BOB}": "${BOB}" } }`)}
  crm:
    host: ${upstream.origin}
    owner: { user: ${CAROL} }
    auth:
      type: oauth_u2m_shared
      issuer: "${as.issuer}"
      clientId: keyway-drive
      clientSecret: { env: DRIVE_SECRET }
      scopes: [openid, email, api:read]
      authorizationParams: { prompt: consent, resource: "${API}" }
      tokenParams: { resource: "${API}" }
      accountMatch: { claim: email }
grants:
  - { privilege: USE CONNECTION, on: drive, to: { group: "account users" } }
  - { privilege: USE CONNECTION, on: drive_email, to: { group: "account users" } }
  - { privilege: USE CONNECTION, on: drive_sub, to: { group: "account users" } }
`

beforeAll(async () => {
  if (skipBrowserTests()) return
  const keyPort = await freePort()
  keyUrl = `http://127.0.0.1:${keyPort}`
  as = await startAuthorizationServer({
    clients: [
      {
        client_id: 'keyway-drive',
        client_secret: DRIVE_SECRET,
        redirect_uris: [`${keyUrl}${CALLBACK_PATH}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['api:read'],
    resources: { [API]: { scope: 'api:read' } },
    configure: (c) => {
      // ID tokens carry the scope's claims (email, email_verified), as Google's and Entra's do.
      c.conformIdTokenClaims = false
      c.claims = { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] }
      c.findAccount = async (_ctx: unknown, id: string) => {
        const unverified = id.startsWith(UNVERIFIED_PREFIX)
        const email = unverified ? id.slice(UNVERIFIED_PREFIX.length) : id
        return { accountId: id, claims: async () => ({ sub: id, email, email_verified: !unverified, groups: [] }) }
      }
    },
  })
  upstream = await startUpstream()
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${keyUrl}, host: 127.0.0.1, port: ${keyPort} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
${connectionsYaml()}`,
    ENV,
  )
  keyway = await startHttp(snapshot, { audit, log: createMemoryLogger() })
  browser = await launchBrowser()
})

afterAll(async () => {
  await keyway?.close()
  await browser?.close()
  await upstream?.close()
  await as?.close()
})

// ---------------------------------------------------------------------------------------------
// Helpers

type Key = keyof typeof TEST_KEYS
const USER_OF: Readonly<Record<Key, string>> = { alice: ALICE, bob: BOB, carol: CAROL }
const store = (): TokenStore => keyway.runtime.store
const bearer = (key: Key): Record<string, string> => ({ authorization: `Bearer ${TEST_KEYS[key]}` })
const signIn = (link: string, providerLogin: string): Promise<BrowserRun> => consentInBrowser(browser, as.issuer, link, providerLogin)

async function storedUsers(connection: string): Promise<string[]> {
  const users: string[] = []
  for await (const { ref } of store().listTokens({ connection })) users.push(ref.user ?? '(shared)')
  return users.sort()
}

/** A 2025-era client without elicitation: its call answers CONSENT_REQUIRED with the link, or the upstream's answer. */
async function plainCall(key: Key, tool: string): Promise<ToolCallResult> {
  const client = new LegacyClient({ name: 'consent-security', version: '1.0.0' }, { capabilities: {} })
  await client.connect(new LegacyTransport(new URL(`${keyUrl}/mcp`), { requestInit: { headers: bearer(key) } }))
  try {
    return (await client.callTool({ name: tool, arguments: { ...CALL } })) as ToolCallResult
  } finally {
    await client.close()
  }
}

function linkIn(text: string): string {
  const m = /(http:\/\/127\.0\.0\.1:\d+\/connect\/[A-Za-z0-9_-]{43})\b/.exec(text)
  if (!m?.[1]) throw new Error(`no consent link in: ${text}`)
  return m[1]
}

/**
 * `key` calls the tool from a client that declares URL elicitation; when asked, the link goes to
 * someone who signs in at the provider as `providerLogin` while the call waits.
 */
async function callWhileSomeoneConsents(key: Key, tool: string, providerLogin: string): Promise<{ result: ToolCallResult; page: BrowserRun | undefined }> {
  let background: Promise<BrowserRun> | undefined
  const client = new ModernClient(
    { name: 'consent-security', version: '1.0.0' },
    { capabilities: { elicitation: { url: {} } }, versionNegotiation: { mode: 'auto' } },
  )
  client.setRequestHandler('elicitation/create', async (request) => {
    background = signIn((request.params as { url: string }).url, providerLogin)
    background.catch(() => undefined)
    return { action: 'accept' }
  })
  await client.connect(new ModernTransport(new URL(`${keyUrl}/mcp`), { requestInit: { headers: bearer(key) } }))
  try {
    const result = (await client.callTool({ name: tool, arguments: { ...CALL } })) as ToolCallResult
    return { result, page: await background }
  } finally {
    await client.close()
  }
}

/** The `sub` of the access token the upstream received last (a JWT from the test provider). */
function subOfLastBearer(): unknown {
  const token = String(upstream.last()?.headers.authorization ?? '').replace(/^Bearer /, '')
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')).sub
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('link swap with auth.accountMatch: the wrong provider account stores nothing', () => {
  const unverifiedCarol = `${UNVERIFIED_PREFIX}${CAROL}`
  test.each([
    // [what, connection, whose call makes the link, who signs in at the provider, account named, expected]
    ["carol's link completed by bob's account (email)", 'drive_email', 'carol', BOB, BOB, `a verified email address ${CAROL}`],
    ["bob's link completed by carol's account (email, the mirror)", 'drive_email', 'bob', CAROL, CAROL, `a verified email address ${BOB}`],
    [
      "carol's link completed by an account claiming carol's email unverified",
      'drive_email',
      'carol',
      unverifiedCarol,
      `${CAROL} (email not verified)`,
      `a verified email address ${CAROL}`,
    ],
    ["carol's link completed by bob's account (sub map)", 'drive_sub', 'carol', BOB, BOB, `provider subject ${CAROL}`],
    ["bob's link completed by carol's account (sub map, the mirror)", 'drive_sub', 'bob', CAROL, CAROL, `provider subject ${BOB}`],
  ] as const)(
    '%s: refused, both accounts named, consent.account_mismatch, the waiting call ends, nothing sent [consent:account-match]',
    async (_what, connection, caller, providerLogin, named, expected) => {
      const keywayUser = USER_OF[caller]
      const sent = upstream.requests.length
      const seen = audit.events.length
      const { result, page } = await callWhileSomeoneConsents(caller, connection, providerLogin)

      expect(result.isError).toBe(true)
      expect(textOf(result)).toMatch(
        new RegExp(
          `^CONSENT_REQUIRED: the sign-in for "${connection}" did not complete \\(account-mismatch\\); open http://127\\.0\\.0\\.1:\\d+/connect/\\S+ in a browser`,
        ),
      )
      expect(page?.status).toBe(403)
      expect(page?.text).toContain('This provider account does not belong to this Keyway user')
      expect(page?.text).toContain(`You signed in at the provider as ${named}`)
      expect(page?.text).toContain(`for Keyway user ${keywayUser} requires ${expected}`)
      expect(page?.text).toContain('Nothing was stored')
      expect(await storedUsers(connection)).toEqual([])
      expect(upstream.requests.length).toBe(sent)
      const during = audit.events.slice(seen)
      expect(during).toContainEqual(
        expect.objectContaining({ type: 'consent.account_mismatch', user: keywayUser, connection, providerAccount: named, expected }),
      )
      expect(during.filter((e) => e.type === 'consent.granted' || e.type === 'credential.obtained')).toEqual([])
    },
  )

  test('the right account is accepted: carol signs in as herself, the page names her account, her calls carry her token [consent:account-match]', async () => {
    const page = await signIn(linkIn(textOf(await plainCall('carol', 'drive_email'))), CAROL)
    expect(page.status).toBe(200)
    expect(page.text).toMatch(new RegExp(`Signed in by\\s+${CAROL} as provider account ${CAROL}`))
    expect((await store().getToken({ connection: 'drive_email', user: CAROL }))?.subject).toBe(CAROL)
    const r = await plainCall('carol', 'drive_email')
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(subOfLastBearer()).toBe(CAROL)
  })

  test("a shared connection's sign-in must be the owner's account: bob's refused with nothing stored, carol's accepted [consent:account-match]", async () => {
    const newLink = async (): Promise<string> =>
      (
        await createConsentFlow(
          store(),
          { connection: 'crm', method: 'oauth_u2m_shared', tokenUser: null, completer: { user: CAROL } },
          { publicUrl: keyUrl, now: Date.now() },
        )
      ).url
    const refused = await signIn(await newLink(), BOB)
    expect(refused.status).toBe(403)
    expect(refused.text).toContain(`You signed in at the provider as ${BOB}`)
    expect(await storedUsers('crm')).toEqual([])
    expect(audit.events).toContainEqual(expect.objectContaining({ type: 'consent.account_mismatch', user: CAROL, connection: 'crm', providerAccount: BOB }))
    const accepted = await signIn(await newLink(), CAROL)
    expect(accepted.status).toBe(200)
    expect((await store().getToken({ connection: 'crm', user: null }))?.subject).toBe(CAROL)
  })
})

describe.skipIf(skipBrowserTests())('without auth.accountMatch the provider account is named', () => {
  test("carol's link completed by bob's account is stored (API-key mode cannot tell), but the page, the audit and the record name bob's account [consent:account-named]", async () => {
    const seen = audit.events.length
    const page = await signIn(linkIn(textOf(await plainCall('carol', 'drive'))), BOB)
    expect(page.status).toBe(200)
    expect(page.text).toMatch(new RegExp(`Signed in by\\s+${CAROL} as provider account ${BOB}`))
    expect(audit.events.slice(seen)).toContainEqual(
      expect.objectContaining({ type: 'consent.granted', user: CAROL, connection: 'drive', providerAccount: BOB }),
    )
    expect((await store().getToken({ connection: 'drive', user: CAROL }))?.subject).toBe(BOB)
  })
})

// ---------------------------------------------------------------------------------------------

interface Form {
  readonly cookie: string
  readonly token: string
}

/** A fresh per-user link for `user` on connection drive (as a tool call would make it). */
async function newPerUserLink(user: string): Promise<{ flowId: string; url: string }> {
  const f = await createConsentFlow(
    store(),
    { connection: 'drive', method: 'oauth_u2m_per_user', tokenUser: user, completer: { user } },
    { publicUrl: keyUrl, now: Date.now() },
  )
  return { flowId: f.flowId, url: f.url }
}

/** GET the link: the confirmation page's cookie and form token. */
async function openLink(url: string): Promise<Form> {
  const res = await fetch(url)
  expect(res.status).toBe(200)
  const cookie = /keyway_confirm=([^;]+)/.exec(res.headers.getSetCookie().join('\n'))?.[1]
  const token = /name="token" value="([^"]+)"/.exec(await res.text())?.[1]
  if (!cookie || !token) throw new Error('no confirmation form')
  return { cookie, token }
}

/** POST the confirmation form with exactly the cookie and field given. */
async function confirm(url: string, sent: { readonly cookie?: string; readonly token?: string }): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(sent.cookie === undefined ? {} : { cookie: `keyway_confirm=${sent.cookie}` }) },
    body: new URLSearchParams(sent.token === undefined ? {} : { token: sent.token }),
  })
}

const isLive = async (flowId: string): Promise<boolean> => (await fetch(`${keyUrl}${connectPath(flowId)}`, { method: 'HEAD' })).status === 204

describe.skipIf(skipBrowserTests())('the API-key-mode confirmation is bound to the link on the server and works once', () => {
  test('the page says whom the provider account is bound to, in one sentence [consent:per-user-confirm-page]', async () => {
    const link = await newPerUserLink(ALICE)
    const text = await (await fetch(link.url)).text()
    expect(text).toContain(`This connects the provider account you sign in with to Keyway user ${ALICE}. If you are not ${ALICE}, stop.`)
  })

  test.each([
    ['the issued pair posted a second time (replay)', 'replay'],
    ['the cookie alone', 'cookie-only'],
    ['the form field alone', 'field-only'],
    ['a matching cookie and field the server never issued', 'forged'],
    ['a pair issued for another link', 'other-link'],
  ] as const)('%s is refused and sends nobody to the provider [consent:confirm-bound]', async (_what, kind) => {
    const link = await newPerUserLink(ALICE)
    const issued = await openLink(link.url)
    const tokenRequests = as.tokenEndpointHits('keyway-drive')
    let attempt: { cookie?: string; token?: string }
    switch (kind) {
      case 'replay': {
        const first = await confirm(link.url, issued)
        expect(first.status).toBe(303)
        expect(first.headers.get('location')?.startsWith(`${as.issuer}/auth?`)).toBe(true)
        attempt = issued
        break
      }
      case 'cookie-only':
        attempt = { cookie: issued.cookie }
        break
      case 'field-only':
        attempt = { token: issued.token }
        break
      case 'forged': {
        const made = randomBytes(32).toString('base64url')
        attempt = { cookie: made, token: made }
        break
      }
      case 'other-link': {
        const other = await newPerUserLink(BOB)
        attempt = await openLink(other.url)
        break
      }
      default: {
        const never: never = kind
        throw new Error(String(never))
      }
    }
    const refused = await confirm(link.url, attempt)
    expect(refused.status).toBe(403)
    expect(refused.headers.get('location')).toBeNull()
    expect(await refused.text()).toContain('Confirmation failed')
    // Nothing was redeemed or stored, and a refused attempt does not spend the link (a replay found it spent by the first POST).
    expect(as.tokenEndpointHits('keyway-drive')).toBe(tokenRequests)
    expect(await store().getToken({ connection: 'drive', user: ALICE })).toBeUndefined()
    expect(await isLive(link.flowId)).toBe(kind !== 'replay')
    if (kind !== 'replay') expect((await confirm(link.url, issued)).status).toBe(303)
  })
})

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('the callback page shows provider text only for a live flow', () => {
  test.each([
    ['no state', 'none'],
    ['a random state', 'random'],
    ['the id of a live consent link (not a state)', 'link-id'],
  ] as const)('%s: a generic page, nothing of the query echoed, nothing spent [consent:callback-generic]', async (_what, kind) => {
    const state = kind === 'none' ? '' : kind === 'random' ? randomBytes(32).toString('base64url') : (await newPerUserLink(ALICE)).flowId
    const query = new URLSearchParams({ error: 'access_denied', error_description: ATTACK_TEXT, ...(state ? { state } : {}) })
    const res = await fetch(`${keyUrl}${CALLBACK_PATH}?${query.toString()}`)
    const body = await res.text()
    expect(res.status).toBe(400)
    for (const echoed of ['locked', '+1-555-0100', 'evil.test', 'access_denied']) expect(body).not.toContain(echoed)
    expect(body).toMatch(kind === 'link-id' ? /not valid for this step/ : /This sign-in link is not valid or has expired/)
    // A link id presented as a state is not consumed: the link still works.
    if (kind === 'link-id') expect(await isLive(state)).toBe(true)
  })

  test('a live flow: the provider text is shown, escaped and bounded; nothing stored [consent:callback-generic]', async () => {
    const link = await newPerUserLink(ALICE)
    const form = await openLink(link.url)
    const left = await confirm(link.url, form)
    expect(left.status).toBe(303)
    const state = new URL(left.headers.get('location') ?? '').searchParams.get('state') ?? ''
    const bind = /(keyway_bind_[0-9a-f]+)=([^;]+)/.exec(left.headers.getSetCookie().join('\n'))
    const description = `<script>alert(1)</script> ${'x'.repeat(400)}TAIL`
    const res = await fetch(`${keyUrl}${CALLBACK_PATH}?${new URLSearchParams({ state, error: 'access_denied', error_description: description }).toString()}`, {
      headers: { cookie: `${bind?.[1]}=${bind?.[2]}` },
    })
    const body = await res.text()
    expect(res.status).toBe(400)
    expect(body).toContain('Access was not granted')
    expect(body).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(body).not.toContain('<script>')
    expect(body).not.toContain('TAIL')
    expect(await store().getToken({ connection: 'drive', user: ALICE })).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipBrowserTests())('keyway validate', () => {
  const run = async (yaml: string): Promise<{ code: number; err: string[] }> => {
    const { file, dir } = await writeTempConfig(yaml)
    const err: string[] = []
    const io: CliIo = { out: () => {}, err: (l) => err.push(l), env: ENV, cwd: dir }
    return { code: await validate(['--config', file], io), err }
  }
  const base = (identity: string): string => `
version: 1
identity:
${identity}
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true }
${connectionsYaml()}`

  test('warns (not fails) for per-user connections in API-key mode without accountMatch, and only for those [consent:account-named]', async () => {
    const r = await run(base(`  apiKeys:\n${apiKeyLines()}`))
    expect(r.code).toBe(0)
    expect(r.err.filter((l) => l.includes(FORWARDED_LINK_WARNING))).toEqual([`keyway: warning: connections.drive.auth: ${FORWARDED_LINK_WARNING}`])
  })

  test('no such warning when the browser user is signed in (OIDC browserClient)', async () => {
    const r = await run(base(`  oidc:\n    issuer: "${as.issuer}"\n    browserClient: { clientId: keyway-web, clientSecret: { env: DRIVE_SECRET } }`))
    expect(r.code).toBe(0)
    expect(r.err.join('\n')).not.toContain(FORWARDED_LINK_WARNING)
  })

  test.each([
    ['on oauth_m2m', 'type: oauth_m2m', '{ claim: email }', /accountMatch: unknown key/],
    ['with another claim', 'type: oauth_u2m_per_user', '{ claim: name }', /accountMatch.*must be \{ claim: email/],
    ['sub without map', 'type: oauth_u2m_per_user', '{ claim: sub }', /accountMatch\.map/],
  ] as const)('auth.accountMatch %s is refused', async (_what, type, match, problem) => {
    const r = await run(`
version: 1
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
  x:
    host: ${upstream.origin}
    owner: { user: ${CAROL} }
    auth: { ${type}, issuer: "${as.issuer}", clientId: c, clientSecret: { env: DRIVE_SECRET }, accountMatch: ${match} }
`)
    expect(r.code).toBe(1)
    expect(r.err.join('\n')).toMatch(problem)
  })
})
