/**
 * Attack suite, egress isolation: one caller or connection cannot starve the others (a socket
 * pool per connection, in-flight limits per connection and per caller with `UPSTREAM_BUSY`), an
 * allowed host is allowed on its own ports only, and provider metadata cannot move an endpoint
 * (and the client secret) off the issuer's origin. Every row proves the refusal and that nothing
 * reached the upstream or a canary listener. Loopback servers only; waits are on events (a
 * request arriving, a response), never on time.
 * @module
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { EgressPolicy } from '../../src/config/load.js'
import { AppError } from '../../src/errors.js'
import { buildUpstreamUrl } from '../../src/egress/build-url.js'
import { createEgress, type Egress, type OutboundRequest } from '../../src/egress/safe-fetch.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

/**
 * A loopback upstream that holds every request whose path contains `/hold` until `release()`,
 * drops the connection of one containing `/reset`, and answers anything else at once; `arrived(n)` resolves when n requests in all have arrived.
 */
interface HoldingUpstream {
  readonly origin: string
  readonly paths: string[]
  arrived(n: number): Promise<void>
  release(): void
  close(): Promise<void>
}

async function startHoldingUpstream(): Promise<HoldingUpstream> {
  const paths: string[] = []
  const held: ServerResponse[] = []
  const waiters: { n: number; resolve: () => void }[] = []
  const answer = (res: ServerResponse, path: string): void => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ path }))
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      const path = req.url ?? '/'
      paths.push(path)
      if (path.includes('/hold')) held.push(res)
      else if (path.includes('/reset')) res.destroy()
      else answer(res, path)
      for (const w of waiters.filter((x) => paths.length >= x.n)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    origin,
    paths,
    arrived: (n) => (paths.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    release() {
      for (const res of held.splice(0)) answer(res, 'released')
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

const devPolicy: EgressPolicy = { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: true }
const get = (url: string, over: Partial<OutboundRequest> = {}): OutboundRequest => ({
  url: new URL(url),
  method: 'GET',
  headers: {},
  timeoutMs: 30_000,
  maxResponseBytes: 65536,
  ...over,
})

async function egressError(p: Promise<unknown>): Promise<AppError> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  )
  if (!(e instanceof AppError)) throw new Error(`expected an AppError, got ${String(e)}`)
  return e
}

describe('one socket pool per connection [egress:pool-per-connection]', () => {
  let upstream: HoldingUpstream
  let egress: Egress
  beforeEach(async () => {
    upstream = await startHoldingUpstream()
    // Two sockets per origin and pool, so two slow calls fill a pool.
    egress = createEgress({ policy: devPolicy, maxSockets: 2 })
  })
  afterEach(async () => {
    upstream.release()
    await egress.close()
    await upstream.close()
  })

  test("with connection A's sockets all held by slow calls, connection B to the same upstream address still answers, and A's next call waits in A's pool", async () => {
    const slow = [egress.send(get(`${upstream.origin}/hold/1`, { pool: 'a' })), egress.send(get(`${upstream.origin}/hold/2`, { pool: 'a' }))]
    await upstream.arrived(2)
    const queued = egress.send(get(`${upstream.origin}/a/next`, { pool: 'a' }))
    const other = await egress.send(get(`${upstream.origin}/b/items`, { pool: 'b' }))
    expect(other.status).toBe(200)
    // B was sent after A's third call and has its answer; A's third call never left A's full pool.
    expect(upstream.paths).toEqual(['/hold/1', '/hold/2', '/b/items'])
    upstream.release()
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200])
    expect((await queued).status).toBe(200)
    expect(upstream.paths).toContain('/a/next')
  })

  test('a dropped pool (its connection left the config) closes once its calls finish; the key gets a fresh pool after', async () => {
    const slow = egress.send(get(`${upstream.origin}/hold/x`, { pool: 'gone' }))
    await upstream.arrived(1)
    const dropped = egress.dropPool('gone')
    upstream.release()
    expect((await slow).status).toBe(200)
    await dropped
    expect((await egress.send(get(`${upstream.origin}/again`, { pool: 'gone' }))).status).toBe(200)
  })
})

describe('in-flight limits per connection and per caller [egress:busy]', () => {
  let upstream: HoldingUpstream
  let keyway: HttpKeyway
  const audit = createMemoryAuditLog()
  const clients: Record<'alice' | 'bob' | 'carol', TestClient> = {} as Record<'alice' | 'bob' | 'carol', TestClient>

  beforeAll(async () => {
    upstream = await startHoldingUpstream()
    const { snapshot } = await loadTestConfig(
      `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 30000 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  slow:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    maxConcurrentRequests: 3
    maxConcurrentRequestsPerCaller: 2
    auth: { type: bearer_token, token: { env: TOKEN } }
  other:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: TOKEN } }
grants:
  - { privilege: USE CONNECTION, on: slow, to: { group: account users } }
`,
      { TOKEN: 'sk-limits-token-0123456789' },
    )
    keyway = await startHttp(snapshot, { port: 0, audit, log: createMemoryLogger() })
    const url = `${keyway.http?.url}/mcp`
    for (const user of ['alice', 'bob', 'carol'] as const) clients[user] = await connectClient('modern', url, { bearer: TEST_KEYS[user] })
  })
  afterAll(async () => {
    upstream?.release()
    for (const c of Object.values(clients)) await c.close()
    await keyway?.close()
    await upstream?.close()
  })
  afterEach(() => {
    upstream.release()
  })

  const hold = (user: 'alice' | 'bob' | 'carol', n: number): Promise<ToolCallResult> => clients[user].callTool('slow', { path: `/hold/${user}/${n}` })
  const busyLine = (): number => audit.events.filter((e) => e.type === 'tool.call' && 'error' in e && e.error === 'UPSTREAM_BUSY').length

  test('a caller at its limit gets UPSTREAM_BUSY at once and nothing is sent; another caller on the same connection is served', async () => {
    const before = upstream.paths.length
    const busyBefore = busyLine()
    const held = [hold('alice', 1), hold('alice', 2)]
    await upstream.arrived(before + 2)
    const refused = await hold('alice', 3)
    expect(textOf(refused)).toBe(
      'UPSTREAM_BUSY: user alice@example.com already has 2 requests in flight on connection "slow", the per-caller limit (maxConcurrentRequestsPerCaller); retry after a moment',
    )
    expect(refused.isError).toBe(true)
    expect(upstream.paths.length).toBe(before + 2)
    expect(busyLine()).toBe(busyBefore + 1)
    const bob = await clients.bob.callTool('slow', { path: '/fast/bob' })
    expect(bob.isError, textOf(bob)).toBeFalsy()
    upstream.release()
    for (const r of await Promise.all(held)) expect(r.isError, textOf(r)).toBeFalsy()
  })

  test('a connection at its limit refuses every caller; another connection to the same upstream address is served; slots come back after', async () => {
    const before = upstream.paths.length
    const held = [hold('alice', 1), hold('alice', 2), hold('bob', 1)]
    await upstream.arrived(before + 3)
    const carol = await hold('carol', 1)
    expect(textOf(carol)).toBe('UPSTREAM_BUSY: connection "slow" already has 3 requests in flight, its limit (maxConcurrentRequests); retry after a moment')
    expect(upstream.paths.length).toBe(before + 3)
    const other = await clients.alice.callTool('other', { path: '/fast/other' })
    expect(other.isError, textOf(other)).toBeFalsy()
    upstream.release()
    for (const r of await Promise.all(held)) expect(r.isError, textOf(r)).toBeFalsy()
    // Every slot was given back: carol is served now.
    const again = await clients.carol.callTool('slow', { path: '/fast/carol' })
    expect(again.isError, textOf(again)).toBeFalsy()
  })

  test('slots come back when calls fail too: after refused paths and failed sends the caller has its whole allowance', async () => {
    // Refused before any send (never counted) and failed at the upstream (counted, then released).
    expect(textOf(await clients.alice.callTool('slow', { path: '../admin' }))).toMatch(/^EGRESS_BLOCKED: /)
    for (const n of [1, 2, 3]) expect(textOf(await clients.alice.callTool('slow', { path: `/reset/${n}` }))).toMatch(/^UPSTREAM_UNAVAILABLE: /)
    const before = upstream.paths.length
    const held = [hold('alice', 1), hold('alice', 2)]
    await upstream.arrived(before + 2)
    expect(textOf(await hold('alice', 3))).toMatch(/^UPSTREAM_BUSY: /)
    upstream.release()
    await Promise.all(held)
    const next = [hold('alice', 4), hold('alice', 5)]
    await upstream.arrived(before + 4)
    upstream.release()
    for (const r of await Promise.all(next)) expect(r.isError, textOf(r)).toBeFalsy()
  })
})

describe('an allowed host is allowed on its own ports only [egress:ports]', () => {
  let upstream: Upstream
  let canary: Upstream
  beforeAll(async () => {
    upstream = await startUpstream()
    canary = await startUpstream()
  })
  afterAll(async () => {
    await canary?.close()
    await upstream?.close()
  })
  beforeEach(() => {
    upstream.requests.length = 0
    canary.requests.length = 0
  })

  const port = (u: Upstream): string => new URL(u.origin).port
  // [what, allowedHosts, targets that must be refused]
  const rows: readonly [string, () => readonly string[], () => readonly string[]][] = [
    ["a port-less entry: the connection's port is allowed, another port of the host is not", () => ['127.0.0.1'], () => [`${canary.origin}/token`]],
    [
      "an entry with the connection's port: no other, not even the default",
      () => [`127.0.0.1:${port(upstream)}`],
      () => [`${canary.origin}/token`, 'http://127.0.0.1/'],
    ],
    [
      'a second entry with another port adds only that port',
      () => ['127.0.0.1', `127.0.0.1:${Number(port(canary)) === 1 ? 2 : 1}`],
      () => [`${canary.origin}/token`],
    ],
  ]
  test.each(rows)('%s: EGRESS_BLOCKED before any socket, and the canary on the same host receives nothing', async (_what, list, refused) => {
    // The policy comes from a real config, as `keyway serve` builds it.
    const { snapshot } = await loadTestConfig(
      `
version: 1
egress: { dangerouslyAllowPrivateNetworks: true, allowedHosts: ${JSON.stringify(list())} }
connections:
  api:
    host: ${upstream.origin}
    owner: { user: a }
    auth: { type: bearer_token, token: { env: T } }
`,
      { T: 'tok-0123456789' },
    )
    const egress = createEgress({ policy: snapshot.egress })
    try {
      expect((await egress.send(get(`${upstream.origin}/ok`, { pool: 'api' }))).status).toBe(200)
      for (const target of refused()) {
        const e = await egressError(egress.send(get(target)))
        expect(e.code).toBe('EGRESS_BLOCKED')
        expect(e.message).toMatch(/^GET 127\.0\.0\.1(:\d+)? refused: port \d+ of host "127\.0\.0\.1" is not allowed: /)
      }
      expect(canary.requests).toHaveLength(0)
      expect(upstream.requests).toHaveLength(1)
    } finally {
      await egress.close()
    }
  })
})

describe("provider metadata cannot move an endpoint off the issuer's origin [egress:issuer-origin]", () => {
  const SECRET = 'cs-CANARY-client-secret-5d1e'
  let as: TokenEndpoint
  let canary: TokenEndpoint
  let upstream: Upstream
  let keyway: HttpKeyway
  let alice: TestClient

  beforeAll(async () => {
    as = await startTokenEndpoint()
    canary = await startTokenEndpoint()
    upstream = await startUpstream()
    const { snapshot } = await loadTestConfig(
      `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, allowedHosts: [127.0.0.1, localhost] }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  m2m:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, issuer: ${as.issuer}, clientId: keyway, clientSecret: { env: SECRET }, credentialExchange: body_only }
  explicit:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, issuer: ${as.issuer}, tokenEndpoint: ${canary.tokenUrl}, clientId: keyway, clientSecret: { env: SECRET }, credentialExchange: body_only }
`,
      { SECRET },
    )
    keyway = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
    alice = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.alice })
  })
  afterAll(async () => {
    await alice?.close()
    await keyway?.close()
    await upstream?.close()
    await canary?.close()
    await as?.close()
  })
  beforeEach(() => {
    as.requests.length = 0
    canary.requests.length = 0
    upstream.requests.length = 0
  })

  const canaryPort = (): string => new URL(canary.issuer).port
  const asPort = (): string => new URL(as.issuer).port
  const rows: readonly [string, () => string, () => string][] = [
    ['another port of the allowed issuer host', () => `${canary.issuer}/token`, () => canary.issuer],
    ['another name of the same machine (allowed too)', () => `http://localhost:${canaryPort()}/token`, () => `http://localhost:${canaryPort()}`],
    ["the issuer's host and port with another scheme", () => `https://127.0.0.1:${asPort()}/token`, () => `https://127.0.0.1:${asPort()}`],
  ]
  test.each(rows)(
    'token_endpoint on %s: EGRESS_BLOCKED naming endpoint and issuer; no token request anywhere, nothing upstream',
    async (_what, endpoint, origin) => {
      as.setMetadata({ token_endpoint: endpoint(), token_endpoint_auth_methods_supported: ['client_secret_post'] })
      const r = await alice.callTool('m2m', { path: '/items' })
      expect(textOf(r)).toBe(
        `EGRESS_BLOCKED: connection "m2m": the provider metadata puts token_endpoint on ${origin()}, not on the issuer's origin ${as.issuer}; nothing was sent there. If the provider really serves it there, set auth.tokenEndpoint explicitly`,
      )
      expect(textOf(r)).not.toContain(SECRET)
      expect(canary.requests).toHaveLength(0)
      expect(as.requests).toHaveLength(0)
      expect(upstream.requests).toHaveLength(0)
    },
  )

  test('an off-origin revocation endpoint in the metadata is refused the same way, before the token request', async () => {
    as.setMetadata({ revocation_endpoint: `${canary.issuer}/revoke` })
    expect(textOf(await alice.callTool('m2m', { path: '/items' }))).toMatch(
      /^EGRESS_BLOCKED: connection "m2m": the provider metadata puts revocation_endpoint on /,
    )
    expect([as.requests.length, canary.requests.length, upstream.requests.length]).toEqual([0, 0, 0])
  })

  test('the same metadata with tokenEndpoint set explicitly in the config is used as configured', async () => {
    as.setMetadata({ token_endpoint: `http://localhost:${canaryPort()}/elsewhere` })
    const r = await alice.callTool('explicit', { path: '/items' })
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(canary.requests).toHaveLength(1)
    expect(canary.requests[0]?.body.get('client_secret')).toBe(SECRET)
    expect(upstream.last()?.headers.authorization).toMatch(/^Bearer tok-/)
  })
})

describe('tool paths, property-based, against a live Keyway [egress:path-confined]', () => {
  let upstream: Upstream
  let canary: Upstream
  let keyway: HttpKeyway
  let alice: TestClient
  beforeAll(async () => {
    upstream = await startUpstream()
    canary = await startUpstream()
    const { snapshot } = await loadTestConfig(
      `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  notes:
    host: ${upstream.origin}
    basePath: /api/v1
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: T } }
`,
      { T: 'tok-0123456789' },
    )
    keyway = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
    alice = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.alice })
  })
  afterAll(async () => {
    await alice?.close()
    await keyway?.close()
    await canary?.close()
    await upstream?.close()
  })

  test('a path the builder refuses sends nothing; one it accepts reaches the upstream under the base path', async () => {
    const canaryHost = new URL(canary.origin).host
    const piece = fc.oneof(
      fc.constantFrom('/', '//', '\\', '..', '.', '%2e', '%2f', '%5c', '%252e', '@', `//${canaryHost}`, `${canaryHost}`, 'http:', '?', '#', '%00', ';'),
      fc.stringMatching(/^[a-z0-9]{1,6}$/),
    )
    await fc.assert(
      fc.asyncProperty(
        fc.array(piece, { minLength: 1, maxLength: 8 }).map((p) => p.join('')),
        async (path) => {
          const before = upstream.requests.length
          const r = await alice.callTool('notes', { path })
          const built = buildUpstreamUrl({ origin: upstream.origin, basePath: '/api/v1/' }, path)
          if (built.ok) {
            expect(r.isError, textOf(r)).toBeFalsy()
            expect(upstream.requests.length).toBe(before + 1)
            expect(upstream.last()?.path).toBe(built.url.pathname)
            expect(upstream.last()?.path.startsWith('/api/v1/')).toBe(true)
          } else {
            expect(textOf(r)).toMatch(/^EGRESS_BLOCKED: path refused: /)
            expect(upstream.requests.length).toBe(before)
          }
          expect(canary.requests).toHaveLength(0)
        },
      ),
      { numRuns: 150 },
    )
  })
})
