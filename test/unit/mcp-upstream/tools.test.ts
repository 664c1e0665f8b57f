/**
 * The index of upstream tools (design.md §12) over a real config snapshot and real grants. The
 * catalog is its peer, given as a scripted implementation of its interface (the real catalog is
 * tested on its own and end to end): each test sets what each connection's list is.
 */
import { afterEach, describe, expect, test, vi } from 'vitest'
import { loadConfigText, type ConfigSnapshot, type Connection } from '../../../src/config/load.js'
import { createCaller, type Caller } from '../../../src/identity/caller.js'
import { createMemoryLogger } from '../../../src/log.js'
import type { Catalog, CatalogAnswer } from '../../../src/mcp-upstream/catalog.js'
import { CATALOG_WAIT_MS, createUpstreamTools } from '../../../src/mcp-upstream/tools.js'

const CONFIG = `version: 1
connections:
  alpha:
    host: https://alpha.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
  beta:
    host: https://beta.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
    mcp: { prefix: alpha }
  alpha__taken:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
  mine:
    host: https://mine.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    mcp: { catalog: { credential: caller } }
    auth: { type: oauth_u2m_per_user, tokenEndpoint: https://idp.example.com/t, authorizationEndpoint: https://idp.example.com/a, clientId: c, clientSecret: { env: T } }
grants:
  - { privilege: USE CONNECTION, on: alpha, to: { user: alice@example.com } }
  - { privilege: USE CONNECTION, on: beta, to: { user: alice@example.com } }
  - { privilege: USE CONNECTION, on: mine, to: { user: alice@example.com } }
  - { privilege: USE CONNECTION, on: beta, to: { user: bob@example.com } }
`

interface ScriptedCatalog extends Catalog {
  readonly answers: Map<string, CatalogAnswer | Promise<CatalogAnswer>>
  readonly asked: string[]
}

function scriptedCatalog(): ScriptedCatalog {
  const answers = new Map<string, CatalogAnswer | Promise<CatalogAnswer>>()
  const asked: string[] = []
  return {
    answers,
    asked,
    async tools(connection: Connection, caller: Caller) {
      asked.push(`${connection.name}:${caller.user}`)
      const a = answers.get(connection.mcp?.catalogCredential === 'caller' ? `${connection.name}:${caller.user}` : connection.name)
      return a ?? { ok: false, reason: 'unavailable', problem: 'not scripted' }
    },
    sync: () => undefined,
    onChange: () => () => undefined,
    close: () => undefined,
  }
}

const tool = (name: string): Record<string, unknown> => ({ name, description: `the ${name} tool`, inputSchema: { type: 'object' } })
const ok = (...names: string[]): CatalogAnswer => ({ ok: true, tools: names.map(tool) })

async function setUp(): Promise<{ snapshot: ConfigSnapshot; catalog: ScriptedCatalog; log: ReturnType<typeof createMemoryLogger> }> {
  const r = await loadConfigText(CONFIG, '/cfg/connections.yaml', { env: { T: 'secret-value' } })
  if (!r.ok) throw new Error(r.problems.join('\n'))
  return { snapshot: r.snapshot, catalog: scriptedCatalog(), log: createMemoryLogger() }
}

afterEach(() => {
  vi.useRealTimers()
})

describe('the upstream tool index [mcp:names]', () => {
  test('connections merge in name order after the HTTP tools; a taken name is left out and logged; the index maps back without parsing', async () => {
    const { snapshot, catalog, log } = await setUp()
    catalog.answers.set('alpha', ok('search', 'taken'))
    catalog.answers.set('beta', ok('search', 'other'))
    const tools = createUpstreamTools({ catalog, log })
    const alice = { snapshot, caller: createCaller(snapshot, 'alice@example.com', 'api_key') }
    const listing = await tools.list(alice)
    // alpha__taken is an HTTP tool (it wins); beta's search collides with alpha's (alpha is first).
    expect(listing.tools.map((t) => t.name)).toEqual(['alpha__search', 'alpha__other'])
    expect(listing.tools[0]).toEqual({ ...tool('search'), name: 'alpha__search' })
    expect(await tools.find(alice, 'alpha__other')).toMatchObject({ connection: { name: 'beta' }, upstreamName: 'other' })
    expect(await tools.find(alice, 'alpha__taken')).toBeUndefined()
    const warned = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'upstream tool left out: its exposed name is taken')
    expect(warned.map((l) => `${String(l.connection)}:${String(l.tool)}`).sort()).toEqual(['alpha:taken', 'beta:search'])
  })

  test('a caller sees only the connections it may use; the shared index is the same object until an answer changes', async () => {
    const { snapshot, catalog, log } = await setUp()
    const alphaList = ok('a1')
    catalog.answers.set('alpha', alphaList)
    catalog.answers.set('beta', ok('b1'))
    const tools = createUpstreamTools({ catalog, log })
    const bob = { snapshot, caller: createCaller(snapshot, 'bob@example.com', 'api_key') }
    expect((await tools.list(bob)).tools.map((t) => t.name)).toEqual(['alpha__b1'])
    const before = tools.peek(snapshot, 'alpha__a1')
    expect(before?.connection.name).toBe('alpha')
    // Same answers: the index is reused (peek still answers); a new list for alpha is picked up on the next ask.
    await tools.list(bob)
    expect(tools.peek(snapshot, 'alpha__a1')).toBe(before)
    catalog.answers.set('alpha', ok('a2'))
    await tools.list(bob)
    expect(tools.peek(snapshot, 'alpha__a1')).toBeUndefined()
    expect(tools.peek(snapshot, 'alpha__a2')?.upstreamName).toBe('a2')
  })

  test('caller catalogs are per caller and only for callers with the grant; unavailable ones are reported to those who may use them', async () => {
    const { snapshot, catalog, log } = await setUp()
    catalog.answers.set('alpha', ok('a1'))
    catalog.answers.set('beta', { ok: false, reason: 'unavailable', problem: 'connect ECONNREFUSED' })
    catalog.answers.set('mine:alice@example.com', ok('own'))
    const tools = createUpstreamTools({ catalog, log })
    const alice = { snapshot, caller: createCaller(snapshot, 'alice@example.com', 'api_key') }
    const bob = { snapshot, caller: createCaller(snapshot, 'bob@example.com', 'api_key') }
    const forAlice = await tools.list(alice)
    expect(forAlice.tools.map((t) => t.name)).toEqual(['alpha__a1', 'mine__own'])
    expect(forAlice.sources).toBe(3)
    expect(forAlice.unavailable.map((u) => u.connection.name)).toEqual(['beta'])
    const forBob = await tools.list(bob)
    expect(forBob.tools).toEqual([])
    expect(forBob.sources).toBe(1)
    expect(forBob.unavailable.map((u) => u.connection.name)).toEqual(['beta'])
    expect(catalog.asked).not.toContain('mine:bob@example.com')
    // The per-caller tool is not in the shared index the fast path peeks at.
    expect(tools.peek(snapshot, 'mine__own')).toBeUndefined()
  })

  test(`a catalog that does not answer within ${CATALOG_WAIT_MS} ms is reported unavailable; the others are listed meanwhile`, async () => {
    vi.useFakeTimers()
    const { snapshot, catalog, log } = await setUp()
    catalog.answers.set('alpha', ok('a1'))
    catalog.answers.set('mine:alice@example.com', ok())
    let answerBeta: (a: CatalogAnswer) => void = () => undefined
    catalog.answers.set('beta', new Promise<CatalogAnswer>((resolve) => (answerBeta = resolve)))
    const tools = createUpstreamTools({ catalog, log })
    const alice = { snapshot, caller: createCaller(snapshot, 'alice@example.com', 'api_key') }
    const pending = tools.list(alice)
    await vi.advanceTimersByTimeAsync(CATALOG_WAIT_MS)
    const listing = await pending
    expect(listing.tools.map((t) => t.name)).toEqual(['alpha__a1'])
    expect(listing.unavailable.map((u) => `${u.connection.name}: ${u.problem}`)).toEqual([
      `beta: its tool list did not arrive within ${CATALOG_WAIT_MS / 1000} s`,
    ])
    answerBeta(ok('late'))
    catalog.answers.set('beta', ok('late'))
    expect((await tools.list(alice)).tools.map((t) => t.name)).toEqual(['alpha__a1', 'alpha__late'])
  })
})
