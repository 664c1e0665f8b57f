/**
 * The tools of `protocol: mcp` connections as Keyway serves them (design.md §12): the catalogs
 * of every such connection merged into one index of exposed name → (connection, upstream name),
 * built once per config snapshot and catalog change, never by parsing a name back. Connections
 * whose catalog is fetched with one credential share one index; a connection with
 * `catalog.credential: caller` adds its tools per caller. What a caller sees is the index
 * filtered by its grants. This module decides no call and sends nothing itself: the catalog
 * fetches, the orchestrator (`mcp/call-tool.ts`) calls.
 * @module
 */
import type { ConfigSnapshot, Connection } from '../config/load.js'
import { deadline } from '../deadline.js'
import { decide } from '../grants/decide.js'
import { callerKey, createServicePrincipalCaller, type Caller } from '../identity/caller.js'
import type { Logger } from '../log.js'
import type { Catalog, CatalogAnswer } from './catalog.js'
import { buildToolIndex } from './names.js'

export interface UpstreamEntry {
  readonly connection: Connection
  readonly upstreamName: string
}

/** Who asks, on which config. */
export interface ToolScope {
  readonly caller: Caller
  readonly snapshot: ConfigSnapshot
}

/** A caller's upstream tools, and the connections it may use whose tools could not be had. */
export interface UpstreamListing {
  readonly tools: readonly Record<string, unknown>[]
  /** `protocol: mcp` connections this caller may use. */
  readonly sources: number
  readonly unavailable: readonly { readonly connection: Connection; readonly problem: string }[]
}

export interface UpstreamTools {
  list(scope: ToolScope): Promise<UpstreamListing>
  /** The connection and upstream name behind an exposed name, or undefined when no such tool is served. */
  find(scope: ToolScope, name: string): Promise<UpstreamEntry | undefined>
  /**
   * The same answer without waiting, from the shared index as last built for this snapshot (the
   * fast path); undefined also when it is not built yet or the tool is listed per caller.
   */
  peek(snapshot: ConfigSnapshot, name: string): UpstreamEntry | undefined
  /** Starts building the shared index of a snapshot, so the first call does not wait for the catalogs. */
  warm(snapshot: ConfigSnapshot): void
}

interface Built {
  readonly tools: readonly Record<string, unknown>[]
  readonly index: ReadonlyMap<string, UpstreamEntry>
  readonly unavailable: readonly { readonly connection: Connection; readonly problem: string }[]
  /** What it was built from: per connection, the catalog's list (by identity) or its problem. */
  readonly inputs: readonly unknown[]
  readonly base: Built | undefined
}

/**
 * Longest wait for one catalog while answering: a slow upstream's first fetch goes on behind (its
 * list shows on a later ask), and the caller gets the other connections' tools meanwhile.
 */
export const CATALOG_WAIT_MS = 5_000
const STILL_FETCHING: CatalogAnswer = { ok: false, reason: 'unavailable', problem: `its tool list did not arrive within ${CATALOG_WAIT_MS / 1000} s` }

function withinListWait(answer: Promise<CatalogAnswer>): Promise<CatalogAnswer> {
  // The catalog never rejects (`catalog.ts`): a rejection here is the deadline.
  return deadline(answer, CATALOG_WAIT_MS, 'tool list').catch(() => STILL_FETCHING)
}

/** Bound on per-caller indexes kept (only `catalog.credential: caller` makes them). */
const MAX_CALLER_INDEXES = 10_000

/**
 * Every ask goes to the catalog, which answers from its cache and refreshes behind
 * (`catalog.ts`); the index is rebuilt only when an answer changed, so a refresh, a sync or an
 * upstream coming back shows on the next ask.
 */
export function createUpstreamTools(deps: { readonly catalog: Catalog; readonly log: Logger }): UpstreamTools {
  const shared = new WeakMap<ConfigSnapshot, Built>()
  const perCaller = new WeakMap<ConfigSnapshot, Map<string, Built>>()

  /** The index of `connections` merged after the HTTP tools and `base`, reusing `last` when nothing changed. */
  const build = async (snapshot: ConfigSnapshot, caller: Caller, connections: readonly Connection[], base: Built | undefined, last: Built | undefined) => {
    const answers = await Promise.all(connections.map((connection) => withinListWait(deps.catalog.tools(connection, caller))))
    const inputs = answers.map((a) => (a.ok ? a.tools : a.problem))
    if (last && last.base === base && last.inputs.length === inputs.length && last.inputs.every((v, i) => v === inputs[i])) return last
    const unavailable = [...(base?.unavailable ?? [])]
    const sources: { connection: Connection; tools: readonly Record<string, unknown>[] }[] = []
    for (const [i, answer] of answers.entries()) {
      const connection = connections[i] as Connection
      if (answer.ok) sources.push({ connection, tools: answer.tools })
      else unavailable.push({ connection, problem: answer.problem })
    }
    const reserved = new Set([...snapshot.tools.map((c) => c.name), ...(base?.index.keys() ?? [])])
    const merged = buildToolIndex(reserved, sources)
    for (const c of merged.collisions)
      deps.log.warn('upstream tool left out: its exposed name is taken', {
        connection: c.connection,
        tool: c.upstreamName,
        name: c.exposedName,
        takenBy: c.takenBy,
      })
    const built: Built = {
      tools: [...(base?.tools ?? []), ...merged.tools],
      index: new Map([...(base?.index ?? []), ...merged.index]),
      unavailable,
      inputs,
      base,
    }
    return built
  }

  const sharedIndex = async (snapshot: ConfigSnapshot, caller: Caller): Promise<Built> => {
    const connections = snapshot.mcpConnections.filter((c) => c.mcp?.catalogCredential !== 'caller')
    const built = await build(snapshot, caller, connections, undefined, shared.get(snapshot))
    shared.set(snapshot, built)
    return built
  }

  const indexFor = async (scope: ToolScope): Promise<Built> => {
    const { snapshot, caller } = scope
    const base = await sharedIndex(snapshot, caller)
    const own = snapshot.mcpConnections.filter((c) => c.mcp?.catalogCredential === 'caller' && allowed(scope, c))
    if (own.length === 0) return base
    let map = perCaller.get(snapshot)
    if (!map) perCaller.set(snapshot, (map = new Map<string, Built>()))
    const key = callerKey(caller)
    const built = await build(snapshot, caller, own, base, map.get(key))
    if (!map.has(key) && map.size >= MAX_CALLER_INDEXES) map.clear()
    map.set(key, built)
    return built
  }

  return {
    async list(scope) {
      const built = await indexFor(scope)
      const usable = new Set(scope.snapshot.mcpConnections.filter((c) => allowed(scope, c)))
      const unavailable = built.unavailable.filter((u) => usable.has(u.connection))
      const tools = built.tools.filter((t) => {
        const e = built.index.get(t.name as string)
        return e !== undefined && usable.has(e.connection)
      })
      return { tools, sources: usable.size, unavailable }
    },
    async find(scope, name) {
      return (await indexFor(scope)).index.get(name)
    },
    peek(snapshot, name) {
      return shared.get(snapshot)?.index.get(name)
    },
    warm(snapshot) {
      // Shared catalogs are fetched with the connection's own credential, whoever asks: no caller is needed.
      if (snapshot.mcpConnections.length > 0) sharedIndex(snapshot, createServicePrincipalCaller(snapshot, 'keyway', 'stdio')).catch(() => undefined)
    },
  }
}

function allowed(scope: ToolScope, connection: Connection): boolean {
  return decide(scope.caller, connection, scope.snapshot.grants).effect === 'allow'
}
