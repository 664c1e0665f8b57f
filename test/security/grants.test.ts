/**
 * Attack suite, grants: the decision comes first and last. A caller without `USE CONNECTION`
 * learns nothing from malformed arguments and never makes Keyway wait for a consent; a call that
 * waited (for a consent, for a token endpoint) is decided again on the config live at the moment
 * it would send, so a REVOKE that landed meanwhile stops it before the upstream sees anything.
 * Whatever happens, one call is one audit line. Real peers: a loopback upstream and token
 * endpoint, the official MCP clients of both eras, the real runtime and store.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { ToolCallEvent } from '../../src/audit/events.js'
import type { ConfigSnapshot } from '../../src/config/load.js'
import { createCaller } from '../../src/identity/caller.js'
import { createMemoryLogger } from '../../src/log.js'
import { runToolCall } from '../../src/mcp/server.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, ERAS, textOf, type ToolCallResult } from '../helpers/mcp-clients.js'
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const ENV = {
  NOTES_TOKEN: 'notes-static-token-0123456789',
  SVC_SECRET: 'svc-client-secret-0123456789',
  KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
}
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'

let upstream: Upstream
let tokens: TokenEndpoint
let keyway: HttpKeyway
let granted: ConfigSnapshot
let revoked: ConfigSnapshot
const audit = createMemoryAuditLog()

const config = (grants: string): string => `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  notes:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: NOTES_TOKEN } }
  svc:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: "${tokens.tokenUrl}", clientId: svc, clientSecret: { env: SVC_SECRET } }
  drive:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      authorizationEndpoint: "${tokens.issuer}/authorize"
      tokenEndpoint: "${tokens.tokenUrl}"
      clientId: drive
      clientSecret: { env: SVC_SECRET }
grants:${grants}
`

beforeAll(async () => {
  upstream = await startUpstream()
  tokens = await startTokenEndpoint()
  const all = `
  - { privilege: USE CONNECTION, on: notes, to: { user: ${ALICE} } }
  - { privilege: USE CONNECTION, on: svc, to: { user: ${ALICE} } }
  - { privilege: USE CONNECTION, on: drive, to: { user: ${ALICE} } }`
  granted = (await loadTestConfig(config(all), ENV)).snapshot
  revoked = (await loadTestConfig(config(' []'), ENV)).snapshot
  keyway = await startHttp(granted, { port: 0, audit, log: createMemoryLogger() })
})

afterAll(async () => {
  await keyway?.close()
  await tokens?.close()
  await upstream?.close()
})

beforeEach(async () => {
  keyway.runtime.swap(granted)
  // Every m2m case starts without a cached token, so it asks the token endpoint.
  await keyway.runtime.store.deleteToken({ connection: 'svc', user: null })
  upstream.setHandler(undefined)
  upstream.requests.length = 0
  audit.events.length = 0
})

const mcpUrl = (): string => `${keyway.http?.url}/mcp`
const toolCalls = (): ToolCallEvent[] => audit.events.filter((e): e is ToolCallEvent => e.type === 'tool.call')

/** Audit lines are buffered to the next turn of the event loop; memory ones are immediate. */
async function call(era: (typeof ERAS)[number], key: keyof typeof TEST_KEYS, tool: string, args: Record<string, unknown>): Promise<ToolCallResult> {
  const client = await connectClient(era, mcpUrl(), { bearer: TEST_KEYS[key] })
  try {
    return await client.callTool(tool, args)
  } finally {
    await client.close()
  }
}

describe('decide first [grant:decide-first]', () => {
  const malformed: readonly [string, Record<string, unknown>][] = [
    ['an unknown argument', { path: '/x', evil: true }],
    ['a bad method', { method: 'TRACE', path: '/x' }],
    ['no path at all', { method: 'GET' }],
    ['a path of the wrong type', { path: { $gt: '' } }],
  ]
  for (const era of ERAS) {
    for (const [what, args] of malformed) {
      test(`${era}: a caller without the grant sending ${what} gets PERMISSION_DENIED, one audit line, no upstream request`, async () => {
        const r = await call(era, 'bob', 'notes', args)
        expect(r.isError).toBe(true)
        expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user bob@example\.com does not hold USE CONNECTION on connection "notes"/)
        // No schema detail reaches someone who may not use the tool.
        expect(textOf(r)).not.toMatch(/method|unknown argument|expected/i)
        expect(toolCalls()).toEqual([expect.objectContaining({ user: BOB, connection: 'notes', decision: 'deny', error: 'PERMISSION_DENIED' })])
        expect(upstream.requests).toHaveLength(0)
      })
    }
  }

  test('the same malformed arguments from a granted caller get INVALID_REQUEST with the detail, audited once as allowed', async () => {
    const r = await call('modern', 'alice', 'notes', { path: '/x', evil: true })
    expect(textOf(r)).toBe('INVALID_REQUEST: arguments: unknown argument evil')
    expect(toolCalls()).toEqual([expect.objectContaining({ user: ALICE, decision: 'allow', rule: `grant to user ${ALICE}`, error: 'INVALID_REQUEST' })])
    expect(upstream.requests).toHaveLength(0)
  })

  test('a caller without the grant never reaches the consent wait (nothing to hold a request open with)', async () => {
    let waited = 0
    const scope = { caller: createCaller(granted, BOB, 'api_key'), snapshot: granted }
    const step = await runToolCall(keyway.runtime.callDeps(granted), scope, 'drive', { path: '/x' }, { beforeCall: async () => void waited++ })
    expect(step.kind === 'result' && textOf(step.result as ToolCallResult)).toMatch(/^PERMISSION_DENIED: /)
    expect(waited).toBe(0)
  })
})

describe('decide last [grant:decide-last]', () => {
  test('REVOKE while the call waits for a consent to land: PERMISSION_DENIED, the upstream sees nothing, the audit line says deny', async () => {
    await keyway.runtime.store.putToken(
      { connection: 'drive', user: ALICE },
      {
        method: 'oauth_u2m_per_user',
        accessToken: 'alice-drive-token-0123456789',
        tokenType: 'bearer',
        obtainedAt: Date.now(),
        expiresAt: Date.now() + 600_000,
      },
    )
    const scope = { caller: createCaller(granted, ALICE, 'api_key'), snapshot: granted }
    // The hook is where a retry waits for the consent; the REVOKE lands while it waits.
    const step = await runToolCall(
      keyway.runtime.callDeps(granted),
      scope,
      'drive',
      { path: '/files' },
      { beforeCall: async () => keyway.runtime.swap(revoked) },
    )
    expect(step.kind).toBe('result')
    expect(step.kind === 'result' && textOf(step.result as ToolCallResult)).toMatch(
      /^PERMISSION_DENIED: user alice@example\.com does not hold USE CONNECTION on connection "drive"/,
    )
    expect(upstream.requests).toHaveLength(0)
    expect(toolCalls()).toEqual([expect.objectContaining({ user: ALICE, connection: 'drive', decision: 'deny', error: 'PERMISSION_DENIED' })])
  })

  test('REVOKE while the call waits for the token endpoint: PERMISSION_DENIED, the upstream sees nothing', async () => {
    tokens.setMode('hold')
    const pending = call('modern', 'alice', 'svc', { path: '/things' })
    await tokens.held()
    keyway.runtime.swap(revoked)
    tokens.release()
    const r = await pending
    expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user alice@example\.com does not hold USE CONNECTION on connection "svc"/)
    expect(upstream.requests).toHaveLength(0)
    expect(toolCalls()).toEqual([expect.objectContaining({ user: ALICE, connection: 'svc', decision: 'deny', error: 'PERMISSION_DENIED' })])
  })

  test('a reload that keeps the grant does not stop the waiting call', async () => {
    const again = (
      await loadTestConfig(
        config(`
  - { privilege: USE CONNECTION, on: svc, to: { group: "account users" } }`),
        ENV,
      )
    ).snapshot
    tokens.setMode('hold')
    const pending = call('legacy-v1', 'alice', 'svc', { path: '/things' })
    await tokens.held()
    keyway.runtime.swap(again)
    tokens.release()
    const r = await pending
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(upstream.requests).toHaveLength(1)
    // The audit line names the rule that held when the request was sent.
    expect(toolCalls()).toEqual([expect.objectContaining({ decision: 'allow', rule: 'grant to group account users', status: 200 })])
  })
})

describe('one call, one audit line [audit:one-line-per-call]', () => {
  const cases: readonly [string, () => void, Record<string, unknown>, Partial<ToolCallEvent>][] = [
    [
      'an upstream JSON body nested 100,000 deep',
      () =>
        upstream.setHandler((_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)
        }),
      { path: '/deep' },
      { status: 200 },
    ],
    [
      'an upstream 500',
      () =>
        upstream.setHandler((_req, res) => {
          res.writeHead(500, { 'content-type': 'application/json' })
          res.end('{"error":"boom"}')
        }),
      { path: '/boom' },
      { status: 500 },
    ],
    ['a refused path', () => undefined, { path: '//evil.example/x' }, { error: 'EGRESS_BLOCKED' }],
    [
      'an upstream that resets the connection',
      () => upstream.setHandler((_req, res) => void res.socket?.destroy()),
      { path: '/reset' },
      { error: 'UPSTREAM_UNAVAILABLE' },
    ],
  ]
  for (const [what, arrange, args, expected] of cases) {
    test(`${what}: exactly one tool.call line`, async () => {
      arrange()
      const r = await call('modern', 'alice', 'notes', args)
      expect(r.content).toHaveLength(1)
      expect(toolCalls()).toEqual([expect.objectContaining({ user: ALICE, connection: 'notes', decision: 'allow', ...expected })])
    })
  }

  test('the deeply nested body reaches the model as text, not as a parsed value', async () => {
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(`{"a":${'['.repeat(1_000)}1${']'.repeat(1_000)}}`)
    })
    const r = await call('modern', 'alice', 'notes', { path: '/deep' })
    expect(r.isError).toBeFalsy()
    expect(typeof r.structuredContent?.body).toBe('string')
    expect(toolCalls()).toHaveLength(1)
  })
})
