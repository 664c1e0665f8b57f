/**
 * Attack suite, redaction: upstreams and token endpoints that echo what Keyway sent them, in the
 * body, in response headers and in error text, in every encoding seen in the wild. Each row
 * proves the upstream did receive the credential (so the echo was real) and that the tool result
 * and the audit line hold none of it, with the result and the audit counting the replacements.
 * One listening Keyway, a real MCP client, loopback upstream and token endpoints.
 * @module
 */
import type { ServerResponse } from 'node:http'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { ToolCallEvent } from '../../src/audit/events.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { findCanaries } from '../helpers/canary.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js'

// `/`, `+`, `=` and `@` make the encoded forms differ from the raw one.
const STATIC_TOKEN = 'sk-CANARY/static+token=7f3a@9c1e'
const CLIENT_SECRET = 'p@ss:CANARY-client/secret+9='
const SHARED_ACCESS = 'at-CANARY-shared-5b2d8e'
const SHARED_REFRESH = 'rt-CANARY-shared-c41f07'
const M2M_PREFIX = 'at-CANARY-m2m-'
const CAP = 4096

let upstream: Upstream
let tokens: TokenEndpoint
let echoingTokens: TokenEndpoint
let keyway: HttpKeyway
let alice: TestClient
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

beforeAll(async () => {
  upstream = await startUpstream()
  tokens = await startTokenEndpoint()
  tokens.setIssue({ prefix: M2M_PREFIX, scope: `api:read ${CLIENT_SECRET} \u009b31m x"y` })
  echoingTokens = await startTokenEndpoint()
  echoingTokens.setMode('echo')
  const { snapshot } = await loadTestConfig(
    `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 2000, maxResponseBytes: ${CAP} }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  static:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: STATIC_TOKEN } }
  m2m:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: ${tokens.tokenUrl}, clientId: m2m-client, clientSecret: { env: CLIENT_SECRET }, credentialExchange: header_only }
  m2m-basic-echo:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: ${echoingTokens.tokenUrl}, clientId: m2m-client, clientSecret: { env: CLIENT_SECRET }, credentialExchange: header_only }
  m2m-form-echo:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: ${echoingTokens.tokenUrl}, clientId: m2m-client, clientSecret: { env: CLIENT_SECRET }, credentialExchange: body_only }
  shared:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_u2m_shared, tokenEndpoint: ${tokens.tokenUrl}, authorizationEndpoint: ${tokens.issuer}/authorize, clientId: shared-client, clientSecret: { env: CLIENT_SECRET } }
`,
    { STATIC_TOKEN, CLIENT_SECRET },
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log })
  await keyway.runtime.store.putToken(
    { connection: 'shared', user: null },
    {
      method: 'oauth_u2m_shared',
      accessToken: SHARED_ACCESS,
      refreshToken: SHARED_REFRESH,
      tokenType: 'Bearer',
      obtainedAt: Date.now(),
      expiresAt: Date.now() + 3_600_000,
    },
  )
  alice = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.alice })
})

afterAll(async () => {
  await alice?.close()
  await keyway?.close()
  await echoingTokens?.close()
  await tokens?.close()
  await upstream?.close()
})

beforeEach(() => {
  upstream.requests.length = 0
  upstream.setHandler(undefined)
})

/** Every secret planted in this file, by name; none may come back in any form. */
function canaries(): Record<string, string> {
  const m2mTokens = upstream.requests
    .map((r) => String(r.headers.authorization ?? ''))
    .filter((a) => a.includes(M2M_PREFIX))
    .map((a) => a.slice('Bearer '.length))
  return {
    static: STATIC_TOKEN,
    clientSecret: CLIENT_SECRET,
    sharedAccess: SHARED_ACCESS,
    sharedRefresh: SHARED_REFRESH,
    aliceKey: TEST_KEYS.alice,
    ...Object.fromEntries(m2mTokens.map((t, i) => [`m2m${i}`, t])),
  }
}

function lastToolCall(): ToolCallEvent {
  const events = audit.events.filter((e): e is ToolCallEvent => e.type === 'tool.call')
  return events.at(-1) as ToolCallEvent
}

const authOf = (req: RecordedRequest): string => String(req.headers.authorization ?? '')
const tokenOf = (req: RecordedRequest): string => authOf(req).replace(/^Bearer /, '')
const headerDump = (req: RecordedRequest): string => JSON.stringify({ headers: req.headers })

/** How an upstream echoes what it got. Each writes the credential (or a form of it) somewhere the model would see. */
const ECHOES: readonly (readonly [string, (req: RecordedRequest, res: ServerResponse) => void])[] = [
  [
    'httpbin /headers: request headers as JSON',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(headerDump(req))
    },
  ],
  [
    '/anything as text',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`GET ${req.path}\nAuthorization: ${authOf(req)}\n`)
    },
  ],
  [
    '401 error page quoting the token',
    (req, res) => {
      res.writeHead(401, { 'content-type': 'text/html' })
      res.end(`<p>token ${tokenOf(req)} is not valid here</p>`)
    },
  ],
  [
    'passed-on response headers',
    (req, res) => {
      const t = tokenOf(req)
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-request-id': `req-${t}`,
        location: `https://example.test/cb?access_token=${encodeURIComponent(t)}`,
        link: `<https://example.test/next?token=${encodeURIComponent(t)}>; rel="next"`,
        'x-ratelimit-resource': t,
        'www-authenticate': `Bearer realm="${t}", error="invalid_token", error_description="token ${t} expired"`,
      })
      res.end('{}')
    },
  ],
  [
    'base64 dump of the headers inside JSON',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ dump: Buffer.from(headerDump(req)).toString('base64') }))
    },
  ],
  [
    'base64url of the Authorization value',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`id=${Buffer.from(authOf(req)).toString('base64url')}`)
    },
  ],
  [
    'JSON with every character \\u-escaped',
    (req, res) => {
      const escaped = [...authOf(req)].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(`{"seen":"${escaped}"}`)
    },
  ],
  [
    'JSON with \\/ escapes (PHP)',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ seen: authOf(req) }).replaceAll('/', '\\/'))
    },
  ],
  [
    'form-encoded echo',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded' })
      res.end(new URLSearchParams({ authorization: authOf(req) }).toString())
    },
  ],
  [
    'the token split across two chunks',
    (req, res) => {
      const t = tokenOf(req)
      const half = Math.floor(t.length / 2)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write(`a${t.slice(0, half)}`, () => setImmediate(() => res.end(`${t.slice(half)}z`)))
    },
  ],
  [
    'gzip although identity was asked for',
    (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end(gzipSync(headerDump(req)))
    },
  ],
  [
    'the size cap cutting the token in two',
    (req, res) => {
      const t = tokenOf(req)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`${'x'.repeat(CAP - Math.floor(t.length / 2))}${t}`)
    },
  ],
]

describe.each(['static', 'm2m', 'shared'])('connection %s: the credential never comes back [redact:echoed-credential]', (connection) => {
  test.each(ECHOES)('%s', async (_name, echo) => {
    upstream.setHandler(echo)
    const r: ToolCallResult = await alice.callTool(connection, { method: 'GET', path: '/echo' })
    // The echo was real: the upstream got the injected credential.
    expect(authOf(upstream.requests[0] as RecordedRequest)).toMatch(/^Bearer .{8,}/)
    expect(findCanaries(JSON.stringify(r), canaries())).toEqual([])
    const call = lastToolCall()
    expect(findCanaries(JSON.stringify(call), canaries())).toEqual([])
    expect(call.connection).toBe(connection)
    expect(call.redacted).toBeGreaterThan(0)
    expect(r.structuredContent?.redacted).toBe(call.redacted)
    expect(textOf(r)).toContain('[REDACTED]')
  })
})

describe('what else the model sees', () => {
  test('an answer without secrets has no redacted field and no audit count', async () => {
    const r = await alice.callTool('static', { method: 'GET', path: '/plain' })
    expect(r.structuredContent).toMatchObject({ status: 200, truncated: false })
    expect(r.structuredContent).not.toHaveProperty('redacted')
    expect(lastToolCall()).not.toHaveProperty('redacted')
  })

  test('the refresh token and the client secret are redacted too, though the upstream never saw them', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`leaked elsewhere: ${SHARED_REFRESH} ${CLIENT_SECRET}`)
    })
    const r = await alice.callTool('shared', { method: 'GET', path: '/x' })
    expect(findCanaries(JSON.stringify(r), canaries())).toEqual([])
    expect(r.structuredContent?.redacted).toBe(2)
  })

  test('www-authenticate keeps only the scheme and the error code; set-cookie and authorization never pass [redact:headers-allowlist]', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': 'Bearer realm="internal-10.0.0.5", error="insufficient_scope", scope="admin secret-scope"',
        'set-cookie': 'sid=abc',
        authorization: 'Bearer upstream-own',
      })
      res.end('{}')
    })
    const r = await alice.callTool('static', { method: 'GET', path: '/x' })
    expect(r.structuredContent?.headers).toEqual({ 'content-type': 'application/json', 'www-authenticate': 'Bearer error="insufficient_scope"' })
  })

  test('Keyway asks for an uncompressed answer whatever the caller asked for', async () => {
    await alice.callTool('static', { method: 'GET', path: '/x', headers: { 'accept-encoding': 'gzip, br' } })
    expect(upstream.requests[0]?.headers['accept-encoding']).toBe('identity')
  })

  test('a content coding Keyway cannot decode withholds the body instead of passing unchecked bytes [redact:compressed]', async () => {
    upstream.setHandler((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-encoding': 'zstd' })
      res.end(Buffer.from(authOf(req)))
    })
    const r = await alice.callTool('static', { method: 'GET', path: '/x' })
    expect(findCanaries(JSON.stringify(r), canaries())).toEqual([])
    expect(r.structuredContent).toMatchObject({ truncated: true, body: expect.stringContaining('body withheld') })
  })
})

describe('token endpoints that echo the request', () => {
  test.each([
    ['m2m-basic-echo', 'the Basic header base64(client_id:secret)'],
    ['m2m-form-echo', 'the form body client_secret=p%40ss%3A...'],
  ])('%s: %s never reaches the caller, the log or the audit [redact:token-endpoint]', async (connection) => {
    const before = echoingTokens.requests.length
    const r = await alice.callTool(connection, { method: 'GET', path: '/x' })
    expect(echoingTokens.requests.length).toBe(before + 1)
    expect(textOf(r)).toMatch(/^CREDENTIAL_UNAVAILABLE: /)
    expect(textOf(r)).toContain('[REDACTED]')
    expect(upstream.requests).toHaveLength(0)
    expect(findCanaries(JSON.stringify(r), canaries())).toEqual([])
    expect(findCanaries(log.lines.join('\n'), canaries())).toEqual([])
    expect(findCanaries(JSON.stringify(audit.events), canaries())).toEqual([])
  })

  test('a scope echoed in a token response is stored as scope tokens only, without the secret or control characters', async () => {
    await alice.callTool('m2m', { method: 'GET', path: '/x' })
    const record = await keyway.runtime.store.getToken({ connection: 'm2m', user: null })
    expect(record?.scope).toBe('api:read [REDACTED]')
  })
})

test('nothing planted here reached the operational log [redact:logs]', () => {
  expect(findCanaries(log.lines.join('\n'), canaries())).toEqual([])
})
