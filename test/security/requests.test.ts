/**
 * Attack suite, requests: what a caller can put into an MCP request (its own credentials, tool
 * names, tool arguments: path, query, headers, body) and what an upstream can answer, each row
 * with the refusal expected and the proof that nothing reached the upstream or a canary listener
 * that stands for "anywhere else on the network". One listening Keyway, real MCP clients, two
 * loopback servers; rows run against the same instance and each counts only its own hits.
 * @module
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const TOKEN = 'sk-CANARY-injected-token-7f3a9c1e5b'

let upstream: Upstream
let canary: Upstream
let keyway: HttpKeyway
let alice: TestClient
let mcpUrl: string
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

beforeAll(async () => {
  upstream = await startUpstream()
  canary = await startUpstream()
  const { snapshot } = await loadTestConfig(
    `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 1500, maxResponseBytes: 65536 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  notes:
    host: ${upstream.origin}
    basePath: /api/v1
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: TOKEN } }
  payroll:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: carol@example.com }
    auth: { type: bearer_token, token: { env: TOKEN } }
`,
    { TOKEN },
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log })
  mcpUrl = `${keyway.http?.url}/mcp`
  alice = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.alice })
})

afterAll(async () => {
  await alice?.close()
  await keyway?.close()
  await canary?.close()
  await upstream?.close()
})

beforeEach(() => {
  upstream.requests.length = 0
  canary.requests.length = 0
  upstream.setHandler(undefined)
  canary.setHandler(undefined)
})

const call = (args: Record<string, unknown>, tool = 'notes'): Promise<ToolCallResult> => alice.callTool(tool, args)

/** Nothing reached anything: neither the connection's upstream nor the canary. */
function nothingSent(): void {
  expect(upstream.requests).toHaveLength(0)
  expect(canary.requests).toHaveLength(0)
}

describe("the caller's own credentials and identity", () => {
  test('no Authorization: 401 with a challenge, no tool runs', async () => {
    const r = await fetch(mcpUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
    })
    expect(r.status).toBe(401)
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer /)
    nothingSent()
  })

  test('a valid API key in the query string instead of the header is not a credential', async () => {
    const r = await fetch(`${mcpUrl}?access_token=${TEST_KEYS.alice}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
    })
    expect(r.status).toBe(401)
    nothingSent()
  })

  test("a session id header (even one another user's client sent) changes nothing: every request is authenticated on its own", async () => {
    const r = await fetch(mcpUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${TEST_KEYS.bob}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
        'mcp-session-id': 'session-of-alice-0123456789abcdef',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'notes', arguments: { path: '/x' } } }),
    })
    const text = await r.text()
    expect(text).not.toContain('"isError":false')
    if (r.status === 200) expect(text).toMatch(/PERMISSION_DENIED: user bob@example\.com /)
    else expect(r.status).toBeGreaterThanOrEqual(400)
    nothingSent()
  })

  const lookalikes: readonly [string, string][] = [
    ['another case', 'Notes'],
    ['a trailing space', 'notes '],
    ['a Cyrillic o', 'n\u043etes'],
    ['a zero-width joiner', 'no\u200dtes'],
  ]
  for (const [what, name] of lookalikes) {
    test(`a tool name with ${what} is an unknown tool, and the error lists no other connection`, async () => {
      const err = await alice.callTool(name, { path: '/x' }).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      expect(err?.message).toMatch(/unknown tool/i)
      expect(err?.message).not.toMatch(/payroll/)
      nothingSent()
    })
  }
})

describe('caller headers never carry credentials, framing, routing, method overrides or rewrites upstream [egress:header-filter] [egress:dropped-headers]', () => {
  const cases: readonly [string, Record<string, string>][] = [
    ['its own Authorization', { Authorization: 'Bearer attacker-token' }],
    ['Authorization in lower case', { authorization: 'Bearer attacker-token' }],
    ['Proxy-Authorization', { 'Proxy-Authorization': 'Basic YTpi' }],
    ['Cookie', { Cookie: 'session=stolen' }],
    ['Connection naming Authorization', { Connection: 'close, Authorization' }],
    ['hop-by-hop fields', { 'Transfer-Encoding': 'chunked', TE: 'trailers', Upgrade: 'h2c', 'Keep-Alive': 'timeout=5', 'Proxy-Connection': 'keep-alive' }],
    ['Host and X-Forwarded-Host', { Host: '127.0.0.1:1', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-For': '10.0.0.1', Forwarded: 'for=10.0.0.1' }],
    ['a Content-Length that lies', { 'Content-Length': '9999' }],
    ['method overrides', { 'X-HTTP-Method-Override': 'DELETE', 'X-HTTP-Method': 'DELETE', 'X-Method-Override': 'DELETE', 'X-Original-Method': 'DELETE' }],
    ['URL rewrites', { 'X-Original-URL': '/admin', 'X-Rewrite-URL': '/admin', 'X-Original-URI': '/admin', 'X-Override-URL': '/admin' }],
    [
      'client-address and host claims',
      { 'X-Real-IP': '127.0.0.1', 'X-Client-IP': '127.0.0.1', 'True-Client-IP': '127.0.0.1', 'X-Host': 'internal.example', Via: '1.1 trusted' },
    ],
  ]
  for (const [what, headers] of cases) {
    test(`${what}: dropped; the upstream sees exactly the injected credential and its own host`, async () => {
      const r = await call({ method: 'POST', path: '/items', headers, body: { a: 1 } })
      expect(r.isError, textOf(r)).toBeFalsy()
      const seen = upstream.last()
      expect(seen?.headers.authorization).toBe(`Bearer ${TOKEN}`)
      expect(seen?.headers['proxy-authorization']).toBeUndefined()
      expect(seen?.headers.cookie).toBeUndefined()
      expect(seen?.headers['x-forwarded-host']).toBeUndefined()
      expect(seen?.headers.forwarded).toBeUndefined()
      expect(seen?.headers.host).toBe(new URL(upstream.origin).host)
      // Whatever the row sent, none of it arrived under its own name.
      for (const name of Object.keys(headers))
        if (!['authorization', 'host', 'content-length', 'transfer-encoding', 'connection'].includes(name.toLowerCase()))
          expect(seen?.headers[name.toLowerCase()], name).toBeUndefined()
      expect(seen?.method).toBe('POST')
      expect(seen?.path).toBe('/api/v1/items')
      expect(seen?.body).toBe('{"a":1}')
      // The caller's own API key never travels upstream, in any header.
      expect(JSON.stringify(seen?.headers)).not.toContain(TEST_KEYS.alice)
      expect(canary.requests).toHaveLength(0)
    })
  }

  const refused: readonly [string, Record<string, string>][] = [
    ['CR LF in a value', { 'X-Note': 'a\r\nHost: evil' }],
    ['a lone LF in a value', { 'X-Note': 'a\nb' }],
    ['NUL in a value', { 'X-Note': 'a\u0000b' }],
    ['a space in a name', { 'X Note': 'a' }],
    ['a colon in a name', { 'X:Note': 'a' }],
    ['the same name twice in different case', { 'X-Note': 'a', 'x-note': 'b' }],
  ]
  for (const [what, headers] of refused) {
    test(`${what}: INVALID_REQUEST before any request`, async () => {
      const r = await call({ path: '/items', headers })
      expect(textOf(r)).toMatch(/^INVALID_REQUEST: /)
      nothingSent()
    })
  }
})

describe('tool paths cannot leave the connection [egress:path-confined]', () => {
  const canaryHost = (): string => new URL(canary.origin).host
  const paths: readonly [string, () => string][] = [
    ['a network-path reference to the canary', () => `//${canaryHost()}/x`],
    ['an absolute url to the canary', () => `${canary.origin}/x`],
    ['the metadata address', () => 'http://169.254.169.254/latest/meta-data/'],
    ['backslashes', () => `\\\\${canaryHost()}/x`],
    ['slash backslash', () => `/\\${canaryHost()}/x`],
    ['dot-dot segments', () => '../admin'],
    ['dot-dot deeper', () => 'users/../../admin'],
    ['encoded dots', () => '%2e%2e/admin'],
    ['mixed encoded dots', () => '.%2E/admin'],
    ['an encoded slash', () => '..%2Fadmin'],
    ['an encoded backslash', () => 'a%5cb'],
    ['double encoding', () => '%252e%252e%252fadmin'],
    ['userinfo in the first segment', () => `x@${canaryHost()}/y`],
    ['a query in the path', () => '/items?admin=1'],
    ['a fragment in the path', () => '/items#x'],
    ['an encoded NUL', () => '/items%00.json'],
    ['a raw control character', () => '/items\u0000'],
    ['a tab the url parser would strip', () => '/ite\tms/../../admin'],
    ['a javascript: scheme', () => 'javascript:alert(1)'],
    ['a file: scheme', () => 'file:///etc/passwd'],
  ]
  for (const [what, path] of paths) {
    test(`${what}: EGRESS_BLOCKED, nothing sent`, async () => {
      const r = await call({ path: path() })
      expect(textOf(r)).toMatch(/^EGRESS_BLOCKED: path refused: /)
      nothingSent()
    })
  }

  test('query values are encoded, never able to add parameters or a fragment', async () => {
    const r = await call({ path: '/items', query: { q: 'a&admin=1#x', n: [1, 2] } })
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(upstream.last()?.query).toBe('?q=a%26admin%3D1%23x&n=1&n=2')
  })
})

describe('what an upstream answers', () => {
  test('a redirect to another host is returned, never followed [egress:no-redirect]', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(302, { location: `${canary.origin}/stolen` })
      res.end()
    })
    const r = await call({ path: '/go' })
    expect(r.structuredContent?.status).toBe(302)
    expect(canary.requests).toHaveLength(0)
  })

  test('set-cookie and internal headers never reach the model', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'set-cookie': 'sid=abc',
        'x-internal-debug': 'db=10.0.0.5',
        'proxy-authenticate': 'Basic realm=x',
        server: 'internal/1.2',
      })
      res.end('{}')
    })
    const r = await call({ path: '/h' })
    const headers = r.structuredContent?.headers as Record<string, string>
    expect(Object.keys(headers)).toEqual(['content-type'])
  })

  test('an endless chunked body is cut at the cap, the call still answers [egress:size-cap]', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const chunk = Buffer.alloc(16 * 1024, 'a')
      const pump = (): void => {
        while (res.write(chunk)) if (res.destroyed) return
        res.once('drain', pump)
      }
      pump()
      res.on('close', () => res.removeAllListeners('drain'))
    })
    const r = await call({ path: '/endless' })
    expect(r.structuredContent?.truncated).toBe(true)
    expect((r.structuredContent?.body as string).length).toBe(65536)
  })

  test('an upstream that never sends headers times out at the deadline [egress:timeout]', async () => {
    upstream.setHandler(() => undefined)
    const started = Date.now()
    const r = await call({ path: '/slow' })
    expect(textOf(r)).toMatch(/^UPSTREAM_TIMEOUT: GET 127\.0\.0\.1:\d+ timed out after 1500 ms$/)
    expect(Date.now() - started).toBeLessThan(4000)
  })
})
