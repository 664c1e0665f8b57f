/**
 * End to end over HTTP with real peers: a listening Keyway, a loopback upstream that records
 * what it receives, and the official MCP clients of both protocol eras.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, ERAS, textOf, type TestClient } from '../helpers/mcp-clients.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const TOKEN = 'sk-CANARY-upstream-token-0123456789'

let upstream: Upstream
let keyway: HttpKeyway
let mcpUrl: string
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

beforeAll(async () => {
  upstream = await startUpstream()
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines({ bob: ['key-group'] })}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 2000, maxResponseBytes: 4096 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
groups:
  team: [bob@example.com]
connections:
  issues:
    host: ${upstream.origin}
    basePath: /api/v1
    isMcpConnection: true
    owner: { user: alice@example.com }
    description: Issue tracker
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
  reports:
    host: ${upstream.origin}
    basePath: /reports
    isMcpConnection: true
    readOnly: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
  via_key_group:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
  hidden_backend:
    host: ${upstream.origin}
    isMcpConnection: false
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
grants:
  - { privilege: USE CONNECTION, on: issues, to: { group: team } }
  - { privilege: USE CONNECTION, on: via_key_group, to: { group: key-group } }
`,
    { UPSTREAM_TOKEN: TOKEN },
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log })
  mcpUrl = `${keyway.http?.url}/mcp`
})

afterAll(async () => {
  await keyway?.close()
  await upstream?.close()
})

describe.each(ERAS)('over HTTP with the %s client', (era) => {
  const clients: Partial<Record<keyof typeof TEST_KEYS, TestClient>> = {}
  const as = async (user: keyof typeof TEST_KEYS): Promise<TestClient> => (clients[user] ??= await connectClient(era, mcpUrl, { bearer: TEST_KEYS[user] }))
  afterAll(async () => {
    for (const c of Object.values(clients)) await c.close()
  })

  test('tools/list shows each caller only the connections it may use, in name order [grant:deny-by-default]', async () => {
    expect(await (await as('alice')).listToolNames()).toEqual(['issues', 'reports', 'via_key_group'])
    expect(await (await as('bob')).listToolNames()).toEqual(['issues', 'via_key_group'])
    expect(await (await as('carol')).listToolNames()).toEqual([])
  })

  test('a granted call reaches the upstream with exactly the configured token [credential:injected]', async () => {
    const before = upstream.requests.length
    const r = await (await as('bob')).callTool('issues', { method: 'GET', path: '/issues', query: { state: 'open', label: ['a', 'b'] } })
    expect(r.isError).toBeFalsy()
    expect(upstream.requests.length).toBe(before + 1)
    const seen = upstream.last()
    expect(seen?.headers.authorization).toBe(`Bearer ${TOKEN}`)
    expect(seen?.path).toBe('/api/v1/issues')
    expect(seen?.query).toBe('?state=open&label=a&label=b')
    expect(r.structuredContent).toMatchObject({ status: 200, truncated: false, body: { ok: true, path: '/api/v1/issues' } })
    expect(JSON.parse(textOf(r))).toEqual(r.structuredContent)
    expect(JSON.stringify(r)).not.toContain(TOKEN)
  })

  test('no grant: PERMISSION_DENIED names the missing grant and nothing reaches the upstream [grant:deny-by-default]', async () => {
    const before = upstream.requests.length
    const r = await (await as('carol')).callTool('issues', { method: 'GET', path: '/issues' })
    expect(r.isError).toBe(true)
    expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user carol@example\.com does not hold USE CONNECTION on connection "issues"/)
    expect(upstream.requests.length).toBe(before)
  })

  test('owner and API-key group grants allow the call', async () => {
    expect((await (await as('alice')).callTool('issues', { path: '/x' })).isError).toBeFalsy()
    expect((await (await as('bob')).callTool('via_key_group', { path: '/x' })).isError).toBeFalsy()
  })

  test('an unknown tool and a non-MCP connection are refused', async () => {
    await expect((await as('alice')).callTool('nope', { path: '/' })).rejects.toThrow(/unknown tool "nope"/)
    await expect((await as('alice')).callTool('hidden_backend', { path: '/' })).rejects.toThrow(/unknown tool "hidden_backend"/)
  })

  test('caller-supplied Authorization, Cookie and Host never reach the upstream [egress:header-filter]', async () => {
    const r = await (
      await as('alice')
    ).callTool('issues', {
      path: '/x',
      headers: { Authorization: 'Bearer attacker', cookie: 'a=b', Host: 'evil.example', 'X-Custom': 'kept', 'Proxy-Authorization': 'x' },
    })
    expect(r.isError).toBeFalsy()
    const seen = upstream.last()
    expect(seen?.headers.authorization).toBe(`Bearer ${TOKEN}`)
    expect(seen?.headers.cookie).toBeUndefined()
    expect(seen?.headers['proxy-authorization']).toBeUndefined()
    expect(seen?.headers.host).toBe(new URL(upstream.origin).host)
    expect(seen?.headers['x-custom']).toBe('kept')
  })

  test.each([
    ['../admin'],
    ['/a/../../admin'],
    ['%2e%2e/admin'],
    ['.%2e/admin'],
    ['//evil.example/x'],
    ['\\\\evil.example\\x'],
    ['https://evil.example/x'],
    ['/x\u0000y'],
    ['/ok?inject=1'],
  ])('path %j is refused before any request leaves [egress:path-confined]', async (path) => {
    const before = upstream.requests.length
    const r = await (await as('alice')).callTool('issues', { path })
    expect(r.isError).toBe(true)
    expect(textOf(r)).toMatch(/^EGRESS_BLOCKED: /)
    expect(upstream.requests.length).toBe(before)
  })

  test('a read-only connection refuses writes; bad arguments are INVALID_REQUEST', async () => {
    const before = upstream.requests.length
    const w = await (await as('alice')).callTool('reports', { method: 'POST', path: '/r', body: { a: 1 } })
    expect(textOf(w)).toMatch(/^INVALID_REQUEST: connection "reports" is read-only/)
    const bad = await (await as('alice')).callTool('issues', { method: 'TRACE', path: '/x', extra: 1 })
    expect(bad.isError).toBe(true)
    expect(textOf(bad)).toMatch(/^INVALID_REQUEST: /)
    expect(upstream.requests.length).toBe(before)
  })

  test('upstream errors set isError and keep status and body; redirects are returned, not followed [egress:no-redirect]', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"message":"Not Found"}')
    })
    const r = await (await as('alice')).callTool('issues', { path: '/missing' })
    expect(r.isError).toBe(true)
    expect(r.structuredContent).toMatchObject({ status: 404, body: { message: 'Not Found' } })
    upstream.setHandler((_req, res) => {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' })
      res.end()
    })
    const before = upstream.requests.length
    const red = await (await as('alice')).callTool('issues', { path: '/moved' })
    expect(red.structuredContent).toMatchObject({ status: 302, headers: { location: 'http://169.254.169.254/latest/meta-data' } })
    expect(upstream.requests.length).toBe(before + 1)
    upstream.setHandler(undefined)
  })

  test('POST sends a JSON body; large bodies are cut at the cap with truncated: true', async () => {
    const r = await (await as('alice')).callTool('issues', { method: 'POST', path: '/issues', body: { title: 'hello' } })
    expect(r.isError).toBeFalsy()
    expect(upstream.last()?.body).toBe('{"title":"hello"}')
    expect(upstream.last()?.headers['content-type']).toBe('application/json')
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('x'.repeat(10_000))
    })
    const big = await (await as('alice')).callTool('issues', { path: '/big' })
    expect(big.structuredContent).toMatchObject({ truncated: true })
    expect((big.structuredContent?.body as string).length).toBe(4096)
    upstream.setHandler(undefined)
  })
})

describe('HTTP authentication', () => {
  test('no bearer or an unknown key gets 401 with a Bearer challenge', async () => {
    const init = { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' }
    const none = await fetch(mcpUrl, init)
    expect(none.status).toBe(401)
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /)
    const wrong = await fetch(mcpUrl, { ...init, headers: { ...init.headers, authorization: 'Bearer kw_not_a_key' } })
    expect(wrong.status).toBe(401)
    expect(wrong.headers.get('www-authenticate')).toContain('error="invalid_token"')
  })

  test('health and readiness answer', async () => {
    expect((await fetch(`${keyway.http?.url}/healthz`)).status).toBe(200)
    expect((await fetch(`${keyway.http?.url}/readyz`)).status).toBe(200)
  })
})

describe('audit and secrecy', () => {
  test('every call is audited once with decision and rule; no secret, token or query value anywhere [secret:never-logged]', async () => {
    const calls = audit.events.filter((e) => e.type === 'tool.call')
    expect(calls.length).toBeGreaterThan(20)
    const denied = calls.find((e) => e.type === 'tool.call' && e.user === 'carol@example.com')
    expect(denied).toMatchObject({ decision: 'deny', connection: 'issues', error: 'PERMISSION_DENIED' })
    const viaGroup = calls.find((e) => e.type === 'tool.call' && e.user === 'bob@example.com' && e.connection === 'issues')
    expect(viaGroup).toMatchObject({ decision: 'allow', rule: 'grant to group team', status: 200, authMethod: 'bearer_token' })
    const everything = JSON.stringify(audit.events) + log.lines.join('\n')
    expect(everything).not.toContain(TOKEN)
    expect(everything).not.toContain('state=open')
    for (const key of Object.values(TEST_KEYS)) expect(everything).not.toContain(key)
  })
})
