/**
 * Attack suite, answers Keyway receives: what an upstream or a token endpoint can send back that
 * the other suites do not cover. A compressed body that inflates far past the response cap, a
 * token response of a type Keyway cannot use as a bearer, a refresh answer that leaves out the
 * refresh token, and failures of a call whose URL carried a secret in its query. Each row proves
 * what the model, the audit line and the log see, and what reached the upstream and the store.
 * One listening Keyway, a real MCP client, loopback upstream and token endpoint.
 * @module
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { recordFromTokenSet } from '../../src/credentials/token-record.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf, type TestClient } from '../helpers/mcp-clients.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const CAP = 65_536
/** Sixteen MiB of zeros: about 16 KiB on the wire, 256 times the cap once inflated. */
const BOMB_BYTES = 16 * 1024 * 1024
const QUERY_CANARY = 'sk-CANARY-query-api-key-6d1e9b'
const MAC_TOKEN = 'at-CANARY-mac-token-2c8f4a'

let upstream: Upstream
let tokenServer: Server
let tokenRequests = 0
let keyway: HttpKeyway
let alice: TestClient
const audit = createMemoryAuditLog()
const log = createMemoryLogger()

beforeAll(async () => {
  upstream = await startUpstream()
  // A token endpoint that issues a MAC token (RFC 6749 §7.1 names it as another type): not a bearer.
  tokenServer = createServer((req, res) => {
    tokenRequests++
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify({ access_token: MAC_TOKEN, token_type: 'mac', mac_key: 'k', mac_algorithm: 'hmac-sha-256', expires_in: 600 }))
    })
  })
  await new Promise<void>((r) => tokenServer.listen(0, '127.0.0.1', r))
  const tokenUrl = `http://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`
  const { snapshot } = await loadTestConfig(
    `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000, maxResponseBytes: ${CAP} }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  notes:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    timeoutMs: 400
    auth: { type: bearer_token, token: { env: NOTES_TOKEN } }
  mac:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: "${tokenUrl}", clientId: mac-client, clientSecret: { env: MAC_SECRET } }
`,
    { NOTES_TOKEN: 'notes-static-token-0123456789', MAC_SECRET: 'mac-client-secret-0123456789' },
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log })
  alice = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.alice })
})

afterAll(async () => {
  await alice?.close()
  await keyway?.close()
  await new Promise<void>((r) => (tokenServer ? tokenServer.close(() => r()) : r()))
  await upstream?.close()
})

beforeEach(() => {
  upstream.requests.length = 0
  upstream.setHandler(undefined)
  audit.events.length = 0
  tokenRequests = 0
})

describe('upstream bodies', () => {
  test('a gzip bomb is inflated no further than the response cap and withheld; the call still answers', async () => {
    const bomb = gzipSync(Buffer.alloc(BOMB_BYTES))
    expect(bomb.length).toBeLessThan(CAP)
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end(bomb)
    })
    const r = await alice.callTool('notes', { path: '/bomb' })
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(r.structuredContent).toMatchObject({ status: 200, truncated: true, body: `[body withheld: the decoded body exceeds ${CAP} bytes]` })
    expect(upstream.requests).toHaveLength(1)
  })
})

describe('a secret in the query never reaches an error text, the audit line or the log', () => {
  const failures: readonly [string, () => void, RegExp][] = [
    ['an upstream that never answers', () => upstream.setHandler(() => undefined), /^UPSTREAM_TIMEOUT: GET 127\.0\.0\.1:\d+ timed out after 400 ms$/],
    ['an upstream that resets the connection', () => upstream.setHandler((_req, res) => void res.socket?.destroy()), /^UPSTREAM_UNAVAILABLE: /],
  ]
  for (const [what, arrange, expected] of failures) {
    test(`${what}: the error names method and host only`, async () => {
      arrange()
      const r = await alice.callTool('notes', { path: '/search', query: { api_key: QUERY_CANARY } })
      expect(textOf(r)).toMatch(expected)
      // The secret was real: the upstream received it in the query.
      expect(upstream.requests.at(-1)?.query).toBe(`?api_key=${QUERY_CANARY}`)
      expect(JSON.stringify(r)).not.toContain(QUERY_CANARY)
      expect(JSON.stringify(audit.events)).not.toContain(QUERY_CANARY)
      expect(audit.events.filter((e) => e.type === 'tool.call')).toEqual([expect.objectContaining({ connection: 'notes', path: '/search' })])
      expect(log.lines.join('\n')).not.toContain(QUERY_CANARY)
    })
  }
})

describe('token responses', () => {
  test('a token_type other than Bearer is refused: CREDENTIAL_UNAVAILABLE, nothing stored, nothing sent upstream', async () => {
    const r = await alice.callTool('mac', { path: '/things' })
    expect(tokenRequests).toBe(1)
    expect(r.isError).toBe(true)
    expect(textOf(r)).toMatch(/^CREDENTIAL_UNAVAILABLE: /)
    expect(textOf(r)).not.toContain(MAC_TOKEN)
    expect(upstream.requests).toHaveLength(0)
    expect(await keyway.runtime.store.getToken({ connection: 'mac', user: null })).toBeUndefined()
  })

  test('a refresh answer without refresh_token keeps the stored one (a provider that does not rotate)', () => {
    const previous = recordFromTokenSet(
      { accessToken: 'at-old-0123456789', tokenType: 'bearer', refreshToken: 'rt-kept-0123456789', scope: 'api:read', expiresAt: 1_000 },
      { method: 'oauth_u2m_shared', now: 0 },
    )
    const next = recordFromTokenSet(
      { accessToken: 'at-new-0123456789', tokenType: 'bearer', expiresAt: 2_000 },
      { method: 'oauth_u2m_shared', now: 500, previous },
    )
    expect(next).toMatchObject({ accessToken: 'at-new-0123456789', refreshToken: 'rt-kept-0123456789', scope: 'api:read', obtainedAt: 0, lastRefreshAt: 500 })
    expect(next.warnings).toBeUndefined()
  })
})
