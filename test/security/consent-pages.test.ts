/**
 * Attack suite, the browser side of consent: the link a person opens (`/connect/<flowId>`) and
 * the one OAuth redirect URI. Each refusal is proven by what the provider's token endpoint
 * received (no code redeemed) and what the store holds (no token), next to a control flow that
 * does connect. Covered here: a callback without `state`, a callback that reaches a browser which
 * did not start the sign-in (login CSRF), an `iss` naming another issuer (mix-up), PKCE S256 on
 * every authorization request with the verifier never shown, no open redirect through any
 * parameter, and framing forbidden on every page. Raw HTTP as a browser would send it, in API-key
 * mode (the confirmation page); the provider is a permissive loopback token endpoint whose
 * discovery document advertises RFC 9207 `iss`.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, textOf } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const ALICE = 'alice@example.com'
const ENV = { DRIVE_SECRET: 'drive-client-secret-0123456789', KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }
const LINK = /(http:\/\/127\.0\.0\.1:\d+\/connect\/[A-Za-z0-9_-]{43})\b/
const EVIL = 'evil.example'

let upstream: Upstream
let provider: TokenEndpoint
let keyway: HttpKeyway
let base: string
const log = createMemoryLogger()
const audit = createMemoryAuditLog()

beforeAll(async () => {
  upstream = await startUpstream()
  provider = await startTokenEndpoint()
  provider.setMetadata({
    authorization_endpoint: `${provider.issuer}/authorize`,
    authorization_response_iss_parameter_supported: true,
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
  })
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: ${base}, host: 127.0.0.1, port: ${port} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  drive:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      issuer: "${provider.issuer}"
      clientId: drive
      clientSecret: { env: DRIVE_SECRET }
      scopes: [api:read]
grants:
  - { privilege: USE CONNECTION, on: drive, to: { group: "account users" } }
`,
    ENV,
  )
  keyway = await startHttp(snapshot, { audit, log })
})

afterAll(async () => {
  await keyway?.close()
  await provider?.close()
  await upstream?.close()
})

beforeEach(async () => {
  await keyway.runtime.store.deleteToken({ connection: 'drive', user: ALICE })
  provider.requests.length = 0
  upstream.requests.length = 0
})

/** Every response a browser got in a test, to check the page headers on all of them. */
let seen: Response[] = []
beforeEach(() => {
  seen = []
})

async function browse(url: string, init: RequestInit & { cookies?: readonly string[] } = {}): Promise<Response> {
  const { cookies, ...rest } = init
  const headers = new Headers(rest.headers)
  if (cookies && cookies.length > 0) headers.set('cookie', cookies.join('; '))
  const r = await fetch(url, { ...rest, headers, redirect: 'manual' })
  seen.push(r)
  return r
}

/** `name=value` of the cookie a response set, or undefined. */
function cookieSet(r: Response, prefix: string): string | undefined {
  return r.headers
    .getSetCookie()
    .map((c) => c.split(';')[0] ?? '')
    .find((c) => c.startsWith(prefix) && !c.endsWith('='))
}

interface StartedFlow {
  readonly link: string
  /** The provider authorization request the browser was sent to. */
  readonly authorization: URL
  readonly state: string
  /** The browser-binding cookie Keyway set when the browser left for the provider. */
  readonly bindCookie: string
}

/** Alice's agent calls the tool, she opens the link and presses the button; the browser is now at the provider. */
async function startFlow(extra: { readonly query?: string; readonly form?: Record<string, string> } = {}): Promise<StartedFlow> {
  const client = await connectClient('legacy-v1', `${base}/mcp`, { bearer: TEST_KEYS.alice })
  let text: string
  try {
    text = textOf(await client.callTool('drive', { path: '/files' }))
  } finally {
    await client.close()
  }
  const link = LINK.exec(text)?.[1]
  if (!link) throw new Error(`no consent link in: ${text}`)
  const confirm = await browse(`${link}${extra.query ?? ''}`)
  expect(confirm.status).toBe(200)
  const formToken = /name="token" value="([^"]+)"/.exec(await confirm.text())?.[1] ?? ''
  const confirmCookie = cookieSet(confirm, 'keyway_confirm=') ?? ''
  const left = await browse(`${link}${extra.query ?? ''}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: formToken, ...extra.form }).toString(),
    cookies: [confirmCookie],
  })
  expect(left.status).toBe(303)
  const authorization = new URL(left.headers.get('location') ?? '')
  const bindCookie = cookieSet(left, 'keyway_bind_') ?? ''
  expect(bindCookie).not.toBe('')
  return { link, authorization, state: authorization.searchParams.get('state') ?? '', bindCookie }
}

/** The provider's answer as it would arrive at the redirect URI. */
function callbackUrl(params: Record<string, string>): string {
  return `${base}${CALLBACK_PATH}?${new URLSearchParams(params).toString()}`
}

const storedForAlice = () => keyway.runtime.store.getToken({ connection: 'drive', user: ALICE })

/** Nothing was redeemed at the provider, nothing stored, nothing sent upstream. */
async function nothingRedeemed(): Promise<void> {
  expect(provider.requests).toHaveLength(0)
  expect(await storedForAlice()).toBeUndefined()
  expect(upstream.requests).toHaveLength(0)
}

describe('the callback', () => {
  test('control: the provider answer with state, iss and the binding cookie redeems the code once and stores the token', async () => {
    const flow = await startFlow()
    const r = await browse(callbackUrl({ code: 'code-0123456789', state: flow.state, iss: provider.issuer }), { cookies: [flow.bindCookie] })
    expect(r.status).toBe(200)
    expect(await r.text()).toContain('Connected drive')
    expect(provider.requests).toHaveLength(1)
    expect((await storedForAlice())?.method).toBe('oauth_u2m_per_user')
  })

  test('a callback without state is refused: nothing redeemed or stored', async () => {
    const flow = await startFlow()
    const r = await browse(callbackUrl({ code: 'code-0123456789', iss: provider.issuer }), { cookies: [flow.bindCookie] })
    expect(r.status).toBe(410)
    await nothingRedeemed()
  })

  test('a callback reaching a browser that did not start the sign-in (login CSRF) is refused: nothing redeemed or stored', async () => {
    const flow = await startFlow()
    // The attacker's own callback link, opened in the victim's browser: no binding cookie for this state.
    const r = await browse(callbackUrl({ code: 'code-of-the-attacker', state: flow.state, iss: provider.issuer }))
    expect(r.status).toBe(403)
    expect(await r.text()).toContain('This sign-in was started in another browser')
    await nothingRedeemed()
    // Another flow's binding value under this state's cookie name does not fit either.
    const other = await startFlow()
    const swapped = `${other.bindCookie.split('=')[0]}=${flow.bindCookie.split('=')[1]}`
    const crossed = await browse(callbackUrl({ code: 'code-0123456789', state: other.state, iss: provider.issuer }), { cookies: [swapped] })
    expect(crossed.status).toBe(403)
    await nothingRedeemed()
  })

  const mixUps: readonly [string, (state: string) => Record<string, string>][] = [
    ['an iss naming another issuer', (state) => ({ code: 'code-0123456789', state, iss: `http://127.0.0.1:9/${EVIL}` })],
    ['no iss although the provider advertises it', (state) => ({ code: 'code-0123456789', state })],
  ]
  for (const [what, params] of mixUps) {
    test(`mix-up, ${what}: refused before the code is redeemed, nothing stored`, async () => {
      const flow = await startFlow()
      const r = await browse(callbackUrl(params(flow.state)), { cookies: [flow.bindCookie] })
      expect(r.status).toBeGreaterThanOrEqual(400)
      expect(await r.text()).not.toContain('Connected drive')
      await nothingRedeemed()
    })
  }

  test('the authorization request always carries PKCE S256; the verifier is sent only to the token endpoint and never shown or logged', async () => {
    const flow = await startFlow()
    const challenge = flow.authorization.searchParams.get('code_challenge') ?? ''
    expect(flow.authorization.searchParams.get('code_challenge_method')).toBe('S256')
    expect(challenge).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(flow.authorization.searchParams.has('code_verifier')).toBe(false)
    const r = await browse(callbackUrl({ code: 'code-0123456789', state: flow.state, iss: provider.issuer }), { cookies: [flow.bindCookie] })
    const page = await r.text()
    const verifier = provider.requests[0]?.body.get('code_verifier') ?? ''
    expect(createHash('sha256').update(verifier).digest('base64url')).toBe(challenge)
    for (const text of [flow.authorization.href, page, log.lines.join('\n'), JSON.stringify(audit.events)]) {
      expect(text).not.toContain(verifier)
      expect(text).not.toContain('code-0123456789')
    }
  })
})

describe('no open redirect through link or callback parameters', () => {
  const payloads: readonly [string, string][] = [
    ['next=//evil', `//${EVIL}/x`],
    ['return_to=/\\evil', `/\\${EVIL}/x`],
    ['redirect_uri=/\\t/evil', `/\t/${EVIL}/x`],
    ['next=https://evil', `https://${EVIL}/x`],
  ]
  for (const [what, target] of payloads) {
    test(`${what}: the only place Keyway sends a browser is the provider's authorization endpoint`, async () => {
      const query = `?${new URLSearchParams({ next: target, return_to: target, redirect_uri: target, redirect: target, url: target }).toString()}`
      const flow = await startFlow({ query, form: { next: target, return_to: target, redirect_uri: target } })
      expect(flow.authorization.origin).toBe(provider.issuer)
      expect(flow.authorization.pathname).toBe('/authorize')
      expect(flow.authorization.searchParams.get('redirect_uri')).toBe(`${base}${CALLBACK_PATH}`)
      const callback = await browse(`${callbackUrl({ code: 'code-0123456789', state: flow.state, iss: provider.issuer })}&${query.slice(1)}`, {
        cookies: [flow.bindCookie],
      })
      expect(callback.status).toBe(200)
      for (const r of seen) {
        const location = r.headers.get('location')
        if (location !== null) expect(new URL(location, base).origin).toBe(provider.issuer)
        else expect(r.status).toBeLessThan(300)
      }
    })
  }
})

describe('consent pages cannot be framed [consent:headers]', () => {
  test('every answer of the browser routes, pages and redirects alike, forbids framing', async () => {
    await browse(`${base}/connect/${randomBytes(32).toString('base64url')}`)
    const flow = await startFlow()
    await browse(flow.link, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=forged' })
    await browse(callbackUrl({ code: 'code-0123456789', state: flow.state, iss: provider.issuer }))
    await browse(callbackUrl({ error: 'access_denied' }))
    const again = await startFlow()
    await browse(callbackUrl({ code: 'code-0123456789', state: again.state, iss: provider.issuer }), { cookies: [again.bindCookie] })
    expect(seen.map((r) => r.status)).toEqual([410, 200, 303, 403, 403, 400, 200, 303, 200])
    for (const r of seen) {
      expect(r.headers.get('content-security-policy'), `${r.status} ${r.url}`).toContain("frame-ancestors 'none'")
      expect(r.headers.get('x-frame-options'), `${r.status} ${r.url}`).toBe('DENY')
    }
  })
})
