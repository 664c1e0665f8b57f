/**
 * Upstream MCP servers behind Keyway (`protocol: mcp`, README "Upstream MCP servers"), end to end
 * with real peers on 127.0.0.1 only: the reference server `server-everything` (2025-era, sessions),
 * two protected servers of the tests' own (one 2026-07-28 and stateless, one 2025-era with
 * sessions), a second 2026-07-28 one whose prefix collides, one that goes away, and a plain HTTP
 * upstream; Keyway in-process, spoken to by the official MCP clients of both eras over HTTP and by
 * the built bin over stdio. Cases: listing and calling through every era, long and dashed names,
 * exclusion, collisions, an upstream restart, session credentials, one upstream down and the
 * breaker, upstream list_changed reaching a listener, REVOKE, redaction, audit, progress.
 * @module
 */
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport, type McpSubscription } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport as LegacyStdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { ConfigSnapshot } from '../../src/config/load.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, ERAS, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { KEYWAY_BIN } from '../helpers/spawn-keyway.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import {
  LONG_TOOL_NAME,
  startEverythingServer,
  startProtectedMcpServer,
  type EverythingServer,
  type ProtectedMcpServer,
} from '../helpers/start-upstream-mcp.js'
import { until } from '../helpers/wait.js'

/** One bearer token per connection (the env secret of each bearer_token connection), all distinct. */
const TOKENS = {
  everything: 'sk-everything-token-0123456789abcdef',
  modern: 'sk-modern-token-0123456789abcdef',
  legacy: 'sk-legacy-token-0123456789abcdef',
  twin: 'sk-twin-token-0123456789abcdef',
  gone: 'sk-gone-token-0123456789abcdef',
  api: 'sk-api-token-0123456789abcdef',
} as const
/** The user each protected server says a token belongs to. */
const SERVICE_USER = { modern: 'svc-modern', legacy: 'svc-legacy', twin: 'svc-twin', gone: 'svc-gone' } as const
const TOKEN_FILES = Object.fromEntries(Object.entries(TOKENS).map(([name, token]) => [`${name}.txt`, `${token}\n`]))
const BUILT_IN = ['whoami', 'echo', 'slow_progress', LONG_TOOL_NAME]
const EXPOSED_NAME = /^[A-Za-z0-9_-]{1,64}$/

let everything: EverythingServer
let modern: ProtectedMcpServer
let legacy: ProtectedMcpServer
let twin: ProtectedMcpServer
let gone: ProtectedMcpServer
let api: Upstream
let keyway: HttpKeyway
let mcpUrl: string
let port: number
const audit = createMemoryAuditLog()
const log = createMemoryLogger()
/** The bearer each protected server last verified (what a tool of `modern` echoes back). */
const lastBearer: Record<string, string> = {}

interface ConfigOptions {
  readonly server?: string
  readonly bobOnModern?: boolean
  /** A different value is a different catalog for `gone` (its fingerprint): its cached list is not reused. */
  readonly goneRefreshSeconds?: number
}

function configYaml(o: ConfigOptions = {}): string {
  const mcp = (name: string, server: { origin: string }, extra = '') => `
  ${name}:
    host: ${server.origin}
    basePath: /mcp/
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { file: ./${name}.txt } }${extra}`
  return `version: 1
server: ${o.server ?? `{ publicUrl: http://127.0.0.1:${port}, host: 127.0.0.1, port: ${port} }`}
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  api:
    host: ${api.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { file: ./api.txt } }${mcp(
      'everything',
      everything,
      `
    mcp: { exclude: [get-env, "trigger-*"] }`,
    )}${mcp('modern', modern)}${mcp('legacy', legacy)}${mcp(
      'twin',
      twin,
      `
    mcp: { prefix: modern }`,
    )}${mcp(
      'gone',
      gone,
      `
    mcp: { catalog: { refreshSeconds: ${o.goneRefreshSeconds ?? 600} } }`,
    )}
grants:
${['everything', 'modern', 'legacy', 'twin', 'api', 'gone'].map((c) => `  - { privilege: USE CONNECTION, on: ${c}, to: { user: alice@example.com } }`).join('\n')}
${o.bobOnModern === false ? '' : '  - { privilege: USE CONNECTION, on: modern, to: { user: bob@example.com } }\n'}  - { privilege: USE CONNECTION, on: gone, to: { user: carol@example.com } }
`
}

async function snapshotOf(o: ConfigOptions = {}): Promise<ConfigSnapshot> {
  return (await loadTestConfig(configYaml(o), {}, TOKEN_FILES)).snapshot
}

const verifier =
  (name: keyof typeof SERVICE_USER) =>
  async (bearer: string): Promise<string | undefined> => {
    if (bearer !== TOKENS[name]) return undefined
    lastBearer[name] = bearer
    return SERVICE_USER[name]
  }

beforeAll(async () => {
  port = await freePort()
  everything = await startEverythingServer()
  modern = await startProtectedMcpServer({
    era: 'modern',
    verify: verifier('modern'),
    // Returns the bearer it was called with, as a careless server might.
    tools: [{ name: 'echo_bearer', run: () => ({ content: [{ type: 'text', text: `you called me with ${lastBearer.modern ?? ''}` }] }) }],
  })
  legacy = await startProtectedMcpServer({ era: 'legacy', verify: verifier('legacy') })
  twin = await startProtectedMcpServer({ era: 'modern', verify: verifier('twin') })
  gone = await startProtectedMcpServer({ era: 'modern', verify: verifier('gone') })
  api = await startUpstream()
  keyway = await startHttp(await snapshotOf(), { audit, log })
  mcpUrl = `http://127.0.0.1:${port}/mcp`
  // Keyway lists every catalog once at start; wait until gone's has been read.
  await until('the first listing of gone', () => gone.rec.methods.includes('tools/list'), 10_000)
}, 60_000)

afterAll(async () => {
  await keyway?.close()
  for (const s of [everything, modern, legacy, twin, gone, api]) await s?.close()
})

async function client(user: keyof typeof TEST_KEYS, era: (typeof ERAS)[number] = 'modern'): Promise<TestClient> {
  return connectClient(era, mcpUrl, { bearer: TEST_KEYS[user] })
}

/** What of a tool result must pass through unchanged. */
function essence(r: ToolCallResult | Record<string, unknown>): Record<string, unknown> {
  return { content: r.content, structuredContent: r.structuredContent, isError: r.isError }
}

const toolCalls = (rec: { methods: readonly string[] }): number => rec.methods.filter((m) => m === 'tools/call').length

/** The JSON-RPC error a client gets for a tools/call, with the tool's name replaced by NAME. */
async function callError(c: TestClient, name: string): Promise<{ code: unknown; message: string }> {
  try {
    const r = await c.callTool(name, {})
    throw new Error(`expected a JSON-RPC error for ${name}, got a result: ${textOf(r)}`)
  } catch (e) {
    const err = e as { code?: unknown; message?: string }
    return { code: err.code, message: String(err.message).split(name).join('NAME') }
  }
}

describe('upstream MCP servers behind Keyway', () => {
  test('an upstream that restarts between two calls: both succeed with exactly one new initialize [mcp:session-restart]', async () => {
    const alice = await client('alice')
    try {
      const first = await alice.callTool('everything__echo', { message: 'before' })
      expect(textOf(first)).toBe('Echo: before')
      const inits = everything.rec.initializeCount
      const sessions = everything.rec.sessionIds.length
      await everything.restart()
      const second = await alice.callTool('everything__echo', { message: 'after' })
      expect(second.isError, textOf(second)).toBeFalsy()
      expect(textOf(second)).toBe('Echo: after')
      expect(everything.rec.initializeCount).toBe(inits + 1)
      expect(everything.rec.sessionIds.length).toBe(sessions + 1)
    } finally {
      await alice.close()
    }
  })

  test('every client era lists the same exposed names, and calls pass the upstream result through unchanged [mcp:eras]', async () => {
    const lists: string[][] = []
    for (const era of ERAS) {
      const c = await client('alice', era)
      try {
        lists.push((await c.listToolNames()).sort())
      } finally {
        await c.close()
      }
    }
    const [first, ...rest] = lists
    for (const l of rest) expect(l).toEqual(first)
    expect(first).toEqual(
      expect.arrayContaining(['api', 'everything__echo', 'everything__get-structured-content', 'modern__echo', 'modern__whoami', 'legacy__echo', 'gone__echo']),
    )

    // What the upstreams answer when called directly, with the connection's own token.
    const direct = await directResults()
    expect(direct.structured.structuredContent).toMatchObject({ temperature: expect.any(Number) })
    for (const era of ERAS) {
      const c = await client('alice', era)
      try {
        const args = { message: `hi from ${era}` }
        const ev = await c.callTool('everything__echo', args)
        expect(essence(ev), era).toEqual({ ...essence(direct.everythingEcho), content: [{ type: 'text', text: `Echo: hi from ${era}` }] })
        expect('isError' in ev, era).toBe(false)
        expect(essence(await c.callTool('everything__get-structured-content', { location: 'Chicago' })), era).toEqual(essence(direct.structured))
        expect(essence(await c.callTool('modern__echo', { a: 1, era })), era).toEqual(essence(await direct.modernEcho({ a: 1, era })))
        expect(essence(await c.callTool('legacy__echo', { b: [2], era })), era).toEqual(essence(await direct.legacyEcho({ b: [2], era })))
      } finally {
        await c.close()
      }
    }
    await direct.close()
  })

  test('over stdio the built bin lists the same tools and calls an upstream tool [mcp:stdio]', async () => {
    const alice = await client('alice')
    const overHttp = (await alice.listToolNames()).sort()
    await alice.close()
    const { file } = await loadTestConfig(configYaml({ server: '{ port: 0 }' }), {}, TOKEN_FILES)
    const transport = new LegacyStdio({
      command: process.execPath,
      args: [path.resolve(KEYWAY_BIN), 'serve', '--stdio', '--no-watch', '--user', 'alice@example.com', '--config', file],
      stderr: 'pipe',
    })
    let stderr = ''
    transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    const stdio = new LegacyClient({ name: 'keyway-test-stdio', version: '1.0.0' }, { capabilities: {} })
    await stdio.connect(transport)
    try {
      expect((await stdio.listTools()).tools.map((t) => t.name).sort(), stderr).toEqual(overHttp)
      const r = (await stdio.callTool({ name: 'modern__echo', arguments: { via: 'stdio' } })) as ToolCallResult
      expect(r.isError, textOf(r)).toBeFalsy()
      expect(r.structuredContent).toEqual({ via: 'stdio' })
    } finally {
      await stdio.close()
    }
  }, 30_000)

  test('a 70-character upstream name is exposed as a 64-character name ending in _ and 6 hex, and calling it reaches the upstream; dashes stay [mcp:names]', async () => {
    const alice = await client('alice', 'legacy-v1')
    try {
      const names = await alice.listToolNames()
      for (const n of names) expect(n).toMatch(EXPOSED_NAME)
      const long = names.filter((n) => n.startsWith('modern__a_tool_whose_name'))
      expect(long).toHaveLength(1)
      const [exposed] = long as [string]
      expect(exposed.length).toBeLessThanOrEqual(64)
      expect(exposed).toMatch(/_[0-9a-f]{6}$/)
      // The first 57 characters, `_`, and 6 hex of SHA-256 of the full name: the same on every restart.
      const full = `modern__${LONG_TOOL_NAME}`
      expect(exposed).toBe(`${full.slice(0, 57)}_${createHash('sha256').update(full).digest('hex').slice(0, 6)}`)
      const calls = toolCalls(modern.rec)
      const r = await alice.callTool(exposed, {})
      expect(r.isError, textOf(r)).toBeFalsy()
      expect(textOf(r)).toBe('long')
      expect(toolCalls(modern.rec)).toBe(calls + 1)
      // server-everything's own names use '-', an allowed character: exposed unchanged.
      expect(names).toEqual(expect.arrayContaining(['everything__get-structured-content', 'everything__get-sum', 'everything__get-tiny-image']))
    } finally {
      await alice.close()
    }
  })

  test('excluded tools are absent, and calling one answers exactly like an unknown tool, with no upstream call [mcp:filter]', async () => {
    for (const era of ['modern', 'legacy-v1'] as const) {
      const alice = await client('alice', era)
      try {
        const names = await alice.listToolNames()
        expect(names.filter((n) => n === 'everything__get-env' || n.startsWith('everything__trigger-'))).toEqual([])
        expect(names).toContain('everything__echo')
        const calls = toolCalls(everything.rec)
        const excluded = await callError(alice, 'everything__get-env')
        const unknown = await callError(alice, 'everything__no-such-tool')
        expect(excluded).toEqual(unknown)
        expect(excluded.code).toBe(-32602)
        expect(excluded.message).toContain('unknown tool "NAME"')
        expect(await callError(alice, 'everything__trigger-long-running-operation')).toEqual(unknown)
        expect(toolCalls(everything.rec)).toBe(calls)
      } finally {
        await alice.close()
      }
    }
  })

  test("the later connection's colliding tools are left out with a warning naming them; the first one's are served [mcp:collision]", async () => {
    const alice = await client('alice')
    try {
      const names = await alice.listToolNames()
      // Both connections would expose modern__echo etc.: each name is listed once, and it is modern's.
      for (const t of BUILT_IN.filter((t) => t !== LONG_TOOL_NAME)) expect(names.filter((n) => n === `modern__${t}`)).toHaveLength(1)
      const r = await alice.callTool('modern__whoami', {})
      expect(r.structuredContent).toEqual({ user: SERVICE_USER.modern })
      expect(toolCalls(twin.rec)).toBe(0)
      const warnings = log.lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'upstream tool left out: its exposed name is taken')
      expect(warnings.every((w) => w.level === 'warn' && w.connection === 'twin' && w.takenBy === 'modern')).toBe(true)
      expect([...new Set(warnings.map((w) => w.tool))].sort()).toEqual([...BUILT_IN].sort())
    } finally {
      await alice.close()
    }
  })

  test('every upstream request carrying a session id carries the token that opened that session [mcp:sessions]', async () => {
    const alice = await client('alice', 'legacy-v2')
    try {
      for (let i = 0; i < 3; i++) expect((await alice.callTool('legacy__whoami', {})).structuredContent).toEqual({ user: SERVICE_USER.legacy })
    } finally {
      await alice.close()
    }
    const withSession = legacy.rec.headers.flatMap((h, i) => {
      const sid = h['mcp-session-id']
      return typeof sid === 'string' ? [{ sid, authorization: legacy.rec.authorizations[i] }] : []
    })
    expect(withSession.length).toBeGreaterThanOrEqual(3)
    for (const { sid, authorization } of withSession) {
      expect(legacy.rec.userBySession.get(sid)).toBe(SERVICE_USER.legacy)
      expect(authorization).toBe(`Bearer ${TOKENS.legacy}`)
    }
    // The reference server too: one token on every request of every session.
    const everythingAuth = everything.rec.headers.flatMap((h, i) => (typeof h['mcp-session-id'] === 'string' ? [everything.rec.authorizations[i]] : []))
    expect(everythingAuth.length).toBeGreaterThan(0)
    expect(new Set(everythingAuth)).toEqual(new Set([`Bearer ${TOKENS.everything}`]))
  })

  test('a token the upstream echoes is [REDACTED] in the result and counted in the audit line [mcp:redaction]', async () => {
    const alice = await client('alice')
    try {
      const before = audit.events.length
      const r = await alice.callTool('modern__echo_bearer', {})
      expect(lastBearer.modern).toBe(TOKENS.modern)
      expect(textOf(r)).toBe('you called me with [REDACTED]')
      expect(JSON.stringify(r)).not.toContain(TOKENS.modern)
      const lines = audit.events.slice(before)
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatchObject({ connection: 'modern', tool: 'echo_bearer', decision: 'allow' })
      expect((lines[0] as { redacted?: number }).redacted).toBeGreaterThanOrEqual(1)
    } finally {
      await alice.close()
    }
  })

  test('one audit line per upstream tool call, with connection, upstream tool name, method and decision; a denied call is audited and sends nothing [mcp:audit]', async () => {
    const alice = await client('alice', 'legacy-v1')
    const bob = await client('bob', 'legacy-v1')
    try {
      let before = audit.events.length
      let calls = toolCalls(legacy.rec)
      expect((await alice.callTool('legacy__echo', { n: 1 })).isError).toBeFalsy()
      expect(audit.events.slice(before)).toEqual([
        expect.objectContaining({ type: 'tool.call', user: 'alice@example.com', connection: 'legacy', tool: 'echo', method: 'tools/call', decision: 'allow' }),
      ])
      expect(toolCalls(legacy.rec)).toBe(calls + 1)

      before = audit.events.length
      calls = toolCalls(legacy.rec)
      const denied = await bob.callTool('legacy__echo', { n: 2 })
      expect(denied.isError).toBe(true)
      expect(textOf(denied)).toMatch(/^PERMISSION_DENIED: .*bob@example\.com does not hold USE CONNECTION on connection "legacy"/)
      expect(audit.events.slice(before)).toEqual([
        expect.objectContaining({
          type: 'tool.call',
          user: 'bob@example.com',
          connection: 'legacy',
          tool: 'echo',
          method: 'tools/call',
          decision: 'deny',
          error: 'PERMISSION_DENIED',
        }),
      ])
      expect(toolCalls(legacy.rec)).toBe(calls)
    } finally {
      await alice.close()
      await bob.close()
    }
  })

  test('progress notifications of the upstream reach a 2026-07-28 caller before the result [mcp:progress]', async () => {
    const c = new ModernClient({ name: 'keyway-test-progress', version: '1.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
    await c.connect(new ModernTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${TEST_KEYS.alice}` } } }))
    try {
      const progress: { progress: number; total?: number | undefined; message?: string | undefined }[] = []
      const r = (await c.callTool({ name: 'modern__slow_progress', arguments: {} }, { onprogress: (p) => void progress.push(p) })) as ToolCallResult
      expect(textOf(r)).toBe('done')
      expect(progress.map((p) => [p.progress, p.total, p.message])).toEqual([
        [1, 3, 'step 1'],
        [2, 3, 'step 2'],
        [3, 3, 'step 3'],
      ])
    } finally {
      await c.close()
    }
  })

  test("the upstream's tools/list_changed reaches a listening client, and the new tool is listed [mcp:list-changed]", async () => {
    const listener = await listenForToolChanges(TEST_KEYS.alice)
    try {
      expect(listener.subscription.honoredFilter.toolsListChanged).toBe(true)
      const alice = await client('alice')
      expect(await alice.listToolNames()).not.toContain('modern__fresh')
      const changes = listener.changes
      modern.addTool({ name: 'fresh', description: 'added while Keyway runs', run: () => ({ content: [{ type: 'text', text: 'fresh' }] }) })
      await until('notifications/tools/list_changed', () => listener.changes > changes, 10_000)
      expect(await alice.listToolNames()).toContain('modern__fresh')
      expect(textOf(await alice.callTool('modern__fresh', {}))).toBe('fresh')
      await alice.close()
    } finally {
      await listener.subscription.close()
      await listener.client.close()
    }
  })

  test('one upstream down: others still listed, its tools UPSTREAM_UNAVAILABLE, the breaker refuses at once, a caller with only it gets an error [mcp:isolation]', async () => {
    const alice = await client('alice')
    const carol = await client('carol')
    try {
      expect(await carol.listToolNames()).toContain('gone__echo')
      await gone.close()
      // The list read before it went is still served; the other connections are listed.
      const listed = await alice.listToolNames()
      expect(listed).toEqual(expect.arrayContaining(['api', 'everything__echo', 'modern__echo', 'legacy__echo']))
      for (let i = 0; i < 5; i++) {
        const r = await alice.callTool('gone__echo', { i })
        expect(r.isError).toBe(true)
        expect(textOf(r)).toMatch(/^UPSTREAM_UNAVAILABLE: /)
      }
      // Open: refused at once. A listener on gone's port now records any attempt; none comes.
      const seen: string[] = []
      const trap = await listenOn(new URL(gone.origin).port, (body) => seen.push(body))
      try {
        const t0 = performance.now()
        const r = await alice.callTool('gone__echo', { i: 6 })
        expect(performance.now() - t0).toBeLessThan(1_000)
        expect(textOf(r)).toMatch(/^UPSTREAM_UNAVAILABLE: upstream MCP server of "gone" failed 5 times in a row; calls are refused for \d+ s more/)
        // The trap does record what reaches that port (a control): nothing of Keyway's did.
        expect((await fetch(gone.url, { method: 'POST', body: 'control' })).status).toBe(503)
        expect(seen).toContain('POST control')
        expect(seen.filter((b) => b.includes('tools/call'))).toEqual([])
        // Other connections are untouched by gone's breaker.
        expect(textOf(await alice.callTool('everything__echo', { message: 'still here' }))).toBe('Echo: still here')

        // A reload that gives gone a new catalog: its list is read again, now without success.
        keyway.runtime.swap(await snapshotOf({ goneRefreshSeconds: 601 }))
        const after = await alice.listToolNames()
        expect(after.filter((n) => n.startsWith('gone__'))).toEqual([])
        expect(after).toEqual(expect.arrayContaining(['api', 'everything__echo', 'modern__echo', 'legacy__echo']))
        // carol's only source failed: an error, not an empty list.
        const failure = await carol.listToolNames().then(
          (names) => ({ names }),
          (e: unknown) => ({ error: String((e as Error).message) }),
        )
        expect(failure).toEqual({ error: expect.stringMatching(/UPSTREAM_UNAVAILABLE: tools of "gone" are unavailable/) })
        expect(seen.filter((b) => b.includes('tools/'))).toEqual([])
      } finally {
        await new Promise<void>((resolve) => {
          trap.closeAllConnections()
          trap.close(() => resolve())
        })
      }
    } finally {
      await alice.close()
      await carol.close()
    }
  })

  test('REVOKE: the next call is PERMISSION_DENIED, the upstream tools leave tools/list and a listener hears list_changed [mcp:revoke]', async () => {
    const bob = await client('bob')
    const listener = await listenForToolChanges(TEST_KEYS.bob)
    try {
      expect((await bob.listToolNames()).filter((n) => n.startsWith('modern__')).length).toBeGreaterThan(0)
      expect((await bob.callTool('modern__echo', { x: 1 })).isError).toBeFalsy()
      const changes = listener.changes
      const calls = toolCalls(modern.rec)
      keyway.runtime.swap(await snapshotOf({ bobOnModern: false, goneRefreshSeconds: 601 }))
      const r = await bob.callTool('modern__echo', { x: 2 })
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user bob@example\.com does not hold USE CONNECTION on connection "modern"/)
      expect(toolCalls(modern.rec)).toBe(calls)
      expect((await bob.listToolNames()).filter((n) => n.startsWith('modern__'))).toEqual([])
      await until('notifications/tools/list_changed', () => listener.changes > changes, 5_000)
    } finally {
      await listener.subscription.close()
      await listener.client.close()
      await bob.close()
    }
  })
})

interface Listener {
  readonly client: ModernClient
  readonly subscription: McpSubscription
  changes: number
}

/** A 2026-07-28 client listening on `subscriptions/listen` for tool list changes. */
async function listenForToolChanges(bearer: string): Promise<Listener> {
  const c = new ModernClient({ name: 'keyway-test-listener', version: '1.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await c.connect(new ModernTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${bearer}` } } }))
  const listener = { client: c, changes: 0 } as { client: ModernClient; subscription: McpSubscription; changes: number }
  c.setNotificationHandler('notifications/tools/list_changed', () => {
    listener.changes++
  })
  listener.subscription = await c.listen({ toolsListChanged: true })
  return listener
}

/** The upstreams called directly (not through Keyway) with each connection's token. */
async function directResults() {
  const everythingClient = new LegacyClient({ name: 'direct', version: '1.0.0' }, { capabilities: {} })
  await everythingClient.connect(new LegacyTransport(new URL(everything.url), { requestInit: { headers: { authorization: `Bearer ${TOKENS.everything}` } } }))
  const modernClient = new ModernClient({ name: 'direct', version: '1.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await modernClient.connect(new ModernTransport(new URL(modern.url), { requestInit: { headers: { authorization: `Bearer ${TOKENS.modern}` } } }))
  const legacyClient = new LegacyClient({ name: 'direct', version: '1.0.0' }, { capabilities: {} })
  await legacyClient.connect(new LegacyTransport(new URL(legacy.url), { requestInit: { headers: { authorization: `Bearer ${TOKENS.legacy}` } } }))
  const everythingEcho = (await everythingClient.callTool({ name: 'echo', arguments: { message: 'x' } })) as Record<string, unknown>
  const structured = (await everythingClient.callTool({ name: 'get-structured-content', arguments: { location: 'Chicago' } })) as Record<string, unknown>
  return {
    everythingEcho,
    structured,
    modernEcho: async (args: Record<string, unknown>) => (await modernClient.callTool({ name: 'echo', arguments: args })) as Record<string, unknown>,
    legacyEcho: async (args: Record<string, unknown>) => (await legacyClient.callTool({ name: 'echo', arguments: args })) as Record<string, unknown>,
    close: async () => {
      await everythingClient.close()
      await modernClient.close()
      await legacyClient.close()
    },
  }
}

/** An HTTP server on 127.0.0.1:`port` that records every request body and answers 503. */
function listenOn(port: string, onBody: (body: string) => void): Promise<Server> {
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d.toString()))
    req.on('end', () => {
      onBody(`${req.method} ${body}`)
      res.writeHead(503).end()
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(port), '127.0.0.1', () => resolve(server))
  })
}
