/**
 * Attack suite, the token store failing under a running Keyway: Redis is unreachable while tool
 * calls arrive. A failure must never read as "no token": no consent link is handed out, no
 * client-credentials token is fetched that could not be stored, nothing is sent upstream, and the
 * caller gets the retryable `STORE_UNAVAILABLE`. A caller without the grant is refused before the
 * store is asked at all. One listening Keyway whose store points at a closed loopback port, real
 * MCP clients, loopback upstream and token endpoint.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const ENV = { STATIC: 'static-token-0123456789abcdef', SECRET: 'client-secret-0123456789abcdef', KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }

let upstream: Upstream
let tokens: TokenEndpoint
let keyway: HttpKeyway
const audit = createMemoryAuditLog()

beforeAll(async () => {
  upstream = await startUpstream()
  tokens = await startTokenEndpoint()
  // Nothing listens here: every store operation is refused by the operating system.
  const deadRedis = await freePort()
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "redis://127.0.0.1:${deadRedis}", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  svc:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: "${tokens.tokenUrl}", clientId: svc, clientSecret: { env: SECRET } }
  drive:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      authorizationEndpoint: "${tokens.issuer}/authorize"
      tokenEndpoint: "${tokens.tokenUrl}"
      clientId: drive
      clientSecret: { env: SECRET }
  static:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: STATIC } }
grants:
  - { privilege: USE CONNECTION, on: svc, to: { user: alice@example.com } }
  - { privilege: USE CONNECTION, on: drive, to: { user: alice@example.com } }
  - { privilege: USE CONNECTION, on: static, to: { user: alice@example.com } }
`,
    ENV,
  )
  keyway = await startHttp(snapshot, { port: 0, audit, log: createMemoryLogger() })
})

afterAll(async () => {
  await keyway?.close()
  await tokens?.close()
  await upstream?.close()
})

beforeEach(() => {
  upstream.requests.length = 0
  tokens.requests.length = 0
  audit.events.length = 0
})

/** A 2025-era client declaring no elicitation: a per-user consent would come back as a link in the text. */
async function call(key: keyof typeof TEST_KEYS, tool: string): Promise<ToolCallResult> {
  const client = await connectClient('legacy-v1', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS[key] })
  try {
    return await client.callTool(tool, { path: '/things' })
  } finally {
    await client.close()
  }
}

describe('Redis unreachable during tool calls [store:fail-closed]', () => {
  const rows: readonly [string, string][] = [
    ['an oauth_m2m connection: no client-credentials token is fetched that could not be stored', 'svc'],
    ['an oauth_u2m_per_user connection: no consent link, as if the user had never connected', 'drive'],
  ]
  for (const [what, tool] of rows) {
    test(`${what}; STORE_UNAVAILABLE, nothing sent`, async () => {
      const r = await call('alice', tool)
      expect(r.isError).toBe(true)
      expect(textOf(r)).toMatch(/^STORE_UNAVAILABLE: /)
      expect(textOf(r)).not.toMatch(/\/connect\/|CONSENT_REQUIRED/)
      expect(tokens.requests).toHaveLength(0)
      expect(upstream.requests).toHaveLength(0)
      expect(audit.events.filter((e) => e.type === 'tool.call')).toEqual([
        expect.objectContaining({ connection: tool, decision: 'allow', error: 'STORE_UNAVAILABLE' }),
      ])
    })
  }

  test('a caller without the grant gets PERMISSION_DENIED, not STORE_UNAVAILABLE: the store is never asked', async () => {
    const r = await call('bob', 'svc')
    expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user bob@example\.com /)
    expect(tokens.requests).toHaveLength(0)
    expect(upstream.requests).toHaveLength(0)
  })

  test('control: a static token needs no store and still works', async () => {
    const r = await call('alice', 'static')
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(upstream.last()?.headers.authorization).toBe(`Bearer ${ENV.STATIC}`)
  })
})
