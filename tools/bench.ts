/**
 * `npm run bench`: what Keyway costs over calling the API directly. The same small GET is sent
 * (a) straight to a loopback upstream and (b) through Keyway as an MCP `tools/call`, with the
 * same HTTP client (an undici keep-alive pool) and the same concurrency, alternating the arms
 * in one run. The Keyway request is the exact bytes the official MCP clients send, captured at
 * start (2026-07-28 from `@modelcontextprotocol/client`, 2025-era from `@modelcontextprotocol/sdk`).
 * Keyway and the upstream run in their own processes; this process only generates load.
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
  readonly headers: Record<string, string>
  readonly body: string
}

interface Sample {
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly errors: number
}

function startChild(args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
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

/** Records the tools/call request an official client sends, to replay its exact bytes. */
async function capture(kind: 'modern' | 'legacy', mcpUrl: string): Promise<Captured> {
  let captured: Captured | undefined
  const recordingFetch = async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const body = typeof init?.body === 'string' ? init.body : ''
    if (body.includes('"tools/call"')) {
      const headers: Record<string, string> = {}
      new Headers(init?.headers).forEach((v, k) => (headers[k] = v))
      captured = { headers, body }
    }
    return fetch(url, init)
  }
  const requestInit = { headers: { authorization: `Bearer ${API_KEY}` } }
  const info = { name: 'keyway-bench', version: '1.0.0' }
  const args = { name: 'bench_api', arguments: { method: 'GET', path: '/whoami' } }
  if (kind === 'modern') {
    const client = new ModernClient(info, { versionNegotiation: { mode: 'auto' } })
    await client.connect(new ModernTransport(new URL(mcpUrl), { requestInit, fetch: recordingFetch }))
    await client.callTool(args)
    await client.close()
  } else {
    const client = new LegacyClient(info)
    await client.connect(new LegacyTransport(new URL(mcpUrl), { requestInit, fetch: recordingFetch }))
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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? NaN
}

async function main(): Promise<void> {
  const root = packageRoot()
  const upstream = await startChild(['-e', UPSTREAM_SOURCE], /upstream (\d+)/)
  const upstreamOrigin = `http://127.0.0.1:${upstream.match[1]}`
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
grants:
  - { privilege: USE CONNECTION, on: bench_api, to: { group: bench } }
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
    const modern = await capture('modern', mcpUrl)
    const legacy = await capture('legacy', mcpUrl)
    const agent = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 30_000 })
    const direct = (): { path: string; method: 'GET'; headers: Record<string, string> } => ({
      path: '/whoami',
      method: 'GET',
      headers: { authorization: `Bearer ${UPSTREAM_TOKEN}`, accept: 'application/json' },
    })
    const viaKeyway = (c: Captured) => (i: number) => ({
      path: '/mcp',
      method: 'POST' as const,
      headers: c.headers,
      body: c.body.replace(/"id":\d+/, `"id":${i + 1}`),
    })
    const okDirect = (status: number, body: string): boolean => status === 200 && body.includes('"bench"')
    const okTool = (status: number, body: string): boolean => status === 200 && body.includes('\\"bench\\"') && !body.includes('"isError":true')
    const arms = [
      { name: 'direct to the upstream', run: (c: number) => load(agent, upstreamOrigin, direct, okDirect, c) },
      { name: 'Keyway, 2026-07-28 tools/call', run: (c: number) => load(agent, keywayOrigin, viaKeyway(modern), okTool, c) },
      { name: 'Keyway, 2025-era tools/call', run: (c: number) => load(agent, keywayOrigin, viaKeyway(legacy), okTool, c) },
    ]
    const cpu = cpus()[0]?.model ?? 'unknown cpu'
    process.stdout.write(`machine: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}\n`)
    process.stdout.write(`method: ${ROUNDS} alternating rounds × ${SECONDS} s per arm; medians of the rounds; load client ${CLIENT}\n\n`)
    for (const arm of arms) await arm.run(2) // warm up JITs, pools and caches
    for (const c of CONCURRENCY) {
      const results = arms.map(() => [] as Sample[])
      for (let r = 0; r < ROUNDS; r++) for (const [k, arm] of arms.entries()) results[k]?.push(await arm.run(c))
      const base = { rps: median(results[0]!.map((s) => s.rps)), p50: median(results[0]!.map((s) => s.p50)) }
      process.stdout.write(`concurrency ${c}\n`)
      process.stdout.write(
        `  ${'arm'.padEnd(32)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'errors'.padStart(7)} ${'× direct'.padStart(9)} ${'+p50 ms'.padStart(8)}\n`,
      )
      for (const [k, arm] of arms.entries()) {
        const s = results[k]!
        const rps = median(s.map((x) => x.rps))
        const p50 = median(s.map((x) => x.p50))
        const p99 = median(s.map((x) => x.p99))
        const errors = s.reduce((a, x) => a + x.errors, 0)
        process.stdout.write(
          `  ${arm.name.padEnd(32)} ${rps.toFixed(0).padStart(8)} ${p50.toFixed(3).padStart(8)} ${p99.toFixed(3).padStart(8)} ${String(errors).padStart(7)} ${(rps / base.rps).toFixed(3).padStart(9)} ${(p50 - base.p50).toFixed(3).padStart(8)}\n`,
        )
      }
      process.stdout.write('\n')
    }
    process.stdout.write(redactionScan())
    await agent.close()
    httpAgent.destroy()
  } finally {
    keyway.child.kill('SIGTERM')
    upstream.child.kill('SIGTERM')
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`)
  process.exit(1)
})
