/**
 * Fault drills against real replicas (issue 11): three `keyway serve` processes from the built
 * bin on one private `redis-server`, each drill with its own recording token endpoint, a
 * loopback upstream and real MCP clients. A lease holder SIGKILLed mid-refresh; a token endpoint
 * answering 5xx under ~100 calls/s; an upstream that answers 401 to every token; a token endpoint
 * that hangs. Acceptance numbers are the issue's; timings are printed. The kill drill runs alone
 * (its bounds are latency bounds); the other three share the replicas and run at once.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { TokenRecord, TokenStore } from '../../src/store/index.js'
import { TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import type { SpawnedKeyway } from '../helpers/spawn-keyway.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { startRedisChild, type RedisChild } from './redis-child.js'
import { drillEnv, openDrillStore, startReplica, timed, type DrillConnection } from './replica-config.js'

const env = drillEnv()
let redis: RedisChild
let store: TokenStore
let upstream: Upstream
let refusing: Upstream
const te: Record<'kill' | 'flaky' | 'hang' | 'refused', TokenEndpoint> = {} as never
const replicas: SpawnedKeyway[] = []
const clients: TestClient[] = []
let a: TestClient
let b: TestClient
let c: TestClient
let killed: SpawnedKeyway

beforeAll(async () => {
  redis = await startRedisChild()
  store = await openDrillStore(redis.url, env)
  upstream = await startUpstream()
  // Refuses every token, as an API does whose grant was revoked behind the provider's back.
  refusing = await startUpstream((_req, res) => {
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token"' })
    res.end('{"error":"invalid_token"}')
  })
  for (const k of ['kill', 'flaky', 'hang', 'refused'] as const) te[k] = await startTokenEndpoint()
  const connections: DrillConnection[] = [
    { name: 'killdrill', type: 'oauth_m2m', tokenUrl: te.kill.tokenUrl, upstream: upstream.origin },
    { name: 'flaky', type: 'oauth_m2m', tokenUrl: te.flaky.tokenUrl, upstream: upstream.origin },
    { name: 'hang', type: 'oauth_m2m', tokenUrl: te.hang.tokenUrl, upstream: upstream.origin },
    { name: 'refused', type: 'oauth_m2m', tokenUrl: te.refused.tokenUrl, upstream: refusing.origin },
  ]
  for (let i = 0; i < 3; i++) replicas.push(await startReplica(redis.url, connections, env))
  for (const r of replicas) clients.push(await connectClient('modern', r.mcpUrl ?? '', { bearer: TEST_KEYS.bob }))
  ;[a, b, c] = clients as [TestClient, TestClient, TestClient]
  killed = replicas[0] as SpawnedKeyway
}, 60_000)

afterAll(async () => {
  await Promise.allSettled(clients.slice(1).map((cl) => cl.close()))
  await Promise.allSettled(replicas.map((r) => r.stop()))
  await store?.close()
  await Promise.allSettled([upstream?.close(), refusing?.close(), ...Object.values(te).map((t) => t.close())])
  await redis?.stop()
})

const get = (client: TestClient, tool: string): Promise<ToolCallResult> => client.callTool(tool, { method: 'GET', path: '/things' })
const bearer = (): string => String(upstream.last()?.headers.authorization ?? '')
const seed = (connection: string, accessToken: string, obtainedAt: number, expiresAt: number): Promise<void> =>
  store.putToken({ connection, user: null }, { method: 'oauth_m2m', accessToken, tokenType: 'bearer', obtainedAt, expiresAt } satisfies TokenRecord)
const until = async (cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

test('lease holder SIGKILLed mid-refresh: the other replica serves its valid token in under 100 ms, and the first call after expiry waits under 6 s', async () => {
  const now = Date.now()
  // 12.5 s lifetime, so a 3.1 s refresh window: inside it from the start, expired 3.5 s from now.
  const expiresAt = now + 3_500
  await seed('killdrill', 'seed-kill', now - 9_000, expiresAt)
  te.kill.setMode('hold')
  const first = await timed(() => get(a, 'killdrill'))
  expect(first.value.isError, textOf(first.value)).toBeFalsy()
  expect(bearer()).toBe('Bearer seed-kill')
  // Replica A refreshes ahead in the background: it holds the lease, its token request is held.
  await te.kill.held()
  killed.signal('SIGKILL')
  await killed.exited()
  const killedAt = Date.now()

  const served: number[] = []
  while (Date.now() < expiresAt - 400) {
    const r = await timed(() => get(b, 'killdrill'))
    expect(r.value.isError, textOf(r.value)).toBeFalsy()
    expect(bearer()).toBe('Bearer seed-kill')
    served.push(r.ms)
    await new Promise((res) => setTimeout(res, 100))
  }
  te.kill.release()
  await until(() => Date.now() > expiresAt + 20, 'the seeded token to expire')
  const after = await timed(() => get(b, 'killdrill'))
  expect(after.value.isError, textOf(after.value)).toBeFalsy()
  expect(bearer()).toMatch(/^Bearer tok-\d+$/)
  console.log(
    `[drill kill] valid-token calls on the surviving replica: n=${served.length}, max ${Math.max(...served).toFixed(1)} ms; ` +
      `first call after expiry waited ${after.ms.toFixed(0)} ms (holder killed ${killedAt - now} ms after the seed, token expired ${expiresAt - killedAt} ms after the kill)`,
  )
  expect(served.length).toBeGreaterThanOrEqual(5)
  expect(Math.max(...served)).toBeLessThan(100)
  expect(after.ms).toBeLessThan(6_000)
  // The dead holder's request and the survivor's: two token requests in all.
  expect(te.kill.requests).toHaveLength(2)
}, 30_000)

describe.concurrent('three drills at once on the surviving replicas', () => {
  test('token endpoint answering 5xx for 10 s under ~100 calls/s with an expired token: at most ~6 token requests, calls fail fast with CREDENTIAL_UNAVAILABLE and a retry-after', async () => {
    const now = Date.now()
    await seed('flaky', 'seed-flaky', now - 60_000, now - 1_000)
    te.flaky.setMode('fail')
    const started = Date.now()
    const calls: Promise<{ value: ToolCallResult; ms: number }>[] = []
    while (Date.now() - started < 10_000) {
      calls.push(timed(() => get(calls.length % 2 === 0 ? b : c, 'flaky')))
      await new Promise((res) => setTimeout(res, 10))
    }
    const results = await Promise.all(calls)
    const texts = results.map((r) => textOf(r.value))
    const ms = results.map((r) => r.ms).sort((x, y) => x - y)
    const p = (q: number): number => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))] ?? 0
    console.log(
      `[drill 5xx] ${results.length} calls in ${Date.now() - started} ms → ${te.flaky.requests.length} token requests; ` +
        `call time p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${(ms.at(-1) ?? 0).toFixed(1)} ms`,
    )
    expect(results.length).toBeGreaterThan(600)
    for (const t of texts) expect(t).toMatch(/^CREDENTIAL_UNAVAILABLE: connection "flaky": .*retry after \d+ s$/)
    expect(texts.filter((t) => t.includes('no new token request for')).length).toBeGreaterThan(results.length * 0.9)
    expect(te.flaky.requests.length).toBeGreaterThanOrEqual(3)
    expect(te.flaky.requests.length).toBeLessThanOrEqual(6)
    expect(p(0.99)).toBeLessThan(1_000)
    expect(upstream.requests.filter((r) => r.headers.authorization === 'Bearer seed-flaky')).toHaveLength(0)
  }, 30_000)

  test('upstream answering 401 to every token: one forced refresh per cooldown across 30 calls on two replicas; the 401 comes back as the upstream answer', async () => {
    const first = await get(b, 'refused')
    expect(first.structuredContent?.status, textOf(first)).toBe(401)
    // The first call obtained a token and forced one refresh.
    expect(te.refused.requests).toHaveLength(2)
    const results = await Promise.all(Array.from({ length: 29 }, (_, i) => get(i % 2 === 0 ? c : b, 'refused')))
    for (const r of results) expect(r.structuredContent?.status, textOf(r)).toBe(401)
    console.log(`[drill 401] 30 calls on two replicas → ${te.refused.requests.length} token requests, ${refusing.requests.length} upstream requests`)
    expect(te.refused.requests).toHaveLength(2)
  }, 30_000)

  test('hanging token endpoint: the waiter on another replica gets CREDENTIAL_UNAVAILABLE naming the token endpoint, never STORE_UNAVAILABLE', async () => {
    const now = Date.now()
    await seed('hang', 'seed-hang', now - 60_000, now - 1_000)
    te.hang.setMode('hang')
    const holder = timed(() => get(b, 'hang'))
    await until(() => te.hang.requests.length === 1, 'the holder to send its token request')
    const waiter = await timed(() => get(c, 'hang'))
    const held = await holder
    console.log(`[drill hang] waiter answered after ${waiter.value ? waiter.ms.toFixed(0) : '?'} ms: ${textOf(waiter.value)} | holder after ${held.ms.toFixed(0)} ms: ${textOf(held.value)}`)
    expect(textOf(waiter.value)).toMatch(/^CREDENTIAL_UNAVAILABLE: connection "hang": the token endpoint has not answered for \d+ s/)
    expect(textOf(held.value)).toMatch(/^CREDENTIAL_UNAVAILABLE: connection "hang": the provider did not answer/)
    expect(te.hang.requests).toHaveLength(1)
  }, 30_000)
})
