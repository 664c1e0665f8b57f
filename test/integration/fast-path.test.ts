/**
 * The differential test of the fast path: the same raw requests go to two Keyways on one config,
 * one with the fast path and one serving everything through the SDK. Every answer must be
 * byte-identical (status, content type, body), whether the fast path took the request or
 * declined it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { eligible } from '../../src/mcp/fast-path.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { startProtectedMcpServer, type ProtectedMcpServer } from '../helpers/start-upstream-mcp.js'
import type { ConfigSnapshot } from '../../src/config/load.js'
import { createCaller } from '../../src/identity/caller.js'

let upstream: Upstream
let mcpUpstream: ProtectedMcpServer
let fast: HttpKeyway
let sdk: HttpKeyway
let snapshot: ConfigSnapshot
const audit = createMemoryAuditLog()

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    if (req.path.endsWith('/missing')) {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"message":"Not Found"}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"' })
    res.end(JSON.stringify({ method: req.method, path: req.path, query: req.query, body: req.body }))
  })
  mcpUpstream = await startProtectedMcpServer({
    era: 'modern',
    verify: async (bearer) => (bearer === 'mcp-upstream-token' ? 'svc' : undefined),
    tools: [{ name: 'meta', run: () => ({ content: [{ type: 'text', text: 'm' }], _meta: { 'example.com/trace': 'abc' } }) }],
  })
  ;({ snapshot } = await loadTestConfig(
    `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
  api:
    host: ${upstream.origin}
    basePath: /v1
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: T } }
  backend:
    host: ${upstream.origin}
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: T } }
  tools:
    host: ${mcpUpstream.origin}
    basePath: /mcp/
    protocol: mcp
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: M } }
`,
    { T: 'sk-fast-path-token', M: 'mcp-upstream-token' },
  ))
  const common = { port: 0, audit, log: createMemoryLogger() }
  fast = await startHttp(snapshot, common)
  sdk = await startHttp(snapshot, { ...common, app: { fastPath: false } })
  // Both have read the upstream's tool list before the first case (the fast path serves an upstream tool once it is indexed).
  const scope = { snapshot, caller: createCaller(snapshot, 'alice@example.com', 'api_key') }
  for (const k of [fast, sdk]) await k.runtime.callDeps(snapshot).upstream?.tools.list(scope)
})

afterAll(async () => {
  await fast?.close()
  await sdk?.close()
  await upstream?.close()
  await mcpUpstream?.close()
})

const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'diff', version: '1.0.0' },
  'io.modelcontextprotocol/clientCapabilities': {},
}

const LEGACY = { 'mcp-protocol-version': '2025-11-25', 'mcp-method': undefined, 'mcp-name': undefined }
const legacyCall = (args: unknown, tool = 'api'): Record<string, unknown> => ({
  method: 'tools/call',
  params: { name: tool, arguments: args },
  jsonrpc: '2.0',
  id: 3,
})

interface Case {
  readonly name: string
  readonly fastPath: boolean
  readonly user?: keyof typeof TEST_KEYS
  readonly headers?: Record<string, string | undefined>
  readonly body: unknown
}

const call = (args: unknown, extra: Record<string, unknown> = {}, tool = 'api'): Record<string, unknown> => ({
  method: 'tools/call',
  params: { name: tool, arguments: args, _meta: ENVELOPE, ...extra },
  jsonrpc: '2.0',
  id: 7,
})

const CASES: readonly Case[] = [
  { name: 'a plain GET', fastPath: true, body: call({ path: '/items' }) },
  {
    name: 'query, headers and a JSON body',
    fastPath: true,
    body: call({ method: 'POST', path: '/items', query: { a: 1, b: ['x', 'y'] }, headers: { 'X-Trace': 't' }, body: { title: 'hello' } }),
  },
  { name: 'a string id', fastPath: true, body: { ...call({ path: '/s' }), id: 'req-1' } },
  { name: 'no arguments at all', fastPath: true, body: { ...call(undefined), params: { name: 'api', _meta: ENVELOPE } } },
  { name: 'a caller without a grant', fastPath: true, user: 'carol', body: call({ path: '/items' }) },
  { name: 'invalid arguments', fastPath: true, body: call({ method: 'TRACE', path: 3, extra: true }) },
  { name: 'a path leaving the base path', fastPath: true, body: call({ path: '../admin' }) },
  { name: 'an upstream 404', fastPath: true, body: call({ path: '/missing' }) },
  {
    name: 'client info with a title',
    fastPath: true,
    body: call({ path: '/t' }, { _meta: { ...ENVELOPE, 'io.modelcontextprotocol/clientInfo': { name: 'd', version: '1', title: 'D' } } }),
  },
  { name: 'an unknown tool', fastPath: false, headers: { 'mcp-name': 'nope' }, body: call({ path: '/x' }, {}, 'nope') },
  { name: 'a connection that is no tool', fastPath: false, headers: { 'mcp-name': 'backend' }, body: call({ path: '/x' }, {}, 'backend') },
  { name: 'Mcp-Name not matching the tool', fastPath: false, headers: { 'mcp-name': 'other' }, body: call({ path: '/x' }) },
  { name: 'a progress token in _meta', fastPath: false, body: call({ path: '/x' }, { _meta: { ...ENVELOPE, progressToken: 5 } }) },
  { name: 'a missing protocol version header', fastPath: false, headers: { 'mcp-protocol-version': undefined }, body: call({ path: '/x' }) },
  { name: 'an Accept without event streams', fastPath: false, headers: { accept: 'application/json' }, body: call({ path: '/x' }) },
  { name: 'arguments that are not an object', fastPath: false, body: call(['path']) },
  {
    name: 'a capability that is not an object',
    fastPath: false,
    body: call({ path: '/x' }, { _meta: { ...ENVELOPE, 'io.modelcontextprotocol/clientCapabilities': { elicitation: 1 } } }),
  },
  {
    name: 'a notification (no id)',
    fastPath: false,
    body: { method: 'tools/call', params: { name: 'api', arguments: { path: '/x' }, _meta: ENVELOPE }, jsonrpc: '2.0' },
  },
  { name: '2025-era: a plain GET', fastPath: true, headers: LEGACY, body: legacyCall({ path: '/items' }) },
  {
    name: '2025-06-18: a POST with a body',
    fastPath: true,
    headers: { ...LEGACY, 'mcp-protocol-version': '2025-06-18' },
    body: legacyCall({ method: 'POST', path: '/i', body: 'raw' }),
  },
  { name: '2025-era: no grant', fastPath: true, user: 'carol', headers: LEGACY, body: legacyCall({ path: '/items' }) },
  { name: '2025-era: invalid arguments', fastPath: true, headers: LEGACY, body: legacyCall({ path: 1 }) },
  { name: '2025-era: an upstream 404', fastPath: true, headers: LEGACY, body: legacyCall({ path: '/missing' }) },
  { name: '2025-era: an unknown tool', fastPath: false, headers: LEGACY, body: legacyCall({ path: '/x' }, 'nope') },
  {
    name: '2025-era: a progress token',
    fastPath: false,
    headers: LEGACY,
    body: { ...legacyCall({ path: '/x' }), params: { name: 'api', arguments: { path: '/x' }, _meta: { progressToken: 1 } } },
  },
  {
    name: '2025-03-26 (older than structured content)',
    fastPath: false,
    headers: { ...LEGACY, 'mcp-protocol-version': '2025-03-26' },
    body: legacyCall({ path: '/x' }),
  },
  { name: "an upstream MCP server's tool", fastPath: true, headers: { 'mcp-name': 'tools__echo' }, body: call({ text: 'hi' }, {}, 'tools__echo') },
  { name: 'an upstream tool whose result carries _meta', fastPath: true, headers: { 'mcp-name': 'tools__meta' }, body: call({}, {}, 'tools__meta') },
  { name: 'an upstream tool, no grant', fastPath: true, user: 'carol', headers: { 'mcp-name': 'tools__echo' }, body: call({ a: 1 }, {}, 'tools__echo') },
  { name: '2025-era: an upstream tool', fastPath: true, headers: LEGACY, body: legacyCall({ text: 'hi' }, 'tools__echo') },
  {
    name: 'an upstream tool with a progress token',
    fastPath: false,
    headers: { 'mcp-name': 'tools__echo' },
    body: call({ a: 1 }, { _meta: { ...ENVELOPE, progressToken: 9 } }, 'tools__echo'),
  },
  { name: '2025-era without a version header', fastPath: false, headers: { ...LEGACY, 'mcp-protocol-version': undefined }, body: legacyCall({ path: '/x' }) },
]

function headersFor(c: Case): Record<string, string> {
  const base: Record<string, string | undefined> = {
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${TEST_KEYS[c.user ?? 'alice']}`,
    'content-type': 'application/json',
    'mcp-method': 'tools/call',
    'mcp-name': 'api',
    'mcp-protocol-version': '2026-07-28',
    ...c.headers,
  }
  return Object.fromEntries(Object.entries(base).filter((e): e is [string, string] => e[1] !== undefined))
}

async function send(k: HttpKeyway, c: Case): Promise<Record<string, string | number | null>> {
  const res = await fetch(`${k.http?.url}/mcp`, { method: 'POST', headers: headersFor(c), body: JSON.stringify(c.body) })
  const h = (n: string): string | null => res.headers.get(n)
  return { status: res.status, type: h('content-type'), cacheControl: h('cache-control'), buffering: h('x-accel-buffering'), body: await res.text() }
}

describe('the fast path answers exactly as the SDK does [mcp:fast-path-identical]', () => {
  test.each(CASES)('$name', async (c) => {
    const headers = headersFor(c)
    const upstreamTools = fast.runtime.callDeps(snapshot).upstream?.tools
    expect(Boolean(eligible({ header: (n) => headers[n], body: c.body }, snapshot, (name) => upstreamTools?.peek(snapshot, name)))).toBe(c.fastPath)
    const viaSdk = await send(sdk, c)
    const viaFast = await send(fast, c)
    expect(viaFast).toEqual(viaSdk)
    if (c.fastPath) expect(viaSdk.status).toBe(200)
  })

  test('both paths send the same upstream request and audit the call the same way', async () => {
    const before = upstream.requests.length
    const audited = audit.events.length
    await send(fast, CASES[1]!)
    await send(sdk, CASES[1]!)
    expect(upstream.requests.length).toBe(before + 2)
    const [a, b] = upstream.requests.slice(-2)
    expect(a).toEqual(b)
    const [ea, eb] = audit.events.slice(audited)
    expect(audit.events.length).toBe(audited + 2)
    expect({ ...ea, durationMs: 0 }).toEqual({ ...eb, durationMs: 0 })
  })
})
