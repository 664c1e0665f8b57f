/**
 * `npm run bench`: what Keyway costs over calling the API directly. The same small GET is sent
 * (a) straight to a loopback upstream and (b) through Keyway as an MCP `tools/call`, with the
 * same HTTP client (an undici keep-alive pool) and the same concurrency, alternating the arms
 * in one run. The Keyway request is the exact bytes the official MCP clients send, captured at
 * start (2026-07-28 from `@modelcontextprotocol/client`, 2025-era from `@modelcontextprotocol/sdk`).
 * A second group fronts an upstream MCP server (`protocol: mcp`): the same 2026-07-28 `tools/call`
 * of a `whoami` tool (a) straight to the upstream and (b) through Keyway, each captured from the
 * modern client, with ratios against that group's own direct arm.
 * Keyway and the upstreams run in their own processes; this process only generates load.
 * `--client http` uses a node:http keep-alive load generator instead of undici (the method of
 * the reference measurement behind the targets). Prints throughput and p50/p99 per arm and the
 * ratios against direct. Not a test: the numbers
 * are measured, never asserted.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Agent } from 'undici'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { sha256Hex } from '../src/encoding.js'
import { formsOf, redactBytes } from '../src/redact.js'
import { packageRoot } from './paths.js'

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '1,8' },
    profile: { type: 'string' },
    client: { type: 'string', default: 'undici' },
  },
})
const SECONDS = Number(opts.seconds)
const ROUNDS = Number(opts.rounds)
const CONCURRENCY = opts.concurrency.split(',').map(Number)
if (opts.client !== 'undici' && opts.client !== 'http') throw new Error('--client is undici or http')
/** The load generator's HTTP client, the same for every arm: undici (fastest) or node:http keep-alive. */
const CLIENT: 'undici' | 'http' = opts.client
const API_KEY = 'kw_bench_key_0000000000000000000000000000000'
const UPSTREAM_TOKEN = 'bench-upstream-token'

interface Captured {
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: string
}

/** Where a client's tools/call goes: the MCP endpoint, its bearer token and the tool with its arguments. */
interface CallTarget {
  readonly url: string
  readonly token: string
  readonly tool: { readonly name: string; readonly arguments: Record<string, unknown> }
}

interface Arm {
  readonly name: string
  readonly run: (concurrency: number) => Promise<Sample>
}

interface Sample {
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly errors: number
}

/** Every child started, so that a failed start-up stops the ones already running. */
const children: ChildProcess[] = []

function stopChildren(): void {
  for (const child of children) child.kill('SIGTERM')
}

function startChild(args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(child)
    let seen = ''
    const onData = (d: Buffer): void => {
      seen += d.toString()
      const m = seen.match(ready)
      if (m) {
        child.stdout?.off('data', onData)
        child.stderr?.off('data', onData)
        resolve({ child, match: m })
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`child exited with ${code}: ${seen}`)))
  })
}

const UPSTREAM_SOURCE = `
const http = require('node:http')
const body = JSON.stringify({ login: 'bench', id: 1, plan: 'pro' })
http.createServer((req, res) => {
  if (req.headers.authorization !== 'Bearer ${UPSTREAM_TOKEN}') { res.writeHead(401); res.end(); return }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}).listen(0, '127.0.0.1', function () { console.log('upstream ' + this.address().port) })
`

/**
 * The upstream MCP server (an ES module; `@modelcontextprotocol/server` and `@hono/node-server`
 * are imported by the absolute URLs this process resolves): stateless `createMcpHandler`, a
 * bearer check (401 otherwise) and one tool, `whoami`, without input.
 */
function mcpUpstreamSource(): string {
  return `
import http from 'node:http'
import { McpServer, createMcpHandler } from ${JSON.stringify(import.meta.resolve('@modelcontextprotocol/server'))}
import { getRequestListener } from ${JSON.stringify(import.meta.resolve('@hono/node-server'))}
const handler = createMcpHandler(() => {
  const server = new McpServer({ name: 'bench-upstream', version: '1.0.0' })
  server.registerTool('whoami', { description: 'The caller' }, async () => ({ content: [{ type: 'text', text: '{"login":"bench"}' }] }))
  return server
})
const listener = getRequestListener((req) =>
  req.headers.get('authorization') === 'Bearer ${UPSTREAM_TOKEN}' ? handler.fetch(req) : new Response(null, { status: 401 }),
)
http.createServer(listener).listen(0, '127.0.0.1', function () { console.log('mcp upstream ' + this.address().port) })
`
}

const CLIENT_INFO = { name: 'keyway-bench', version: '1.0.0' }

/** Records the tools/call request an official client sends, to replay its exact bytes. */
async function capture(kind: 'modern' | 'legacy', target: CallTarget): Promise<Captured> {
  let captured: Captured | undefined
  const recordingFetch = async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const body = typeof init?.body === 'string' ? init.body : ''
    if (body.includes('"tools/call"')) {
      const headers: Record<string, string> = {}
      new Headers(init?.headers).forEach((v, k) => (headers[k] = v))
      captured = { path: new URL(url).pathname, headers, body }
    }
    return fetch(url, init)
  }
  const requestInit = { headers: { authorization: `Bearer ${target.token}` } }
  const args = { name: target.tool.name, arguments: target.tool.arguments }
  if (kind === 'modern') {
    const client = new ModernClient(CLIENT_INFO, { versionNegotiation: { mode: 'auto' } })
    await client.connect(new ModernTransport(new URL(target.url), { requestInit, fetch: recordingFetch }))
    await client.callTool(args)
    await client.close()
  } else {
    const client = new LegacyClient(CLIENT_INFO)
    await client.connect(new LegacyTransport(new URL(target.url), { requestInit, fetch: recordingFetch }))
    await client.callTool(args)
    await client.close()
  }
  if (!captured) throw new Error(`no tools/call captured from the ${kind} client`)
  return captured
}

/** Runs `concurrency` loops sending requests for `seconds`; latencies in ms. */
interface OutgoingRequest {
  readonly path: string
  readonly method: 'GET' | 'POST'
  readonly headers: Record<string, string>
  readonly body?: string
}

const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 })

/** One request with node:http over a keep-alive agent. */
function httpRequest(origin: string, req: OutgoingRequest): Promise<{ statusCode: number; text: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request(`${origin}${req.path}`, { method: req.method, headers: req.headers, agent: httpAgent }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    r.on('error', reject)
    r.end(req.body)
  })
}

async function send(agent: Agent, origin: string, req: OutgoingRequest): Promise<{ statusCode: number; text: string }> {
  if (CLIENT === 'http') return httpRequest(origin, req)
  const res = await agent.request({ origin, ...req })
  return { statusCode: res.statusCode, text: await res.body.text() }
}

async function load(
  agent: Agent,
  origin: string,
  make: (i: number) => OutgoingRequest,
  check: (status: number, body: string) => boolean,
  concurrency: number,
): Promise<Sample> {
  const latencies: number[] = []
  let errors = 0
  let i = 0
  const until = performance.now() + SECONDS * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < until) {
      const req = make(i++)
      const t0 = performance.now()
      try {
        const res = await send(agent, origin, req)
        if (!check(res.statusCode, res.text)) errors++
      } catch {
        errors++
      }
      latencies.push(performance.now() - t0)
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN
  return { rps: latencies.length / elapsed, p50: q(0.5), p99: q(0.99), errors }
}

/**
 * Redaction's own cost, in this process: a 256 KiB JSON answer (the default response cap) scanned
 * for the secrets of an OAuth call (access token, refresh token, client secret) in all their
 * forms, against `JSON.parse` of the same body, which every JSON result pays anyway.
 */
function redactionScan(): string {
  const rows: string[] = []
  for (let i = 0, size = 0; size < 256 * 1024 - 64; i++) {
    const row = JSON.stringify({ id: i, name: `item-${i}`, note: 'lorem ipsum dolor sit amet' })
    rows.push(row)
    size += row.length + 1
  }
  const json = `{"items":[${rows.join(',')}]}`
  const body = Buffer.from(json)
  const forms = formsOf(['ya29.a0AfB_byC-bench-access-token-3f9a7c1e5b', '1//0g-bench-refresh-token-8d2e4f6a1b', 'GOCSPX-bench-client-secret'])
  const time = (fn: () => void): number => {
    const samples: number[] = []
    for (let r = 0; r < 200; r++) {
      const t0 = process.hrtime.bigint()
      fn()
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
    return median(samples)
  }
  const scan = time(() => redactBytes(body, forms))
  const parse = time(() => JSON.parse(json) as unknown)
  return (
    `redaction of a ${Math.round(body.length / 1024)} KiB answer (${forms.bytes.length} secret forms, median of 200)\n` +
    `  scan ${scan.toFixed(3)} ms   JSON.parse of the same body ${parse.toFixed(3)} ms   scan / parse ${(scan / parse).toFixed(2)}\n\n`
  )
}

/** Medians of the rounds' throughput and percentiles; errors summed over the rounds. */
function summarize(rounds: readonly Sample[]): Sample {
  return {
    rps: median(rounds.map((x) => x.rps)),
    p50: median(rounds.map((x) => x.p50)),
    p99: median(rounds.map((x) => x.p99)),
    errors: rounds.reduce((a, x) => a + x.errors, 0),
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? NaN
}

async function main(): Promise<void> {
  const root = packageRoot()
  const upstream = await startChild(['-e', UPSTREAM_SOURCE], /upstream (\d+)/)
  const upstreamOrigin = `http://127.0.0.1:${upstream.match[1]}`
  const mcpUpstream = await startChild(['--input-type=module', '-e', mcpUpstreamSource()], /mcp upstream (\d+)/)
  const mcpUpstreamOrigin = `http://127.0.0.1:${mcpUpstream.match[1]}`
  const dir = mkdtempSync(path.join(tmpdir(), 'keyway-bench-'))
  const config = path.join(dir, 'connections.yaml')
  writeFileSync(
    config,
    `version: 1
server: { host: 127.0.0.1, port: 0 }
identity:
  apiKeys:
    - { user: bench@example.com, sha256: ${sha256Hex(API_KEY)} }
store: { url: memory://, dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true }
groups: { bench: [bench@example.com] }
connections:
  bench_api:
    host: ${upstreamOrigin}
    isMcpConnection: true
    owner: { user: owner@example.com }
    auth: { type: bearer_token, token: { env: BENCH_UPSTREAM_TOKEN } }
  bench_mcp:
    host: ${mcpUpstreamOrigin}
    basePath: /mcp
    protocol: mcp
    isMcpConnection: true
    owner: { user: owner@example.com }
    auth: { type: bearer_token, token: { env: BENCH_UPSTREAM_TOKEN } }
grants:
  - { privilege: USE CONNECTION, on: bench_api, to: { group: bench } }
  - { privilege: USE CONNECTION, on: bench_mcp, to: { group: bench } }
`,
  )
  // --profile DIR writes a V8 CPU profile of the Keyway process (open it in Chrome DevTools).
  const profile = opts.profile ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(opts.profile)] : []
  const keyway = await startChild(
    [...profile, path.join(root, 'dist/tools/keyway.js'), 'serve', '--no-watch', '--config', config],
    /listening on (http:\/\/[^\s]+)\/mcp/,
    { BENCH_UPSTREAM_TOKEN: UPSTREAM_TOKEN },
  )
  const keywayOrigin = keyway.match[1] ?? ''
  const mcpUrl = `${keywayOrigin}/mcp`
  try {
    const viaKeyway = { url: mcpUrl, token: API_KEY }
    const modern = await capture('modern', { ...viaKeyway, tool: { name: 'bench_api', arguments: { method: 'GET', path: '/whoami' } } })
    const legacy = await capture('legacy', { ...viaKeyway, tool: { name: 'bench_api', arguments: { method: 'GET', path: '/whoami' } } })
    const mcpDirect = await capture('modern', { url: `${mcpUpstreamOrigin}/mcp`, token: UPSTREAM_TOKEN, tool: { name: 'whoami', arguments: {} } })
    const mcpViaKeyway = await capture('modern', { ...viaKeyway, tool: { name: 'bench_mcp__whoami', arguments: {} } })
    const agent = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 30_000 })
    const direct = (): { path: string; method: 'GET'; headers: Record<string, string> } => ({
      path: '/whoami',
      method: 'GET',
      headers: { authorization: `Bearer ${UPSTREAM_TOKEN}`, accept: 'application/json' },
    })
    const replay = (c: Captured) => (i: number) => ({
      path: c.path,
      method: 'POST' as const,
      headers: c.headers,
      body: c.body.replace(/"id":\d+/, `"id":${i + 1}`),
    })
    const okDirect = (status: number, body: string): boolean => status === 200 && body.includes('"bench"')
    const okTool = (status: number, body: string): boolean => status === 200 && body.includes('\\"bench\\"') && !body.includes('"isError":true')
    // Each group's first arm is its baseline for × direct and +p50.
    const groups: Arm[][] = [
      [
        { name: 'direct to the upstream', run: (c) => load(agent, upstreamOrigin, direct, okDirect, c) },
        { name: 'Keyway, 2026-07-28 tools/call', run: (c) => load(agent, keywayOrigin, replay(modern), okTool, c) },
        { name: 'Keyway, 2025-era tools/call', run: (c) => load(agent, keywayOrigin, replay(legacy), okTool, c) },
      ],
      [
        { name: 'direct to the upstream MCP server', run: (c) => load(agent, mcpUpstreamOrigin, replay(mcpDirect), okTool, c) },
        { name: 'Keyway → upstream MCP, 2026-07-28', run: (c) => load(agent, keywayOrigin, replay(mcpViaKeyway), okTool, c) },
      ],
    ]
    const arms = groups.flat()
    const width = Math.max(...arms.map((a) => a.name.length))
    const cpu = cpus()[0]?.model ?? 'unknown cpu'
    process.stdout.write(`machine: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}\n`)
    process.stdout.write(`method: ${ROUNDS} alternating rounds × ${SECONDS} s per arm; medians of the rounds; load client ${CLIENT}\n\n`)
    for (const arm of arms) await arm.run(2) // warm up JITs, pools and caches
    for (const c of CONCURRENCY) {
      const results = new Map(arms.map((arm) => [arm, [] as Sample[]]))
      for (let r = 0; r < ROUNDS; r++) for (const arm of arms) results.get(arm)?.push(await arm.run(c))
      process.stdout.write(`concurrency ${c}\n`)
      process.stdout.write(
        `  ${'arm'.padEnd(width)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'errors'.padStart(7)} ${'× direct'.padStart(9)} ${'+p50 ms'.padStart(8)}\n`,
      )
      for (const [g, group] of groups.entries()) {
        if (g > 0) process.stdout.write('\n')
        const summaries = group.map((arm) => summarize(results.get(arm) ?? []))
        const base = summaries[0]!
        for (const [k, arm] of group.entries()) {
          const { rps, p50, p99, errors } = summaries[k]!
          process.stdout.write(
            `  ${arm.name.padEnd(width)} ${rps.toFixed(0).padStart(8)} ${p50.toFixed(3).padStart(8)} ${p99.toFixed(3).padStart(8)} ${String(errors).padStart(7)} ${(rps / base.rps).toFixed(3).padStart(9)} ${(p50 - base.p50).toFixed(3).padStart(8)}\n`,
          )
        }
      }
      process.stdout.write('\n')
    }
    process.stdout.write(redactionScan())
    await agent.close()
    httpAgent.destroy()
  } finally {
    stopChildren()
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`)
  stopChildren()
  process.exit(1)
})
