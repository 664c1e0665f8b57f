/**
 * Attack suite, MCP sessions: there is nothing to guess or hijack, because Keyway keeps no
 * session. A 2025-era `initialize` over HTTP gets no `Mcp-Session-Id`, and every later request is
 * authenticated by its own bearer; a session id a client invents (or copied from someone else)
 * confers nothing. One listening Keyway and raw HTTP requests as an MCP client would send them.
 * @module
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

let upstream: Upstream
let keyway: HttpKeyway
let mcpUrl: string

beforeAll(async () => {
  upstream = await startUpstream()
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
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: TOKEN } }
`,
    { TOKEN: 'notes-static-token-0123456789' },
  )
  keyway = await startHttp(snapshot, { port: 0, audit: createMemoryAuditLog(), log: createMemoryLogger() })
  mcpUrl = `${keyway.http?.url}/mcp`
})

afterAll(async () => {
  await keyway?.close()
  await upstream?.close()
})

const post = (body: unknown, headers: Record<string, string>): Promise<Response> =>
  fetch(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  })

describe('no MCP session to predict or replay', () => {
  test('a 2025-era initialize over HTTP succeeds without an Mcp-Session-Id: there is no session id to guess', async () => {
    const r = await post(
      { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } },
      { authorization: `Bearer ${TEST_KEYS.alice}` },
    )
    expect(r.status).toBe(200)
    expect(await r.text()).toContain('"protocolVersion":"2025-06-18"')
    expect(r.headers.get('mcp-session-id')).toBeNull()
  })

  test('an invented session id without a bearer is still 401, and nothing reaches the upstream', async () => {
    const r = await post(
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'notes', arguments: { path: '/x' } } },
      { 'mcp-protocol-version': '2025-06-18', 'mcp-session-id': 'session-of-alice-0123456789abcdef' },
    )
    expect(r.status).toBe(401)
    expect(upstream.requests).toHaveLength(0)
  })
})
