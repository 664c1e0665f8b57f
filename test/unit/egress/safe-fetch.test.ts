/**
 * The egress client against a real loopback upstream (node:http on 127.0.0.1:0). Only
 * 127.0.0.1 is ever dialled: names resolve through an injected resolver, and refusals of
 * private or public addresses are asserted before any socket opens (undici's diagnostics
 * channel counts connection attempts).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import type { EgressPolicy } from '../../../src/config/load.js'
import { AppError } from '../../../src/errors.js'
import type { Resolver } from '../../../src/egress/guard.js'
import { createEgress, type Egress, type OutboundRequest, type OutboundResponse } from '../../../src/egress/safe-fetch.js'

const CANARY = 'sk-CANARY-123'
const devPolicy: EgressPolicy = { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: true }
const strictPolicy: EgressPolicy = { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: false }

interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: IncomingMessage['headers']
  readonly body: string
  /** Index of this request on its connection (0 = first). */
  readonly onSocket: number
  readonly socketId: number
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => void

interface TestServer {
  readonly port: number
  readonly origin: string
  readonly seen: Seen[]
  handler: Handler
  close(): Promise<void>
}

const defaultHandler: Handler = (_req, res, seen) => {
  res.writeHead(200, { 'content-type': 'application/json', 'x-echo-method': seen.method, 'set-cookie': ['a=1', 'b=2'] })
  res.end(JSON.stringify({ method: seen.method, url: seen.url, body: seen.body }))
}

async function startServer(): Promise<TestServer> {
  const seen: Seen[] = []
  const perSocket = new WeakMap<Socket, { id: number; count: number }>()
  let sockets = 0
  const state: { handler: Handler } = { handler: defaultHandler }
  const server: Server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      let info = perSocket.get(req.socket)
      if (!info) perSocket.set(req.socket, (info = { id: ++sockets, count: 0 }))
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        onSocket: info.count++,
        socketId: info.id,
      }
      seen.push(s)
      state.handler(req, res, s)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    seen,
    get handler() {
      return state.handler
    },
    set handler(h: Handler) {
      state.handler = h
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** Every name resolves to 127.0.0.1 unless the table says otherwise; lookups are counted. */
function loopbackDns(table: Record<string, readonly string[]> = {}): Resolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (hostname: string): Promise<readonly string[]> => {
    calls.push(hostname)
    const found = table[hostname] ?? ['127.0.0.1']
    if (found.length === 0) throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' })
    return found
  }
  return Object.assign(resolve, { calls })
}

/** Counts undici connection attempts (all undici clients in this worker) while `fn` runs. */
async function countConnects<T>(fn: () => Promise<T>): Promise<{ result: PromiseSettledResult<T>; connects: string[] }> {
  const connects: string[] = []
  const onConnect = (message: unknown): void => {
    const params = (message as { connectParams: { hostname: string } }).connectParams
    connects.push(params.hostname)
  }
  subscribe('undici:client:beforeConnect', onConnect)
  try {
    const [result] = await Promise.allSettled([fn()])
    return { result: result as PromiseSettledResult<T>, connects }
  } finally {
    unsubscribe('undici:client:beforeConnect', onConnect)
  }
}

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p
  } catch (e) {
    if (e instanceof AppError) return e
    throw e
  }
  throw new Error('expected a failure')
}

function expectNoCanary(e: AppError): void {
  expect(e.message).not.toContain(CANARY)
  expect(JSON.stringify(e.detail)).not.toContain(CANARY)
}

const req = (url: string, over: Partial<OutboundRequest> = {}): OutboundRequest => ({
  url: new URL(url),
  method: 'GET',
  headers: {},
  timeoutMs: 5_000,
  maxResponseBytes: 1 << 20,
  ...over,
})

let server: TestServer
let egress: Egress
let dns: ReturnType<typeof loopbackDns>

beforeAll(async () => {
  server = await startServer()
  dns = loopbackDns()
  egress = createEgress({ policy: devPolicy, resolve: dns })
})
afterAll(async () => {
  await egress.close()
  await server.close()
})
afterEach(() => {
  server.handler = defaultHandler
})

describe('send: roundtrips against a loopback upstream', () => {
  test('GET with headers; the response keeps status, every header lowercased, and the body', async () => {
    const res = await egress.send(req(`${server.origin}/v1/items?state=open&x=1`, { headers: { accept: 'application/json', 'x-custom': 'yes' } }))
    expect(res.status).toBe(200)
    expect(res.truncated).toBe(false)
    expect(res.headers['content-type']).toBe('application/json')
    expect(res.headers['x-echo-method']).toBe('GET')
    expect(res.headers['set-cookie']).toBe('a=1, b=2')
    expect(JSON.parse(res.body.toString('utf8'))).toEqual({ method: 'GET', url: '/v1/items?state=open&x=1', body: '' })
    const seen = server.seen.at(-1)
    expect(seen?.headers.accept).toBe('application/json')
    expect(seen?.headers['x-custom']).toBe('yes')
    expect(seen?.headers.host).toBe(`127.0.0.1:${server.port}`)
  })

  test('POST sends a string body; PUT sends bytes; HEAD has no body', async () => {
    const post = await egress.send(
      req(`${server.origin}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"title":"hello"}' }),
    )
    expect(post.status).toBe(200)
    expect(server.seen.at(-1)).toMatchObject({
      method: 'POST',
      body: '{"title":"hello"}',
      headers: { 'content-type': 'application/json', 'content-length': '17' },
    })
    const put = await egress.send(req(`${server.origin}/items/1`, { method: 'PUT', body: new TextEncoder().encode('bytes') }))
    expect(put.status).toBe(200)
    expect(server.seen.at(-1)).toMatchObject({ method: 'PUT', body: 'bytes' })
    const head = await egress.send(req(`${server.origin}/items/1`, { method: 'HEAD' }))
    expect(head.status).toBe(200)
    expect(head.body.length).toBe(0)
  })

  test('a named host is dialled at the address the guard approved, keeping the name for Host [egress:dns-pinning]', async () => {
    const pinned = loopbackDns({ 'api.upstream.test': ['127.0.0.1'] })
    const e = createEgress({ policy: devPolicy, resolve: pinned })
    try {
      const { result, connects } = await countConnects(() => e.send(req(`http://api.upstream.test:${server.port}/pinned`)))
      expect(result.status).toBe('fulfilled')
      expect(connects).toEqual(['api.upstream.test'])
      expect(server.seen.at(-1)).toMatchObject({ url: '/pinned', headers: { host: `api.upstream.test:${server.port}` } })
      // One lookup served the guard and the connection (DNS cache).
      expect(pinned.calls).toEqual(['api.upstream.test'])
    } finally {
      await e.close()
    }
  })

  test('connections are kept alive and reused', async () => {
    const e = createEgress({ policy: devPolicy, resolve: dns })
    try {
      const { connects } = await countConnects(async () => {
        for (let i = 0; i < 8; i++) await e.send(req(`${server.origin}/ka/${i}`))
      })
      // undici 7 opens a second connection when the next request arrives while the first
      // socket is still in its idle validation tick (GHSA-35p6-xmwp-9g52); after that, reuse.
      expect(connects.length).toBeLessThanOrEqual(2)
      const last8 = server.seen.slice(-8)
      expect(new Set(last8.map((s) => s.socketId)).size).toBe(connects.length)
      expect(last8.filter((s) => s.onSocket > 0).length).toBeGreaterThanOrEqual(6)
    } finally {
      await e.close()
    }
  })

  test('1xx informational responses are skipped; the final response counts', async () => {
    server.handler = (_req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload' })
      res.writeHead(201, { 'content-type': 'text/plain' })
      res.end('created')
    }
    const res = await egress.send(req(`${server.origin}/hints`, { method: 'POST', body: 'x' }))
    expect(res.status).toBe(201)
    expect(res.body.toString()).toBe('created')
  })

  test('many concurrent requests share the pool', async () => {
    const all = await Promise.all(Array.from({ length: 40 }, (_, i) => egress.send(req(`${server.origin}/c/${i}`))))
    expect(all.map((r) => JSON.parse(r.body.toString()).url)).toEqual(Array.from({ length: 40 }, (_, i) => `/c/${i}`))
  })

  test('a 302 is returned as it is, never followed [egress:no-redirect]', async () => {
    server.handler = (_req, res) => {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' })
      res.end()
    }
    const before = server.seen.length
    const res = await egress.send(req(`${server.origin}/moved`, { headers: { authorization: `Bearer ${CANARY}` } }))
    expect(res.status).toBe(302)
    expect(res.headers.location).toBe('http://169.254.169.254/latest/meta-data/')
    expect(server.seen.length).toBe(before + 1)
  })

  test('4xx and 5xx are responses, not errors', async () => {
    server.handler = (_req, res) => {
      res.writeHead(503, { 'retry-after': '5' })
      res.end('busy')
    }
    const res = await egress.send(req(`${server.origin}/busy`))
    expect(res).toMatchObject({ status: 503, truncated: false, headers: { 'retry-after': '5' } })
    expect(res.body.toString()).toBe('busy')
  })
})

describe('send: size cap [egress:size-cap]', () => {
  test.each([
    ['one chunk over the cap', ['x'.repeat(10_000)], 4096, 4096, true],
    ['many chunks over the cap', Array.from({ length: 50 }, () => 'y'.repeat(1000)), 4096, 4096, true],
    ['exactly the cap', ['z'.repeat(4096)], 4096, 4096, false],
    ['under the cap', ['small'], 4096, 5, false],
    ['a cap of zero', ['a'], 0, 0, true],
  ])('%s', async (_name, chunks, cap, length, truncated) => {
    server.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const write = (i: number): void => {
        if (i === chunks.length) return void res.end()
        res.write(chunks[i], () => setImmediate(() => write(i + 1)))
      }
      write(0)
    }
    const res = await egress.send(req(`${server.origin}/big`, { maxResponseBytes: cap }))
    expect(res.truncated).toBe(truncated)
    expect(res.body.length).toBe(length)
    expect(res.body.toString()).toBe(chunks.join('').slice(0, length))
  })

  test('an endless body stops at the cap', async () => {
    let stop = false
    server.handler = (_req, res) => {
      res.writeHead(200)
      const pump = (): void => {
        if (stop || res.destroyed) return
        res.write('e'.repeat(16_384), () => setImmediate(pump))
      }
      pump()
    }
    const res = await egress.send(req(`${server.origin}/endless`, { maxResponseBytes: 100_000 }))
    stop = true
    expect(res).toMatchObject({ status: 200, truncated: true })
    expect(res.body.length).toBe(100_000)
  })
})

describe('send: failures', () => {
  test('no answer within the deadline is UPSTREAM_TIMEOUT [egress:timeout]', async () => {
    server.handler = () => {} // never answers
    const e = await failure(egress.send(req(`${server.origin}/slow?token=${CANARY}`, { timeoutMs: 150, headers: { 'x-api-key': CANARY } })))
    expect(e.code).toBe('UPSTREAM_TIMEOUT')
    expect(e.message).toBe(`GET 127.0.0.1:${server.port} timed out after 150 ms`)
    expect(e.detail).toEqual({ host: `127.0.0.1:${server.port}`, method: 'GET', reason: 'deadline', timeoutMs: 150 })
    expectNoCanary(e)
  })

  test('the deadline covers the body too', async () => {
    server.handler = (_req, res) => {
      res.writeHead(200)
      res.write('partial') // and then nothing
    }
    const started = Date.now()
    const e = await failure(egress.send(req(`${server.origin}/trickle`, { timeoutMs: 200 })))
    expect(e.code).toBe('UPSTREAM_TIMEOUT')
    expect(e.message).toBe(`GET 127.0.0.1:${server.port} timed out after 200 ms`)
    expect(Date.now() - started).toBeLessThan(2_000)
  })

  test('the deadline covers waiting for a free connection; a request that timed out in the queue is never sent', async () => {
    const e1 = createEgress({ policy: devPolicy, resolve: dns, maxSockets: 1 })
    server.handler = (_req, res, seen) => void setTimeout(() => defaultHandler(_req, res, seen), 600)
    try {
      const before = server.seen.length
      const slow = e1.send(req(`${server.origin}/hold`))
      const started = Date.now()
      const e = await failure(e1.send(req(`${server.origin}/queued`, { timeoutMs: 50 })))
      expect(e.code).toBe('UPSTREAM_TIMEOUT')
      expect(e.message).toBe(`GET 127.0.0.1:${server.port} timed out after 50 ms`)
      expect(Date.now() - started).toBeLessThan(450) // did not wait for the held connection (600 ms)
      expect((await slow).status).toBe(200)
      await new Promise((r) => setTimeout(r, 50))
      expect(server.seen.slice(before).map((s) => s.url)).toEqual(['/hold'])
    } finally {
      await e1.close()
    }
  })

  test('a closed port is UPSTREAM_UNAVAILABLE', async () => {
    const closed = await startServer()
    const port = closed.port
    await closed.close()
    const e = await failure(
      egress.send(req(`http://127.0.0.1:${port}/x?token=${CANARY}`, { method: 'POST', headers: { authorization: `Bearer ${CANARY}` }, body: CANARY })),
    )
    expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(e.message).toBe(`POST 127.0.0.1:${port} failed: connection refused`)
    expect(e.detail).toEqual({ host: `127.0.0.1:${port}`, method: 'POST', reason: 'ECONNREFUSED' })
    expectNoCanary(e)
  })

  test('a name that does not resolve is UPSTREAM_UNAVAILABLE, before any connection', async () => {
    const e1 = createEgress({ policy: devPolicy, resolve: loopbackDns({ 'gone.test': [] }) })
    try {
      const { result, connects } = await countConnects(() => e1.send(req('http://gone.test/x')))
      expect(connects).toEqual([])
      const e = await failure(result.status === 'rejected' ? Promise.reject(result.reason) : Promise.resolve())
      expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
      expect(e.message).toBe('GET gone.test failed: host "gone.test" could not be resolved (ENOTFOUND)')
    } finally {
      await e1.close()
    }
  })

  test('a header value the HTTP client refuses is INVALID_REQUEST and not echoed', async () => {
    const e = await failure(egress.send(req(`${server.origin}/x`, { headers: { authorization: `Bearer ${CANARY}\r\nx-evil: 1` } })))
    expect(e.code).toBe('INVALID_REQUEST')
    expect(e.message).toBe(`GET 127.0.0.1:${server.port} has a header or body the http client refuses`)
    expectNoCanary(e)
    expect(e.cause).toBeUndefined()
  })
})

describe('send: egress policy is enforced before any socket opens [egress:block-private-ip]', () => {
  test.each([
    [
      'a name resolving to 10.0.0.1',
      'https://api.example.test/x',
      { 'api.example.test': ['10.0.0.1'] },
      'GET api.example.test refused: host "api.example.test" resolves to a private address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
    [
      'a name resolving to the metadata address',
      'https://meta.example.test/latest',
      { 'meta.example.test': ['169.254.169.254'] },
      'GET meta.example.test refused: host "meta.example.test" resolves to a link-local address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
    [
      'a name resolving to IPv4-mapped loopback',
      'https://mapped.example.test/',
      { 'mapped.example.test': ['::ffff:127.0.0.1'] },
      'GET mapped.example.test refused: host "mapped.example.test" resolves to a loopback address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
    [
      'a loopback literal',
      'https://127.0.0.1:1/',
      {},
      'GET 127.0.0.1:1 refused: host "127.0.0.1" is a loopback address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
    [
      'plain http',
      'http://api.example.test/',
      { 'api.example.test': ['93.184.216.34'] },
      'GET api.example.test refused: http:// to "api.example.test" is refused; only https:// is allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
  ])('%s → EGRESS_BLOCKED', async (_name, url, table, message) => {
    const resolve = loopbackDns(table)
    const e1 = createEgress({ policy: strictPolicy, resolve })
    try {
      const { result, connects } = await countConnects(() =>
        e1.send(req(`${url}${url.includes('?') ? '&' : '?'}key=${CANARY}`, { headers: { 'x-api-key': CANARY } })),
      )
      expect(connects).toEqual([])
      expect(result.status).toBe('rejected')
      const e = await failure(result.status === 'rejected' ? Promise.reject(result.reason) : Promise.resolve())
      expect(e.code).toBe('EGRESS_BLOCKED')
      expect(e.message).toBe(message)
      expectNoCanary(e)
    } finally {
      await e1.close()
    }
  })

  test('a host outside allowedHosts is refused', async () => {
    const e1 = createEgress({ policy: { allowedHosts: ['api.github.com'], dangerouslyAllowPrivateNetworks: true }, resolve: loopbackDns() })
    try {
      const e = await failure(e1.send(req(`${server.origin}/x`)))
      expect(e.code).toBe('EGRESS_BLOCKED')
      expect(e.message).toBe(`GET 127.0.0.1:${server.port} refused: host "127.0.0.1" is not in egress.allowedHosts`)
      expect(e.detail).toEqual({ host: `127.0.0.1:${server.port}`, method: 'GET', reason: 'host-not-allowed' })
    } finally {
      await e1.close()
    }
  })

  test('the policy is read at every send (a reload applies to the next call)', async () => {
    const policy = { allowedHosts: undefined as readonly string[] | undefined, dangerouslyAllowPrivateNetworks: true }
    const e1 = createEgress({ policy, resolve: loopbackDns() })
    try {
      expect((await e1.send(req(`${server.origin}/x`))).status).toBe(200)
      policy.dangerouslyAllowPrivateNetworks = false
      expect((await failure(e1.send(req(`${server.origin}/x`)))).code).toBe('EGRESS_BLOCKED')
    } finally {
      await e1.close()
    }
  })

  test('DNS rebinding between check and connect is refused at connect time [egress:dns-pinning]', async () => {
    // First answer (the guard's) is public, the next (the socket's) is loopback. The cache is
    // off so the connect-time lookup asks again. Nothing is dialled: the lookup refuses.
    let n = 0
    const flip: Resolver = async () => (n++ === 0 ? ['93.184.216.34'] : ['127.0.0.1'])
    const e1 = createEgress({ policy: strictPolicy, resolve: flip, dnsCacheTtlMs: 0 })
    try {
      const { result, connects } = await countConnects(() => e1.send(req(`https://rebind.test:${server.port}/x`)))
      expect(connects).toEqual(['rebind.test']) // undici started connecting, the lookup refused
      const e = await failure(result.status === 'rejected' ? Promise.reject(result.reason) : Promise.resolve())
      expect(e.code).toBe('EGRESS_BLOCKED')
      expect(e.message).toBe(
        `GET rebind.test:${server.port} refused: host "rebind.test" resolves to a loopback address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true`,
      )
      expect(n).toBe(2)
    } finally {
      await e1.close()
    }
  })
})

describe('send: keep-alive retry [egress:keepalive-retry]', () => {
  test.each(['GET', 'POST', 'DELETE'] as const)('%s on a reused connection that the upstream closes as the request arrives is retried once', async (method) => {
    const e1 = createEgress({ policy: devPolicy, resolve: dns })
    try {
      const body = method === 'POST' ? '{"a":1}' : undefined
      const send = (path: string): Promise<OutboundResponse> => e1.send(req(`${server.origin}${path}`, { method, ...(body ? { body } : {}) }))
      // Warm the pool so the next request goes out on a reused keep-alive connection.
      for (let i = 0; i < 3; i++) expect((await send(`/warm${i}`)).status).toBe(200)
      // The upstream closes the connection the next request arrives on, without answering:
      // the race of an idle keep-alive socket closed by the server while we write.
      let armed = true
      server.handler = (r, res, seen) => {
        if (armed) {
          armed = false
          return void r.socket.destroy()
        }
        defaultHandler(r, res, seen)
      }
      const before = server.seen.length
      const second = await send('/r2')
      expect(second.status).toBe(200)
      const attempts = server.seen.slice(before)
      expect(attempts.map((s) => s.url)).toEqual(['/r2', '/r2'])
      expect(attempts[0]?.onSocket).toBeGreaterThan(0) // the killed one was a reused connection
      if (body) expect(attempts[1]?.body).toBe(body)
    } finally {
      await e1.close()
    }
  })

  test('a fresh connection that dies is retried once for GET, then reported', async () => {
    server.handler = (req) => void req.socket.destroy()
    const e1 = createEgress({ policy: devPolicy, resolve: dns })
    try {
      const before = server.seen.length
      const e = await failure(e1.send(req(`${server.origin}/dies`)))
      expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
      expect(e.message).toBe(`GET 127.0.0.1:${server.port} failed: connection closed before a response`)
      expect(server.seen.length - before).toBe(2)
    } finally {
      await e1.close()
    }
  })

  test('a POST on a fresh connection that dies is not retried (it may have been applied)', async () => {
    server.handler = (req) => void req.socket.destroy()
    const e1 = createEgress({ policy: devPolicy, resolve: dns })
    try {
      const before = server.seen.length
      const e = await failure(e1.send(req(`${server.origin}/dies`, { method: 'POST', body: CANARY })))
      expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
      expect(e.message).toBe(`POST 127.0.0.1:${server.port} failed: connection closed before a response`)
      expect(server.seen.length - before).toBe(1)
      expectNoCanary(e)
    } finally {
      await e1.close()
    }
  })

  test('never retried once the response has started', async () => {
    server.handler = (req, res) => {
      res.writeHead(200, { 'content-length': '100' })
      res.write('part', () => setTimeout(() => req.socket.destroy(), 20))
    }
    const before = server.seen.length
    const e = await failure(egress.send(req(`${server.origin}/half`)))
    expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(e.message).toBe(`GET 127.0.0.1:${server.port} failed: connection closed during the response`)
    expect(server.seen.length - before).toBe(1)
  })
})

describe('DNS cache', () => {
  test('one lookup per host within the TTL; a new one after it; failures are not cached', async () => {
    let t = 0
    let fail = true
    const calls: string[] = []
    const resolve: Resolver = async (h) => {
      calls.push(h)
      if (fail) throw Object.assign(new Error('boom'), { code: 'EAI_AGAIN' })
      return ['127.0.0.1']
    }
    const e1 = createEgress({ policy: devPolicy, resolve, dnsCacheTtlMs: 30_000, now: () => t })
    try {
      const url = `http://cache.test:${server.port}/c`
      expect((await failure(e1.send(req(url)))).message).toBe(`GET cache.test:${server.port} failed: host "cache.test" could not be resolved (EAI_AGAIN)`)
      fail = false
      await e1.send(req(url))
      await e1.send(req(url))
      t += 29_999
      await e1.send(req(url))
      expect(calls.length).toBe(2)
      t += 2
      await e1.send(req(url))
      expect(calls).toEqual(['cache.test', 'cache.test', 'cache.test'])
    } finally {
      await e1.close()
    }
  })

  test('concurrent first calls share one lookup', async () => {
    const calls: string[] = []
    const resolve: Resolver = async (h) => {
      calls.push(h)
      await new Promise((r) => setTimeout(r, 20))
      return ['127.0.0.1']
    }
    const e1 = createEgress({ policy: devPolicy, resolve })
    try {
      const all = await Promise.all(Array.from({ length: 5 }, () => e1.send(req(`http://shared.test:${server.port}/s`))))
      expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
      expect(calls).toEqual(['shared.test'])
    } finally {
      await e1.close()
    }
  })

  test('a hanging lookup is bounded by the deadline', async () => {
    const e1 = createEgress({ policy: devPolicy, resolve: () => new Promise(() => {}) })
    try {
      const e = await failure(e1.send(req('http://hang.test/x', { timeoutMs: 100 })))
      expect(e.code).toBe('UPSTREAM_TIMEOUT')
      expect(e.message).toBe('GET hang.test timed out after 100 ms')
    } finally {
      await e1.close()
    }
  })
})

describe('fetchFor: a fetch-compatible function through the same guard', () => {
  test('POST a form; the Response carries status, headers and body', async () => {
    const f = egress.fetchFor(5_000)
    const res = await f(`${server.origin}/token`, {
      method: 'POST',
      headers: { Authorization: 'Basic abc', Accept: 'application/json' },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'a b' }),
      redirect: 'manual',
    })
    expect(res).toBeInstanceOf(Response)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.json()).toEqual({ method: 'POST', url: '/token', body: 'grant_type=client_credentials&scope=a+b' })
    expect(server.seen.at(-1)?.headers).toMatchObject({ authorization: 'Basic abc', 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8' })
  })

  test('Headers objects, GET by default, 204 and redirects', async () => {
    const f = egress.fetchFor(5_000)
    const h = new Headers({ 'X-A': '1' })
    const got = await f(`${server.origin}/jwks`, { headers: h })
    expect(got.status).toBe(200)
    expect(server.seen.at(-1)).toMatchObject({ method: 'GET', headers: { 'x-a': '1' } })
    server.handler = (_req, res) => {
      res.writeHead(204)
      res.end()
    }
    const none = await f(`${server.origin}/revoke`, { method: 'post', body: 'token=x' })
    expect(none.status).toBe(204)
    expect(await none.text()).toBe('')
    server.handler = (_req, res) => {
      res.writeHead(302, { location: '/elsewhere' })
      res.end()
    }
    const before = server.seen.length
    const moved = await f(`${server.origin}/moved`, { redirect: 'follow' })
    expect(moved.status).toBe(302)
    expect(moved.headers.get('location')).toBe('/elsewhere')
    expect(server.seen.length).toBe(before + 1)
  })

  test('its own timeout is UPSTREAM_TIMEOUT', async () => {
    server.handler = () => {}
    const e = await failure(egress.fetchFor(100)(`${server.origin}/slow`, { method: 'POST', body: `client_secret=${CANARY}` }))
    expect(e.code).toBe('UPSTREAM_TIMEOUT')
    expect(e.message).toBe(`POST 127.0.0.1:${server.port} timed out after 100 ms`)
    expectNoCanary(e)
  })

  test("the caller's signal aborts with the caller's reason", async () => {
    server.handler = () => {}
    const controller = new AbortController()
    const reason = new DOMException('stop', 'AbortError')
    setTimeout(() => controller.abort(reason), 50)
    await expect(egress.fetchFor(5_000)(`${server.origin}/slow`, { signal: controller.signal })).rejects.toBe(reason)
    const already = AbortSignal.abort(reason)
    await expect(egress.fetchFor(5_000)(`${server.origin}/slow`, { signal: already })).rejects.toBe(reason)
  })

  test('the guard applies: a private address is refused without the flag', async () => {
    const e1 = createEgress({ policy: strictPolicy, resolve: loopbackDns({ 'idp.example.test': ['10.0.0.1'] }) })
    try {
      const { result, connects } = await countConnects(() => e1.fetchFor(1_000)('https://idp.example.test/.well-known/openid-configuration'))
      expect(connects).toEqual([])
      const e = await failure(result.status === 'rejected' ? Promise.reject(result.reason) : Promise.resolve())
      expect(e.code).toBe('EGRESS_BLOCKED')
      expect(e.message).toMatch(/^GET idp\.example\.test refused: host "idp\.example\.test" resolves to a private address/)
    } finally {
      await e1.close()
    }
  })

  test('unsupported methods are a TypeError, like fetch', async () => {
    await expect(egress.fetchFor(1_000)(`${server.origin}/x`, { method: 'TRACE' })).rejects.toThrow(
      new TypeError('method "TRACE" is not supported by the egress client'),
    )
  })
})

describe('close', () => {
  test('after close, send fails with UPSTREAM_UNAVAILABLE', async () => {
    const e1 = createEgress({ policy: devPolicy, resolve: dns })
    await e1.send(req(`${server.origin}/x`))
    await e1.close()
    const e = await failure(e1.send(req(`${server.origin}/x`)))
    expect(e.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(e.message).toBe(`GET 127.0.0.1:${server.port} failed: egress client is closed`)
  })
})
