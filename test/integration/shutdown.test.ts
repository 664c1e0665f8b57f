/**
 * Drain on SIGTERM (README "Shutdown and readiness"), against a spawned `keyway serve` (the built
 * bin), a real loopback upstream and real MCP clients: `/readyz` turns 503 at once, a call that
 * finishes within `server.drainTimeoutMs` is answered normally, a new call is refused, and calls
 * still running when the drain time is up (40 s upstream requests, one through the fast path and
 * one through the SDK) end with `UPSTREAM_UNAVAILABLE: server shutting down`, their upstream
 * sockets closed, audited as stopped, and the process exits within the drain plus 2 s. Stdio mode
 * drains the same way.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import type { ServerResponse } from 'node:http'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { StdioClientTransport as LegacyStdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { apiKeyLines, TEST_KEYS, writeTempConfig } from '../helpers/config.js'
import { connectClient, textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { KEYWAY_BIN, spawnKeyway } from '../helpers/spawn-keyway.js'
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js'
import { until } from '../helpers/wait.js'

const DRAIN_MS = 2_000
/** The acceptance bound: exit within the drain plus 2 s (README "Shutdown and readiness"). */
const EXIT_BOUND_MS = DRAIN_MS + 2_000
const SLOW_MS = 40_000

let upstream: Upstream
/** Upstream requests whose socket closed before the answer was sent (path → count). */
const cutEarly = new Map<string, number>()
let releaseShort: () => void = () => undefined

beforeAll(async () => {
  upstream = await startUpstream((req: RecordedRequest, res: ServerResponse) => {
    res.on('close', () => {
      if (!res.writableEnded) cutEarly.set(req.path, (cutEarly.get(req.path) ?? 0) + 1)
    })
    const answer = (): void => {
      if (res.destroyed) return
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: true, path: req.path }))
    }
    if (req.path === '/api/slow') setTimeout(answer, SLOW_MS).unref()
    else if (req.path === '/api/short') releaseShort = answer
    else answer()
  })
})
afterAll(async () => {
  await upstream?.close()
})

function configText(extra = ''): string {
  return `version: 1
server: { port: 0, drainTimeoutMs: ${DRAIN_MS} }
identity:
  stdioUser: alice@example.com
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 60000 }
${extra}connections:
  notes:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { file: ./token.txt } }
`
}

const arrived = (p: string): number => upstream.requests.filter((r) => r.path === p).length

async function auditLines(dir: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path.join(dir, 'audit.jsonl'), 'utf8')
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.type === 'tool.call')
}

describe('SIGTERM drains, then aborts what is left', () => {
  test('readyz 503 at once; a short call completes, a new one is refused, 40 s calls (fast path and SDK) end with server shutting down, upstream sockets cut, audited, exit within drain + 2 s [serve:drain]', async () => {
    const { dir, file } = await writeTempConfig(configText(), { 'token.txt': 'sk-shutdown-token\n' })
    await using k = await spawnKeyway(['serve', '--config', file, '--no-watch'])
    const mcpUrl = k.mcpUrl as string
    const base = mcpUrl.replace(/\/mcp$/, '')
    const modern = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.alice })
    // A 2025-era call with a _meta the fast path does not take: served by the SDK.
    const legacy = new LegacyClient({ name: 'keyway-test-sdk-path', version: '1.0.0' }, { capabilities: {} })
    await legacy.connect(new LegacyTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${TEST_KEYS.alice}` } } }))
    expect((await fetch(`${base}/readyz`)).status).toBe(200)

    const slowOnFastPath = modern.callTool('notes', { method: 'GET', path: '/slow' })
    const slowOnSdk = legacy.callTool({
      name: 'notes',
      arguments: { method: 'GET', path: '/slow' },
      _meta: { 'example.com/trace': 'sdk-path' },
    }) as Promise<ToolCallResult>
    const short = modern.callTool('notes', { method: 'GET', path: '/short' })
    await until('three calls at the upstream', () => arrived('/api/slow') === 2 && arrived('/api/short') === 1)

    const t0 = performance.now()
    k.signal('SIGTERM')
    // Not ready at once: the first probe after the signal is handled says draining.
    let readyz: Response | undefined
    await until('/readyz to answer 503', async () => (readyz = await fetch(`${base}/readyz`)).status === 503, 1_000)
    const readyAfterMs = performance.now() - t0
    const report = (await (readyz as Response).json()) as { status: string; checks: Record<string, { ok: boolean; blocking?: boolean }> }
    expect(report.status).toBe('draining')
    expect(report.checks.draining).toMatchObject({ ok: false, blocking: true })

    // A call arriving while draining is refused before anything is sent upstream.
    const before = upstream.requests.length
    const refused = await modern.callTool('notes', { method: 'GET', path: '/refused' })
    expect(refused.isError).toBe(true)
    expect(textOf(refused)).toBe('UPSTREAM_UNAVAILABLE: server shutting down')
    expect(upstream.requests.length).toBe(before)

    // The short call was in flight at SIGTERM and finishes within the drain: answered normally.
    releaseShort()
    const shortResult = await short
    expect(shortResult.isError).toBeFalsy()
    expect(shortResult.structuredContent?.status).toBe(200)

    const [fast, sdk] = await Promise.all([slowOnFastPath, slowOnSdk])
    const answeredAfterMs = performance.now() - t0
    for (const r of [fast, sdk]) {
      expect(r.isError).toBe(true)
      expect(textOf(r)).toBe('UPSTREAM_UNAVAILABLE: server shutting down')
    }
    await until('the upstream to see both sockets close', () => cutEarly.get('/api/slow') === 2, 2_000)
    const code = await k.exited()
    const exitedAfterMs = performance.now() - t0
    console.log(
      `[shutdown] readyz 503 after ${readyAfterMs.toFixed(0)} ms; stopped calls answered after ${answeredAfterMs.toFixed(0)} ms; exit after ${exitedAfterMs.toFixed(0)} ms (drain ${DRAIN_MS} ms)`,
    )
    expect(code).toBe(0)
    expect(readyAfterMs).toBeLessThan(1_000)
    expect(answeredAfterMs).toBeGreaterThanOrEqual(DRAIN_MS - 50)
    expect(exitedAfterMs).toBeLessThan(EXIT_BOUND_MS)
    expect(k.stderr()).toContain('drain time is up; aborting the tool calls still in flight')

    const lines = await auditLines(dir)
    const slow = lines.filter((e) => e.path === '/slow')
    expect(slow).toHaveLength(2)
    for (const e of slow) {
      expect(e).toMatchObject({ decision: 'allow', error: 'UPSTREAM_UNAVAILABLE', stopped: 'shutdown' })
      expect(e.status).toBeUndefined()
    }
    expect(lines.find((e) => e.path === '/short')).toMatchObject({ status: 200 })
    expect(lines.find((e) => e.path === '/short')?.stopped).toBeUndefined()
    expect(lines.find((e) => e.path === '/refused')).toMatchObject({ error: 'UPSTREAM_UNAVAILABLE', stopped: 'draining' })
    await modern.close().catch(() => undefined)
    await legacy.close().catch(() => undefined)
  })

  test('with nothing in flight, SIGTERM exits at once', async () => {
    const { file } = await writeTempConfig(configText(), { 'token.txt': 'sk-shutdown-token\n' })
    await using k = await spawnKeyway(['serve', '--config', file])
    const t0 = performance.now()
    k.signal('SIGTERM')
    expect(await k.exited()).toBe(0)
    const ms = performance.now() - t0
    console.log(`[shutdown] idle exit after ${ms.toFixed(0)} ms`)
    expect(ms).toBeLessThan(1_500)
  })

  test('stdio: SIGTERM drains the same way; the 40 s call ends with server shutting down [serve:drain]', async () => {
    const { file } = await writeTempConfig(configText(), { 'token.txt': 'sk-shutdown-token\n' })
    const transport = new LegacyStdio({ command: process.execPath, args: [KEYWAY_BIN, 'serve', '--stdio', '--config', file], stderr: 'pipe' })
    const client = new LegacyClient({ name: 'keyway-test-stdio', version: '1.0.0' }, { capabilities: {} })
    await client.connect(transport)
    const exited = new Promise<void>((resolve) => (client.onclose = resolve))
    const slowBefore = arrived('/api/slow')
    const cutBefore = cutEarly.get('/api/slow') ?? 0
    const call = client.callTool({ name: 'notes', arguments: { method: 'GET', path: '/slow' } }) as Promise<ToolCallResult>
    await until('the stdio call at the upstream', () => arrived('/api/slow') === slowBefore + 1)
    const pid = transport.pid
    expect(pid).toBeTypeOf('number')
    const t0 = performance.now()
    process.kill(pid as number, 'SIGTERM')
    const r = await call
    expect(r.isError).toBe(true)
    expect(textOf(r)).toBe('UPSTREAM_UNAVAILABLE: server shutting down')
    const answeredAfterMs = performance.now() - t0
    await exited
    const exitedAfterMs = performance.now() - t0
    console.log(`[shutdown] stdio: answered after ${answeredAfterMs.toFixed(0)} ms, exited after ${exitedAfterMs.toFixed(0)} ms`)
    expect(answeredAfterMs).toBeGreaterThanOrEqual(DRAIN_MS - 50)
    expect(exitedAfterMs).toBeLessThan(EXIT_BOUND_MS)
    await until('the upstream socket of the stdio call to close', () => (cutEarly.get('/api/slow') ?? 0) === cutBefore + 1, 2_000)
    await client.close().catch(() => undefined)
  })
})
