/**
 * The upstream tool catalog (design.md §12) over a real config snapshot, the real breaker and a
 * real in-memory token store. The upstream MCP client and the credential provider are the
 * catalog's peers, given here as small scripted implementations of their interfaces (the client
 * of `mcp-upstream/client.ts` is tested against real upstream servers on its own): they record
 * what the catalog asked and answer what each test sets.
 */
import { afterEach, describe, expect, test, vi } from 'vitest'
import { loadConfigText, type ConfigSnapshot, type Connection } from '../../../src/config/load.js'
import type { Credential, CredentialProvider, ResolveOptions } from '../../../src/credentials/credential.js'
import { createCaller, type Caller } from '../../../src/identity/caller.js'
import { createMemoryLogger } from '../../../src/log.js'
import { createBreakers } from '../../../src/mcp-upstream/breaker.js'
import { createCatalog, requestSync, type Catalog, type CatalogClient } from '../../../src/mcp-upstream/catalog.js'
import type { TokenStore } from '../../../src/store/index.js'
import { openMemoryStore } from '../../helpers/memory-store.js'

type ListAnswer = Awaited<ReturnType<CatalogClient['listTools']>>

const OAUTH = `      authorizationEndpoint: https://idp.example.com/authorize
      tokenEndpoint: https://idp.example.com/token
      clientId: keyway
      clientSecret: { env: T }`

function configText(everythingMcp = '{ include: ["get_*", echo], exclude: ["get_secret*"], catalog: { refreshSeconds: 60 } }'): string {
  return `version: 1
connections:
  everything:
    host: https://everything.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
    mcp: ${everythingMcp}
  drive:
    host: https://drive.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
${OAUTH}
  mine:
    host: https://mine.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    mcp: { catalog: { credential: caller } }
    auth:
      type: oauth_u2m_per_user
${OAUTH}
`
}

async function loadSnapshot(text = configText()): Promise<ConfigSnapshot> {
  const r = await loadConfigText(text, '/cfg/connections.yaml', { env: { T: 'bearer-secret' } })
  if (!r.ok) throw new Error(r.problems.join('\n'))
  return r.snapshot
}

const tool = (name: string, extra: Record<string, unknown> = {}) => ({ name, inputSchema: { type: 'object' }, ...extra })
const result = (...tools: Record<string, unknown>[]): ListAnswer => ({ kind: 'result', result: { tools } })

/** A scripted upstream client: `answer` decides each tools/list; calls and listens are recorded. */
function scriptedClient() {
  const calls: { connection: string; authorization: string }[] = []
  const listens: { connection: string; onToolsChanged: () => void; signal: AbortSignal; end: () => void }[] = []
  const state = {
    answer: (_c: Connection, _authorization: string): Promise<ListAnswer> | ListAnswer => result(tool('echo')),
    declares: false as boolean | undefined,
  }
  const client: CatalogClient = {
    async listTools(target) {
      calls.push({ connection: target.connection.name, authorization: target.authorization })
      return state.answer(target.connection, target.authorization)
    },
    declaresListChanged: () => state.declares,
    listen(target, onToolsChanged, signal) {
      return new Promise<void>((resolve) => {
        const end = (): void => resolve()
        signal.addEventListener('abort', end, { once: true })
        listens.push({ connection: target.connection.name, onToolsChanged, signal, end })
      })
    },
  }
  return { client, calls, listens, state }
}

/** A credential provider: `Bearer <user>-<n>` per resolve of a user with a token; consent for the others. */
function scriptedCredentials(connected: Set<string>) {
  const resolves: { connection: string; user: string; opts: ResolveOptions }[] = []
  let generation = 1
  const provider: CredentialProvider = {
    async resolve(connection, caller, opts = {}): Promise<Credential> {
      resolves.push({ connection: connection.name, user: caller.user, opts })
      if (connection.auth.type === 'bearer_token') return { kind: 'ready', authorization: 'Bearer shared', refreshable: false, secrets: ['shared'] }
      if (!connected.has(caller.user)) return { kind: 'consent-required', url: 'https://keyway.example.com/connect/x', flowId: 'x' }
      if (opts.forceRefresh) generation++
      return { kind: 'ready', authorization: `Bearer ${caller.user}-${generation}`, refreshable: true, secrets: [] }
    },
  }
  return { provider, resolves }
}

interface Rig {
  readonly catalog: Catalog
  readonly client: ReturnType<typeof scriptedClient>
  readonly creds: ReturnType<typeof scriptedCredentials>
  readonly log: ReturnType<typeof createMemoryLogger>
  readonly store: TokenStore
  readonly clock: { t: number }
  snapshot: ConfigSnapshot
  readonly conn: (name: string) => Connection
  readonly user: (name: string) => Caller
}

const open: Rig[] = []
afterEach(async () => {
  for (const r of open.splice(0)) {
    r.catalog.close()
    await r.store.close()
  }
})

async function rig(connected = new Set(['admin@example.com']), before?: (store: TokenStore, now: () => number) => Promise<void>): Promise<Rig> {
  const clock = { t: 1_000_000 }
  const now = () => clock.t
  const store = await openMemoryStore(now)
  await before?.(store, now)
  const client = scriptedClient()
  const creds = scriptedCredentials(connected)
  const log = createMemoryLogger()
  const r: Rig = {
    snapshot: await loadSnapshot(),
    client,
    creds,
    log,
    store,
    clock,
    catalog: undefined as unknown as Catalog,
    conn: (name) => r.snapshot.connections.get(name)!,
    user: (name) => createCaller(r.snapshot, name, 'api_key'),
  }
  Object.assign(r, {
    catalog: createCatalog({ client: client.client, credentials: creds.provider, breakers: createBreakers({ now }), store, log, now, live: () => r.snapshot }),
  })
  open.push(r)
  return r
}

const names = (a: Awaited<ReturnType<Catalog['tools']>>) => (a.ok ? a.tools.map((t) => t.name) : a.problem)

describe('catalog', () => {
  test('a shared list is fetched once with the shared credential, filtered, cached, and shared by concurrent askers', async () => {
    const r = await rig()
    r.client.state.answer = () =>
      result(tool('echo', { description: 'Echo', annotations: { readOnlyHint: true } }), tool('get_sum'), tool('get_secret_key'), tool('delete'))
    const [a, b] = await Promise.all([r.catalog.tools(r.conn('everything'), r.user('alice')), r.catalog.tools(r.conn('everything'), r.user('bob'))])
    expect(names(a)).toEqual(['echo', 'get_sum'])
    expect(b).toEqual(a)
    if (a.ok) expect(a.tools[0]).toEqual(tool('echo', { description: 'Echo', annotations: { readOnlyHint: true } }))
    expect(r.client.calls).toEqual([{ connection: 'everything', authorization: 'Bearer shared' }])
    await r.catalog.tools(r.conn('everything'), r.user('carol'))
    expect(r.client.calls).toHaveLength(1)
  })

  test('after refreshSeconds the stale list is served and refreshed behind; a different list calls onChange', async () => {
    const r = await rig()
    const changed = vi.fn()
    r.catalog.onChange(changed)
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    r.client.state.answer = () => result(tool('echo'), tool('get_new'))
    r.clock.t += 61_000
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo'])
    await vi.waitFor(() => expect(changed).toHaveBeenCalledTimes(1))
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo', 'get_new'])
    expect(r.client.calls).toHaveLength(2)
  })

  test('a failing upstream: the last good list is kept up to 3 × refreshSeconds, one warning per failure run, then unavailable', async () => {
    const r = await rig()
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    r.client.state.answer = () => ({ kind: 'http', status: 502 })
    r.clock.t += 61_000
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo'])
    await vi.waitFor(() => expect(r.client.calls).toHaveLength(2))
    const warnings = () => r.log.lines.filter((l) => l.includes('upstream MCP tool list unavailable'))
    // The background refresh has settled (it logs the failure) before the clock moves on.
    await vi.waitFor(() => expect(warnings()).toHaveLength(1))
    r.clock.t += 61_000
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo'])
    await vi.waitFor(() => expect(r.client.calls).toHaveLength(3))
    await vi.waitFor(() => expect(warnings()).toHaveLength(1))
    expect(warnings()[0]).toContain('HTTP 502')
    expect(warnings()[0]).not.toContain('bearer-secret')
    r.clock.t += 60_000 // 182 s after the last good fetch: beyond 3 × 60 s
    expect(await r.catalog.tools(r.conn('everything'), r.user('alice'))).toEqual({
      ok: false,
      reason: 'unavailable',
      problem: 'the upstream answered tools/list with HTTP 502',
    })
    expect(warnings()).toHaveLength(1)
    r.client.state.answer = () => result(tool('echo'))
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo'])
    r.client.state.answer = () => ({ kind: 'error', code: -32603, message: 'boom' })
    r.clock.t += 61_000
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    await vi.waitFor(() => expect(warnings()).toHaveLength(2))
  })

  test('the breaker opens after 5 failures in a row: no more upstream requests, UPSTREAM_UNAVAILABLE problem', async () => {
    const r = await rig()
    r.client.state.answer = () => {
      throw new Error('connect ECONNREFUSED 127.0.0.1:1')
    }
    for (let i = 0; i < 5; i++)
      expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toBe('tools/list failed: connect ECONNREFUSED 127.0.0.1:1')
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toBe(
      'upstream MCP server of "everything" failed 5 times in a row; calls are refused for 30 s more',
    )
    expect(r.client.calls).toHaveLength(5)
  })

  test('per-user connection: the owner token lists the tools; a 401 forces one refresh and one retry', async () => {
    const r = await rig()
    r.client.state.answer = (_c, authorization) => (authorization === 'Bearer admin@example.com-1' ? { kind: 'http', status: 401 } : result(tool('search')))
    expect(names(await r.catalog.tools(r.conn('drive'), r.user('alice')))).toEqual(['search'])
    expect(r.creds.resolves.map((x) => [x.user, x.opts])).toEqual([
      ['admin@example.com', {}],
      ['admin@example.com', { forceRefresh: true, rejectedAuthorization: 'Bearer admin@example.com-1' }],
    ])
    expect(r.client.calls.map((c) => c.authorization)).toEqual(['Bearer admin@example.com-1', 'Bearer admin@example.com-2'])
  })

  test('per-user connection whose owner has not connected: unavailable with the owner named, nothing sent upstream', async () => {
    const r = await rig(new Set())
    expect(await r.catalog.tools(r.conn('drive'), r.user('alice'))).toEqual({
      ok: false,
      reason: 'consent-required',
      problem: 'the owner admin@example.com has not connected their account to "drive" yet',
    })
    expect(r.client.calls).toEqual([])
  })

  test('catalog credential caller: one list per caller with their own token; a caller without one gets consent-required', async () => {
    const r = await rig(new Set(['alice@example.com', 'bob@example.com']))
    r.client.state.answer = (_c, authorization) => result(tool(authorization === 'Bearer alice@example.com-1' ? 'alice_tool' : 'bob_tool'))
    expect(names(await r.catalog.tools(r.conn('mine'), r.user('alice@example.com')))).toEqual(['alice_tool'])
    expect(names(await r.catalog.tools(r.conn('mine'), r.user('bob@example.com')))).toEqual(['bob_tool'])
    expect(names(await r.catalog.tools(r.conn('mine'), r.user('alice@example.com')))).toEqual(['alice_tool'])
    expect(r.client.calls).toHaveLength(2)
    const carol = await r.catalog.tools(r.conn('mine'), r.user('carol@example.com'))
    expect(carol.ok === false && carol.reason).toBe('consent-required')
    expect(names(carol)).toContain('CONSENT_REQUIRED')
  })

  test('sync: the next answer is a fresh fetch for shared and per-caller lists', async () => {
    const r = await rig(new Set(['alice@example.com']))
    const changed = vi.fn()
    r.catalog.onChange(changed)
    await r.catalog.tools(r.conn('everything'), r.user('alice@example.com'))
    await r.catalog.tools(r.conn('mine'), r.user('alice@example.com'))
    r.client.state.answer = () => result(tool('echo'), tool('get_more'))
    r.catalog.sync('everything')
    r.catalog.sync('mine')
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice@example.com')))).toEqual(['echo', 'get_more'])
    expect(names(await r.catalog.tools(r.conn('mine'), r.user('alice@example.com')))).toEqual(['echo', 'get_more'])
    expect(r.client.calls.map((c) => c.connection)).toEqual(['everything', 'mine', 'everything', 'mine'])
    await vi.waitFor(() => expect(changed).toHaveBeenCalledTimes(1)) // debounced: both changes, one call
  })

  test('keyway mcp sync: a new generation in the store makes the catalog refetch within the poll interval', async () => {
    // A generation made before the catalog started is not a sync for it.
    const r = await rig(undefined, (store, now) => requestSync(store, 'drive', () => now() - 1))
    await r.catalog.tools(r.conn('drive'), r.user('alice'))
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    r.client.state.answer = () => result(tool('echo'), tool('get_synced'))
    await requestSync(r.store, 'everything', () => r.clock.t)
    await vi.waitFor(() => expect(r.client.calls).toHaveLength(3), { timeout: 8_000, interval: 50 })
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo', 'get_synced'])
    await r.catalog.tools(r.conn('drive'), r.user('alice'))
    expect(r.client.calls.map((c) => c.connection)).toEqual(['drive', 'everything', 'everything'])
  }, 15_000)

  test('list_changed: one listen per shared catalog; a notification refetches (debounced) and calls onChange; close stops it', async () => {
    const r = await rig()
    r.client.state.declares = true
    const changed = vi.fn()
    r.catalog.onChange(changed)
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    await vi.waitFor(() => expect(r.client.listens).toHaveLength(1))
    expect(r.client.listens[0]?.connection).toBe('everything')
    r.client.state.answer = () => result(tool('echo'), tool('get_pushed'))
    r.client.listens[0]?.onToolsChanged()
    r.client.listens[0]?.onToolsChanged()
    await vi.waitFor(() => expect(changed).toHaveBeenCalledTimes(1))
    expect(r.client.calls).toHaveLength(2)
    // A per-caller catalog never listens.
    await r.catalog.tools(r.conn('mine'), r.user('admin@example.com'))
    expect(r.client.listens).toHaveLength(1)
    const signal = r.client.listens[0]!.signal
    r.catalog.close()
    expect(signal.aborted).toBe(true)
  })

  test('a reload keeps the list of an unchanged connection and refetches a changed one; listening stops when it leaves', async () => {
    const r = await rig()
    r.client.state.declares = true
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    await vi.waitFor(() => expect(r.client.listens).toHaveLength(1))
    r.snapshot = await loadSnapshot()
    await r.catalog.tools(r.conn('everything'), r.user('alice'))
    expect(r.client.calls).toHaveLength(1)
    r.snapshot = await loadSnapshot(configText('{ include: [echo] }'))
    r.client.state.answer = () => result(tool('echo'), tool('get_sum'))
    expect(names(await r.catalog.tools(r.conn('everything'), r.user('alice')))).toEqual(['echo'])
    expect(r.client.calls).toHaveLength(2)
    // The old settings' listen is stopped at the next poll; the new list has its own.
    await vi.waitFor(() => expect(r.client.listens[0]?.signal.aborted).toBe(true), { timeout: 8_000, interval: 50 })
    expect(r.client.listens.filter((l) => !l.signal.aborted)).toHaveLength(1)
  }, 15_000)
})
