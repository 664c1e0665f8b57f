/**
 * Attack suite, inputs: what a client can do to Keyway's listeners before any grant is looked at.
 * Endless chunked bodies (300 MiB, streamed from one reused chunk, never held by the test) to
 * every kind of route of a spawned `keyway serve`, watching its resident memory; lying
 * `Content-Length`s; JSON depth bombs; JSON-RPC batches; tool arguments too deep; headers and
 * bodies sent slowly; more connections than the cap. Each row proves the refusal and that nothing
 * reached the upstream.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { BATCH_REFUSED, MAX_MCP_JSON_DEPTH } from '../../src/http/app.js'
import { FORM_MAX_BYTES } from '../../src/http/body-limit.js'
import { DEFAULT_LISTENER_LIMITS } from '../../src/http/listen.js'
import { createMemoryLogger } from '../../src/log.js'
import { argumentLimitProblem, MAX_ARGUMENT_DEPTH } from '../../src/mcp/tool-schema.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS, writeTempConfig } from '../helpers/config.js'
import { connectClient, textOf, type TestClient } from '../helpers/mcp-clients.js'
import { bodyOf, exchange, headerOf, openRaw, statusOf, streamChunked, type RawSocket } from '../helpers/raw-http.js'
import { spawnKeyway, type SpawnedKeyway } from '../helpers/spawn-keyway.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const TOKEN = 'sk-CANARY-inputs-token-5d1e'
const MiB = 1024 * 1024
const DEFAULT_MAX_REQUEST_BYTES = MiB
/** The issue's figure: a 300 MiB chunked body to any route leaves RSS within 20 MiB of idle. */
const ATTACK_BYTES = 300 * MiB
const RSS_BUDGET_BYTES = 20 * MiB
/**
 * What a client can push into loopback socket buffers (send and receive side) after the server
 * stops reading, beyond the cap itself. Far below the 300 MiB offered: the server stopped reading.
 */
const SOCKET_BUFFERS_BYTES = 48 * MiB

const configYaml = (upstreamOrigin: string, server = 'server: { port: 0 }'): string => `
version: 1
${server}
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
connections:
  notes:
    host: ${upstreamOrigin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: TOKEN } }
`

const mcpHeaders = (version = '2025-06-18'): Record<string, string> => ({
  authorization: `Bearer ${TEST_KEYS.alice}`,
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': version,
})

const toolCall = (id: number, args: unknown): Record<string, unknown> => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'notes', arguments: args },
})

/** `n` nested arrays around a number: `[[[…1…]]]`. */
const nestedArrays = (n: number): string => `${'['.repeat(n)}1${']'.repeat(n)}`
/** A value `n` levels deep (objects and arrays count as levels). */
const nestedValue = (n: number): unknown => JSON.parse(nestedArrays(n)) as unknown

let upstream: Upstream
beforeAll(async () => {
  upstream = await startUpstream()
})
afterAll(async () => {
  await upstream?.close()
})
beforeEach(() => {
  upstream.requests.length = 0
})

describe('300 MiB chunked bodies against a spawned keyway serve [input:body-cap]', () => {
  let keyway: SpawnedKeyway
  let origin: string

  /** VmRSS or VmHWM (the peak since the last reset) of the Keyway process, in bytes. */
  const memory = (field: 'VmRSS' | 'VmHWM'): number => {
    const status = readFileSync(`/proc/${keyway.process.pid}/status`, 'utf8')
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)
    if (!m) throw new Error(`no ${field} in /proc/<pid>/status`)
    return Number(m[1]) * 1024
  }
  /** Resets VmHWM to the current RSS (Linux clear_refs 5), so the next peak is this attack's. */
  const resetPeak = (): void => writeFileSync(`/proc/${keyway.process.pid}/clear_refs`, '5')

  const routes: readonly { what: string; head: () => string; cap: number; kind: 'json-rpc' | 'page' | 'json' }[] = [
    {
      what: 'POST /mcp (authenticated)',
      head: () =>
        `POST /mcp HTTP/1.1\r\nhost: ${new URL(origin).host}\r\n${Object.entries(mcpHeaders())
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join('')}`,
      cap: DEFAULT_MAX_REQUEST_BYTES,
      kind: 'json-rpc',
    },
    {
      what: 'POST /connect/:flowId (no authentication needed)',
      head: () => `POST /connect/flow-that-does-not-exist HTTP/1.1\r\nhost: ${new URL(origin).host}\r\ncontent-type: application/x-www-form-urlencoded\r\n`,
      cap: FORM_MAX_BYTES,
      kind: 'page',
    },
    {
      what: 'GET /healthz (takes no body)',
      head: () => `GET /healthz HTTP/1.1\r\nhost: ${new URL(origin).host}\r\n`,
      cap: 0,
      kind: 'json',
    },
    {
      what: 'POST /login/oauth/http.html (takes no body)',
      head: () => `POST /login/oauth/http.html HTTP/1.1\r\nhost: ${new URL(origin).host}\r\n`,
      cap: 0,
      kind: 'json',
    },
  ]

  beforeAll(async () => {
    const { dir, file } = await writeTempConfig(configYaml(upstream.origin))
    keyway = await spawnKeyway(['serve', '--config', file, '--no-watch'], { cwd: dir, env: { TOKEN } })
    origin = new URL(keyway.mcpUrl ?? '').origin
    // Warm-up: every path the attacks take, once each with a small over-cap body, plus real calls.
    const client = await connectClient('modern', `${origin}/mcp`, { bearer: TEST_KEYS.alice })
    for (let i = 0; i < 20; i++) expect((await client.callTool('notes', { path: '/warm' })).isError).toBeFalsy()
    await client.close()
    for (const r of routes) expect(statusOf((await streamChunked(origin, r.head(), 16 * MiB)).response)).toBe(413)
  }, 60_000)
  afterAll(async () => {
    await keyway?.stop()
  })

  for (const r of routes) {
    test(`${r.what}: 413 with Connection: close after at most the cap (${r.cap} bytes), RSS within 20 MiB of idle`, async () => {
      // Idle: what the process holds between requests after the warm-up (and the attacks before).
      const idle = memory('VmRSS')
      resetPeak()
      const out = await streamChunked(origin, r.head(), ATTACK_BYTES)
      expect(statusOf(out.response)).toBe(413)
      expect(headerOf(out.response, 'connection')).toBe('close')
      const body = bodyOf(out.response)
      if (r.kind === 'json-rpc')
        expect(JSON.parse(body)).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32000, message: `request body exceeds ${r.cap} bytes` } })
      else if (r.kind === 'page') expect(body).toContain(`request body exceeds ${r.cap} bytes`)
      else expect(JSON.parse(body)).toEqual({ error: 'payload_too_large', message: 'this route takes no request body' })
      // The client stopped long before 300 MiB: the server stopped reading at the cap.
      expect(out.bodyBytesWritten).toBeLessThan(r.cap + SOCKET_BUFFERS_BYTES)
      const peak = memory('VmHWM')
      expect(peak - idle, `peak ${peak >> 20} MiB, idle ${idle >> 20} MiB`).toBeLessThan(RSS_BUDGET_BYTES)
      expect(upstream.requests).toHaveLength(0)
    }, 60_000)
  }

  test('after the attacks the same process still serves a tool call', async () => {
    const client = await connectClient('modern', `${origin}/mcp`, { bearer: TEST_KEYS.alice })
    const r = await client.callTool('notes', { path: '/after' })
    await client.close()
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(upstream.requests.map((q) => q.path)).toEqual(['/after'])
  })
})

describe('lying and conflicting framing at /mcp [input:body-cap]', () => {
  let keyway: HttpKeyway
  let origin: string
  beforeAll(async () => {
    const { snapshot } = await loadTestConfig(configYaml(upstream.origin, 'server: { port: 0, maxRequestBytes: 65536 }'), { TOKEN })
    keyway = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
    origin = keyway.http?.url ?? ''
  })
  afterAll(async () => {
    await keyway?.close()
  })

  const head = (extra: string): string =>
    `POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(mcpHeaders())
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')}${extra}`

  test('a Content-Length above server.maxRequestBytes: 413 and close from the headers alone, before any body byte is sent', async () => {
    const raw = await exchange(origin, `${head('content-length: 10485760\r\n')}\r\n`)
    expect(statusOf(raw)).toBe(413)
    expect(headerOf(raw, 'connection')).toBe('close')
    expect(JSON.parse(bodyOf(raw))).toMatchObject({ error: { message: 'request body exceeds 65536 bytes' } })
    expect(upstream.requests).toHaveLength(0)
  })

  test('a Content-Length above the cap on a route without authentication: the same 413, unauthenticated', async () => {
    const raw = await exchange(origin, `POST /connect/x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1048576\r\n\r\n`)
    expect(statusOf(raw)).toBe(413)
    expect(headerOf(raw, 'connection')).toBe('close')
  })

  test('a chunked body just over the cap: 413, nothing reached the upstream', async () => {
    const out = await streamChunked(origin, head(''), 65536 + 1, 4096 + 1)
    expect(statusOf(out.response)).toBe(413)
    expect(upstream.requests).toHaveLength(0)
  })

  test('a Content-Length smaller than what follows: only the declared bytes are the body, the rest is a broken request and the socket closes', async () => {
    const call = JSON.stringify(toolCall(1, { path: '/smuggled' }))
    const raw = await exchange(origin, Buffer.concat([Buffer.from(`${head('content-length: 20\r\n')}\r\n${call}`), Buffer.alloc(2 * MiB, 0x61)]))
    // Node's parser meets the junk after the 20 declared bytes and answers 400 itself; the 20
    // bytes alone are no JSON either. Either way nothing past the declared length became a body.
    expect(statusOf(raw)).toBe(400)
    expect(raw).not.toMatch(/HTTP\/1\.1 200/)
    expect(upstream.requests).toHaveLength(0)
  })

  test('Content-Length and Transfer-Encoding together: refused by the parser, nothing served', async () => {
    const call = JSON.stringify(toolCall(1, { path: '/smuggled' }))
    const raw = await exchange(
      origin,
      `${head(`content-length: ${call.length}\r\ntransfer-encoding: chunked\r\n`)}\r\n${call.length.toString(16)}\r\n${call}\r\n0\r\n\r\n`,
    )
    expect(statusOf(raw)).toBe(400)
    expect(upstream.requests).toHaveLength(0)
  })

  test('a body on a route that takes none, with a Content-Length: 413 before the route runs', async () => {
    const raw = await exchange(origin, 'GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5\r\n\r\nhello')
    expect(statusOf(raw)).toBe(413)
    expect(JSON.parse(bodyOf(raw))).toEqual({ error: 'payload_too_large', message: 'this route takes no request body' })
  })
})

describe('JSON depth, batches and tool arguments at /mcp', () => {
  let keyway: HttpKeyway
  let mcpUrl: string
  let alice: TestClient
  let bob: TestClient
  beforeAll(async () => {
    const { snapshot } = await loadTestConfig(configYaml(upstream.origin), { TOKEN })
    keyway = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
    mcpUrl = `${keyway.http?.url}/mcp`
    alice = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.alice })
    bob = await connectClient('modern', mcpUrl, { bearer: TEST_KEYS.bob })
  })
  afterAll(async () => {
    await alice?.close()
    await bob?.close()
    await keyway?.close()
  })

  const post = (body: string, version?: string): Promise<Response> => fetch(mcpUrl, { method: 'POST', headers: mcpHeaders(version), body })

  const bombs: readonly [string, () => string][] = [
    ['a 100 000-deep array as the whole body', () => nestedArrays(100_000)],
    [
      'a 100 000-deep array in the tool arguments',
      () => JSON.stringify(toolCall(1, { path: '/x', body: 0 })).replace('"body":0', `"body":${nestedArrays(100_000)}`),
    ],
    [
      `arguments one level past the envelope limit (${MAX_MCP_JSON_DEPTH})`,
      () => JSON.stringify(toolCall(1, { path: '/x', body: nestedValue(MAX_MCP_JSON_DEPTH) })),
    ],
    [
      'a deep object in params._meta',
      () =>
        JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: JSON.parse(`${'{"a":'.repeat(500)}1${'}'.repeat(500)}`) as unknown } }),
    ],
  ]
  for (const [what, body] of bombs) {
    test(`${what}: 400 -32600 naming the limit, before the SDK [input:json-depth]`, async () => {
      const r = await post(body())
      expect(r.status).toBe(400)
      expect(await r.json()).toEqual({
        jsonrpc: '2.0',
        id: null,
        error: { code: -32600, message: `Invalid Request: JSON nested deeper than ${MAX_MCP_JSON_DEPTH} levels` },
      })
      expect(upstream.requests).toHaveLength(0)
    })
  }

  const batches: readonly [string, () => unknown[], string][] = [
    ['100 tool calls', () => Array.from({ length: 100 }, (_, i) => toolCall(i + 1, { path: `/batch/${i}` })), '2025-06-18'],
    ['100 tool calls from a 2025-03-26 client', () => Array.from({ length: 100 }, (_, i) => toolCall(i + 1, { path: `/batch/${i}` })), '2025-03-26'],
    ['one tool call in an array', () => [toolCall(1, { path: '/batch/one' })], '2025-06-18'],
    ['one tool call in an array, 2026-07-28', () => [toolCall(1, { path: '/batch/one' })], '2026-07-28'],
    ['an empty array', () => [], '2025-06-18'],
  ]
  for (const [what, batch, version] of batches) {
    test(`a batch of ${what}: 400 with JSON-RPC -32600, no call runs [input:no-batch]`, async () => {
      const r = await post(JSON.stringify(batch()), version)
      expect(r.status).toBe(400)
      expect(await r.json()).toEqual(BATCH_REFUSED)
      expect(upstream.requests).toHaveLength(0)
    })
  }

  test(`tool arguments deeper than ${MAX_ARGUMENT_DEPTH} levels: INVALID_REQUEST naming the limit, nothing sent [input:json-depth]`, async () => {
    const r = await alice.callTool('notes', { method: 'POST', path: '/deep', body: nestedValue(MAX_ARGUMENT_DEPTH) })
    expect(textOf(r)).toBe(`INVALID_REQUEST: arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`)
    expect(upstream.requests).toHaveLength(0)
  })

  test(`tool arguments exactly ${MAX_ARGUMENT_DEPTH} levels deep are served`, async () => {
    const r = await alice.callTool('notes', { method: 'POST', path: '/deep', body: nestedValue(MAX_ARGUMENT_DEPTH - 1) })
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(upstream.requests).toHaveLength(1)
  })

  test('deep arguments from a caller without the grant: PERMISSION_DENIED, not a schema detail [grant:decide-first]', async () => {
    const r = await bob.callTool('notes', { method: 'POST', path: '/deep', body: nestedValue(MAX_ARGUMENT_DEPTH + 5) })
    expect(textOf(r)).toMatch(/^PERMISSION_DENIED: /)
    expect(upstream.requests).toHaveLength(0)
  })
})

describe('the argument bounds, row by row [input:json-depth]', () => {
  const rows: readonly [string, unknown, number, string | undefined][] = [
    ['a plain call', { path: '/x' }, 1024, undefined],
    ['no arguments at all', undefined, 1024, undefined],
    [`a body ${MAX_ARGUMENT_DEPTH - 1} levels deep (${MAX_ARGUMENT_DEPTH} with the arguments)`, { body: nestedValue(MAX_ARGUMENT_DEPTH - 1) }, 1024, undefined],
    [`a body ${MAX_ARGUMENT_DEPTH} levels deep`, { body: nestedValue(MAX_ARGUMENT_DEPTH) }, 1024, `arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`],
    ['brackets inside a string do not count', { body: '['.repeat(10_000) }, 1_000_000, undefined],
    ['arguments over the size cap (stdio has no request cap)', { body: 'a'.repeat(2048) }, 1024, 'arguments exceed 1024 bytes (server.maxRequestBytes)'],
    ['multi-byte characters counted as bytes', { body: 'é'.repeat(600) }, 1024, 'arguments exceed 1024 bytes (server.maxRequestBytes)'],
    [
      'a cycle',
      (() => {
        const a: Record<string, unknown> = {}
        a.self = a
        return a
      })(),
      1024,
      `arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`,
    ],
  ]
  for (const [what, args, max, problem] of rows) {
    test(`${what}: ${problem ?? 'within bounds'}`, () => {
      expect(argumentLimitProblem(args, max)).toBe(problem)
    })
  }
})

describe('slow clients and too many connections [input:timeouts]', () => {
  let keyway: HttpKeyway
  let origin: string
  const open: RawSocket[] = []
  beforeAll(async () => {
    const { snapshot } = await loadTestConfig(configYaml(upstream.origin, 'server: { port: 0, maxConnections: 2 }'), { TOKEN })
    // Short limits so the test awaits a close instead of sleeping through the real ones.
    keyway = await startHttp(snapshot, {
      port: 0,
      audit: createMemoryAuditLog(),
      log: createMemoryLogger(),
      listener: { headersTimeoutMs: 300, requestTimeoutMs: 600, connectionsCheckingIntervalMs: 50 },
    })
    origin = keyway.http?.url ?? ''
  })
  afterAll(async () => {
    for (const s of open) s.socket.destroy()
    await keyway?.close()
  })
  const track = (s: RawSocket): RawSocket => {
    open.push(s)
    return s
  }

  test('every listener gets the fixed limits and server.maxConnections by default', async () => {
    const { snapshot } = await loadTestConfig(configYaml(upstream.origin, 'server: { port: 0, maxConnections: 77 }'), { TOKEN })
    const k = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
    const server = k.http?.server
    await k.close()
    expect({
      headersTimeout: server?.headersTimeout,
      requestTimeout: server?.requestTimeout,
      keepAliveTimeout: server?.keepAliveTimeout,
      maxConnections: server?.maxConnections,
    }).toEqual({
      headersTimeout: DEFAULT_LISTENER_LIMITS.headersTimeoutMs,
      requestTimeout: DEFAULT_LISTENER_LIMITS.requestTimeoutMs,
      keepAliveTimeout: DEFAULT_LISTENER_LIMITS.keepAliveTimeoutMs,
      maxConnections: 77,
    })
  })

  test('headers that never finish (slowloris): the server closes the socket', async () => {
    const s = track(await openRaw(origin))
    s.socket.write('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ')
    await s.closed
    expect(statusOf(s.received()) ?? 408).toBe(408)
  })

  test('a body that never finishes (declared length): the server closes the socket, nothing reached the upstream', async () => {
    const s = track(await openRaw(origin))
    s.socket.write('POST /connect/flow HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ntoken=abc')
    await s.closed
    expect(statusOf(s.received()) ?? 408).toBe(408)
    expect(upstream.requests).toHaveLength(0)
  })

  test('a chunked /mcp body that never finishes: the server closes the socket, nothing reached the upstream', async () => {
    const s = track(await openRaw(origin))
    const call = JSON.stringify(toolCall(1, { path: '/slow' }))
    s.socket.write(
      `POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(mcpHeaders())
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('')}transfer-encoding: chunked\r\n\r\n10\r\n${call.slice(0, 16)}\r\n`,
    )
    await s.closed
    expect(upstream.requests).toHaveLength(0)
  })

  test('connections beyond server.maxConnections are closed on arrival; the open ones keep working [input:connection-cap]', async () => {
    const request = 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'
    const answered = (s: RawSocket): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (s.received().includes('"status":"ok"')) {
            s.socket.off('data', check)
            resolve()
          }
        }
        s.socket.on('data', check)
        check()
      })
    // Earlier tests' sockets may still count on the server (a half-closed 408 ends after the client's close event):
    // wait until the server holds none, so both slots are free.
    const server = keyway.http?.server
    for (;;) {
      const held = await new Promise<number>((resolve) => server?.getConnections((_e, n) => resolve(n)) ?? resolve(0))
      if (held === 0) break
      await new Promise((resolve) => setImmediate(resolve))
    }
    const first = track(await openRaw(origin))
    const second = track(await openRaw(origin))
    for (const s of [first, second]) {
      s.socket.write(request)
      await answered(s)
    }
    // Both slots are taken (each answered, so the server holds both); a third gets nothing.
    const third = await openRaw(origin).catch(() => undefined)
    if (third) {
      track(third)
      third.socket.write(request)
      await third.closed
      expect(third.received()).toBe('')
    }
    expect(first.isClosed() || second.isClosed()).toBe(false)
    first.socket.write(request)
    await new Promise<void>((resolve) => first.socket.once('data', () => resolve()))
    expect(first.received().match(/HTTP\/1\.1 200/g)).toHaveLength(2)
  })
})
