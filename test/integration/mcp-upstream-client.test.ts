import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import type { Connection } from '../../src/config/load.js'
import { createEgress, type Egress } from '../../src/egress/safe-fetch.js'
import { isAppError } from '../../src/errors.js'
import { createUpstreamMcpClient, type UpstreamAnswer, type UpstreamMcpClient, type UpstreamTarget } from '../../src/mcp-upstream/client.js'
import { apiKeyLines, loadTestConfig } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import {
  LONG_TOOL_NAME,
  startEverythingServer,
  startProtectedMcpServer,
  type EverythingServer,
  type ProtectedMcpServer,
} from '../helpers/start-upstream-mcp.js'

const TOKENS: Readonly<Record<string, string>> = { 'tok-alice': 'alice@example.com', 'tok-bob': 'bob@example.com' }
const verify = (bearer: string): Promise<string | undefined> => Promise.resolve(TOKENS[bearer])

let everything: EverythingServer
let modern: ProtectedMcpServer
let legacy: ProtectedMcpServer
let egress: Egress
let client: UpstreamMcpClient
let connections: ReadonlyMap<string, Connection>

beforeAll(async () => {
  everything = await startEverythingServer()
  modern = await startProtectedMcpServer({ verify, era: 'modern' })
  legacy = await startProtectedMcpServer({ verify, era: 'legacy' })
  const closedPort = await freePort()
  const conn = (name: string, origin: string): string => `
  ${name}:
    host: ${origin}
    basePath: /mcp/
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }`
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000, maxResponseBytes: 1048576 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:${conn('everything', everything.origin)}${conn('modern', modern.origin)}${conn('legacy', legacy.origin)}${conn('legacy_fresh', legacy.origin)}${conn('down', `http://127.0.0.1:${closedPort}`)}
`,
    { UPSTREAM_TOKEN: 'unused' },
  )
  connections = snapshot.connections
  egress = createEgress({ policy: { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: true } })
  client = createUpstreamMcpClient({ egress, clientInfo: { name: 'keyway-test', version: '0.0.0' } })
})

afterAll(async () => {
  await client.close()
  await egress.close()
  await Promise.all([everything.close(), modern.close(), legacy.close()])
})

function target(name: string, token = 'tok-alice'): UpstreamTarget {
  const connection = connections.get(name)
  if (connection === undefined) throw new Error(`no connection ${name}`)
  return { connection, authorization: `Bearer ${token}` }
}

function resultOf(a: UpstreamAnswer): Record<string, unknown> {
  if (a.kind !== 'result') throw new Error(`expected a result, got ${JSON.stringify(a)}`)
  return a.result
}

function toolNames(a: UpstreamAnswer): string[] {
  return (resultOf(a)['tools'] as { name: string }[]).map((t) => t.name)
}

describe.each(['modern', 'legacy'] as const)('protected %s upstream', (era) => {
  const server = (): ProtectedMcpServer => (era === 'modern' ? modern : legacy)

  test('lists tools (the 70-character name as is) and calls them with the caller credential; results pass through unchanged', async () => {
    const list = await client.listTools(target(era))
    expect(toolNames(list)).toEqual(expect.arrayContaining(['whoami', 'echo', 'slow_progress', LONG_TOOL_NAME]))
    expect(LONG_TOOL_NAME).toHaveLength(70)
    expect(client.declaresListChanged(target(era).connection)).toBe(true)

    const echo = await client.callTool(target(era), 'echo', { a: 1, nested: { b: [true, null] } })
    expect(resultOf(echo)['structuredContent']).toEqual({ a: 1, nested: { b: [true, null] } })
    const who = await client.callTool(target(era, 'tok-bob'), 'whoami', undefined)
    expect(resultOf(who)['structuredContent']).toEqual({ user: 'bob@example.com' })
    expect(resultOf(who)['content']).toEqual([{ type: 'text', text: 'bob@example.com' }])
  })

  test('speaks its era on the wire', async () => {
    await client.callTool(target(era), 'echo', {})
    const last = server().rec.headers.at(-1) ?? {}
    expect(last['user-agent']).toBe('keyway/0.1')
    expect(last['authorization']).toBe('Bearer tok-alice')
    if (era === 'modern') {
      expect(last['mcp-protocol-version']).toBe('2026-07-28')
      expect(last['mcp-method']).toBe('tools/call')
      expect(last['mcp-name']).toBe('echo')
      expect(last['mcp-session-id']).toBeUndefined()
      expect(server().rec.initializeCount).toBe(0)
      expect(server().rec.methods).toContain('server/discover')
    } else {
      expect(last['mcp-protocol-version']).toBe('2025-11-25')
      expect(server().rec.sessionIds).toContain(last['mcp-session-id'])
      expect(server().rec.methods).toContain('notifications/initialized')
    }
  })

  test('progress notifications reach onNotification in order, before the result', async () => {
    const seen: { method: string; params?: Record<string, unknown> }[] = []
    const answer = await client.callTool(target(era), 'slow_progress', {}, { meta: { progressToken: 'p-1' }, onNotification: (n) => seen.push(n) })
    expect(resultOf(answer)['content']).toEqual([{ type: 'text', text: 'done' }])
    expect(seen.map((n) => [n.method, n.params?.['progressToken'], n.params?.['progress']])).toEqual([
      ['notifications/progress', 'p-1', 1],
      ['notifications/progress', 'p-1', 2],
      ['notifications/progress', 'p-1', 3],
    ])
  })

  test('a JSON-RPC error is passed through as received', async () => {
    const answer = await client.callTool(target(era), 'no_such_tool', {})
    expect(answer).toMatchObject({ kind: 'error', code: -32602 })
    if (answer.kind === 'error') expect(answer.message).toContain('no_such_tool')
  })

  test('an unknown bearer gets the upstream 401 as an HTTP answer with its WWW-Authenticate', async () => {
    const answer = await client.callTool(target(era, 'tok-nobody'), 'whoami', {})
    expect(answer).toMatchObject({ kind: 'http', status: 401 })
    if (answer.kind === 'http') expect(answer.headers['www-authenticate']).toContain('resource_metadata=')
  })

  test('listen: notifications/tools/list_changed reaches onToolsChanged; abort ends it', async () => {
    const ac = new AbortController()
    let changes = 0
    const before = server().listeners()
    const done = client.listen(target(era), () => changes++, ac.signal)
    await vi.waitFor(() => expect(server().listeners()).toBe(before + 1))
    server().addTool({ name: `added_${era}` })
    await vi.waitFor(() => expect(changes).toBe(1))
    ac.abort()
    await expect(done).resolves.toBeUndefined()
    expect(toolNames(await client.listTools(target(era)))).toContain(`added_${era}`)
  })
})

describe('2025-era session pool', () => {
  test('two credentials get two sessions; no request ever carries one user session id with another user token', async () => {
    await client.callTool(target('legacy', 'tok-alice'), 'whoami', {})
    await client.callTool(target('legacy', 'tok-bob'), 'whoami', {})
    await client.callTool(target('legacy', 'tok-alice'), 'whoami', {})
    const rec = legacy.rec
    const users = new Set(rec.sessionIds.map((id) => rec.userBySession.get(id)))
    expect(users).toEqual(new Set(['alice@example.com', 'bob@example.com']))
    let checked = 0
    for (const h of rec.headers) {
      const sid = h['mcp-session-id']
      if (typeof sid !== 'string') continue
      const owner = rec.userBySession.get(sid)
      expect(TOKENS[String(h['authorization']).replace('Bearer ', '')]).toBe(owner)
      checked++
    }
    expect(checked).toBeGreaterThan(3)
  })

  test('concurrent first requests for one credential share one probe and one initialize', async () => {
    const before = legacy.rec.initializeCount
    const discovers = legacy.rec.methods.filter((m) => m === 'server/discover').length
    const answers = await Promise.all(Array.from({ length: 5 }, () => client.listTools(target('legacy_fresh', 'tok-alice'))))
    for (const a of answers) expect(toolNames(a)).toContain('whoami')
    expect(legacy.rec.initializeCount - before).toBe(1)
    expect(legacy.rec.methods.filter((m) => m === 'server/discover').length - discovers).toBe(1)
  })
})

describe('reference server (server-everything)', () => {
  test('lists and calls; after a restart exactly one re-initialize, and the call succeeds', async () => {
    const list = await client.listTools(target('everything'))
    expect(toolNames(list)).toContain('echo')
    const first = await client.callTool(target('everything'), 'echo', { message: 'hi' })
    expect(resultOf(first)['content']).toEqual([{ type: 'text', text: 'Echo: hi' }])
    expect(everything.rec.initializeCount).toBe(1)

    await everything.restart()
    const again = await client.callTool(target('everything'), 'echo', { message: 'again' })
    expect(resultOf(again)['content']).toEqual([{ type: 'text', text: 'Echo: again' }])
    expect(everything.rec.initializeCount).toBe(2)
    await client.callTool(target('everything'), 'echo', { message: 'third' })
    expect(everything.rec.initializeCount).toBe(2)
  })

  test('listen on the session GET stream sees list_changed', async () => {
    const ac = new AbortController()
    let changes = 0
    const done = client.listen(target('everything'), () => changes++, ac.signal)
    await vi.waitFor(() => expect(everything.listeners()).toBe(1))
    everything.announceToolsChanged()
    await vi.waitFor(() => expect(changes).toBe(1))
    ac.abort()
    await expect(done).resolves.toBeUndefined()
    await vi.waitFor(() => expect(everything.listeners()).toBe(0))
  })

  test('a 400 naming the session (the reference launcher answer to an unknown session) also re-initializes once', async () => {
    await using launcherLike = await startEverythingServer({ unknownSession: 400 })
    const { snapshot } = await loadTestConfig(
      `
version: 1
server: { publicUrl: http://127.0.0.1:8787 }
identity:
  apiKeys:
${apiKeyLines()}
egress: { dangerouslyAllowPrivateNetworks: true }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  ref:
    host: ${launcherLike.origin}
    basePath: /mcp/
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }
`,
      { UPSTREAM_TOKEN: 'unused' },
    )
    const t = { connection: snapshot.connections.get('ref') as Connection, authorization: 'Bearer x' }
    expect(toolNames(await client.listTools(t))).toContain('echo')
    await launcherLike.restart()
    expect(toolNames(await client.listTools(t))).toContain('echo')
    expect(launcherLike.rec.initializeCount).toBe(2)
  })
})

test('an unreachable upstream is UPSTREAM_UNAVAILABLE', async () => {
  const e: unknown = await client.listTools(target('down')).catch((err: unknown) => err)
  expect(isAppError(e, 'UPSTREAM_UNAVAILABLE')).toBe(true)
})

test('forget drops the sessions of a connection: the next request initializes again', async () => {
  await client.callTool(target('legacy_fresh', 'tok-bob'), 'whoami', {})
  const before = legacy.rec.initializeCount
  client.forget('legacy_fresh')
  expect(client.declaresListChanged(target('legacy_fresh').connection)).toBeUndefined()
  await client.callTool(target('legacy_fresh', 'tok-bob'), 'whoami', {})
  expect(legacy.rec.initializeCount - before).toBe(1)
  await vi.waitFor(() => expect(legacy.rec.methods).toContain('DELETE'))
})

test('an aborted signal cuts the request with its own reason', async () => {
  const reason = new Error('caller went away')
  await expect(client.callTool(target('modern'), 'echo', {}, { signals: [AbortSignal.abort(reason)] })).rejects.toBe(reason)
  await expect(client.callTool(target('legacy'), 'echo', {}, { signals: [AbortSignal.abort(reason)] })).rejects.toBe(reason)
})
