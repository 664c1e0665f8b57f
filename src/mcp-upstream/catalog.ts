/**
 * The tool catalog of `protocol: mcp` connections (design.md §12): each upstream's tool list,
 * fetched with the catalog credential (the shared one, the owner's per-user token, or each
 * caller's own), include/exclude applied, cached for `refreshSeconds` and refreshed in the
 * background, refetched on `keyway mcp sync` (a generation in the token store, polled) and on the
 * upstream's `notifications/tools/list_changed`. A failing upstream keeps its last good list for a
 * while and trips its circuit breaker. It never names exposed tools (`names.ts`), never checks
 * grants and never calls a tool: listing only. No secret reaches a log line or a problem text.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import type { ConfigSnapshot, Connection } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import type { CredentialProvider } from '../credentials/credential.js'
import { isAppError } from '../errors.js'
import { isRecord } from '../is-record.js'
import { callerKey, createCaller, createServicePrincipalCaller, type Caller } from '../identity/caller.js'
import { errorMessage, type Logger } from '../log.js'
import type { StateRecord, TokenStore } from '../store/token-store.js'
import { withCredential } from '../mcp/credential-step.js'
import type { Breakers } from './breaker.js'
import { toolFilter } from './names.js'

/** The part of the upstream MCP client (`mcp-upstream/client.ts`) the catalog uses. */
export interface CatalogClient {
  listTools(
    target: { connection: Connection; authorization: string },
    opts?: { signals?: readonly AbortSignal[] },
  ): Promise<{ kind: 'result'; result: Record<string, unknown> } | { kind: 'error'; code: number; message: string } | { kind: 'http'; status: number }>
  /** Whether the upstream said (at initialize) that it sends `tools/list_changed`; undefined: not known yet. */
  declaresListChanged(connection: Connection): boolean | undefined
  /** Resolves when the notification stream ends; calls `onToolsChanged` per notification. */
  listen(target: { connection: Connection; authorization: string }, onToolsChanged: () => void, signal: AbortSignal): Promise<void>
}

export type CatalogAnswer =
  /** The upstream's tool definitions as received, include/exclude applied. */
  | { readonly ok: true; readonly tools: readonly Record<string, unknown>[] }
  /**
   * Why there is no list, for logs and errors (never a secret). `consent-required`: the catalog
   * credential is a person's who has not connected their account yet (for `caller`, this caller).
   */
  | { readonly ok: false; readonly reason: 'consent-required' | 'unavailable'; readonly problem: string }

export interface Catalog {
  /** The connection's tools for this caller: cached; `caller` catalogs per (user, connection), others one per connection. */
  tools(connection: Connection, caller: Caller): Promise<CatalogAnswer>
  /** Refetch now (keyway mcp sync, list_changed): drops cached lists of that connection, every caller included. */
  sync(connectionName: string): void
  /** Called (debounced) when any catalog's content changed, so the server can send tools/list_changed. */
  onChange(listener: () => void): () => void
  close(): void
}

export interface CatalogDeps {
  readonly client: CatalogClient
  readonly credentials: CredentialProvider
  readonly breakers: Breakers
  readonly store: TokenStore
  readonly log: Logger
  readonly now: () => number
  readonly live: () => ConfigSnapshot
}

/** The store state a `keyway mcp sync` writes; its `id` changes on every sync. */
export function syncStateName(connectionName: string): string {
  return `mcp-sync:${connectionName}`
}

/** How long a sync generation is kept: far beyond the poll interval; an expired one is never taken for a new sync. */
const SYNC_STATE_TTL_MS = 7 * 24 * 3600 * 1000

/**
 * Bumps the sync generation of a connection (`keyway mcp sync`): every replica's catalog sees a
 * new id within {@link SYNC_POLL_MS} and refetches. A random id rather than a counter, so that an
 * expired state followed by a new one is never mistaken for the one already seen.
 */
export async function requestSync(store: TokenStore, connectionName: string, now: () => number = Date.now): Promise<void> {
  await store.putState(syncStateName(connectionName), { id: randomBytes(12).toString('base64url'), at: now() }, SYNC_STATE_TTL_MS)
}

/** How often every replica looks for `keyway mcp sync` generations; the CLI promises this. */
export const SYNC_POLL_MS = 5_000
/** A list that cannot be refreshed is still served up to this many `refreshSeconds` after it was fetched. */
const STALE_FACTOR = 3
/** Per-caller lists kept; the oldest used is dropped beyond (each holds one upstream's definitions). */
const MAX_CALLER_ENTRIES = 10_000
/** Notifications of one upstream arriving in a burst become one refetch. */
const LIST_CHANGED_DEBOUNCE_MS = 500
/** Changes of several catalogs close together become one `onChange` call. */
const CHANGE_DEBOUNCE_MS = 100
/** Back-off of a `listen` that keeps failing or ending at once: from 1 s, doubling, up to 30 s. */
const LISTEN_BACKOFF_MIN_MS = 1_000
const LISTEN_BACKOFF_MAX_MS = 30_000

interface Entry {
  readonly connectionName: string
  readonly fingerprint: string
  /** `callerKey` for `caller` catalogs, undefined for the one shared list. */
  readonly callerKey: string | undefined
  list: readonly Record<string, unknown>[] | undefined
  fetchedAt: number
  /** Set by `sync`: the next answer waits for a fetch. */
  expired: boolean
  /** What the last answer showed, to tell a change; undefined before the first. */
  signature: string | undefined
  inflight: Promise<CatalogAnswer> | undefined
  /** A failure was logged and no fetch has succeeded since (one warning per failure run). */
  failing: boolean
  listening: AbortController | undefined
  debounce: ReturnType<typeof setTimeout> | undefined
}

export function createCatalog(deps: CatalogDeps): Catalog {
  const { client, credentials, breakers, store, log, now, live } = deps
  const shared = new Map<string, Entry>()
  const perCaller = new Map<string, Entry>()
  const listeners = new Set<() => void>()
  const closing = new AbortController()
  const seenSync = new Map<string, string | undefined>()
  let notifyTimer: ReturnType<typeof setTimeout> | undefined
  let pollTimer: ReturnType<typeof setInterval> | undefined
  let polling = false
  const startedAt = now()

  const notify = (): void => {
    if (notifyTimer !== undefined || closing.signal.aborted) return
    notifyTimer = setTimeout(() => {
      notifyTimer = undefined
      for (const l of [...listeners]) l()
    }, CHANGE_DEBOUNCE_MS)
    notifyTimer.unref()
  }

  const entryFor = (connection: Connection, caller: Caller): Entry => {
    const settings = connection.mcp!
    const fingerprint = fingerprintOf(connection)
    const who = settings.catalogCredential === 'caller' ? callerKey(caller) : undefined
    const map = who === undefined ? shared : perCaller
    const key = `${connection.name}\u0000${fingerprint}\u0000${who ?? ''}`
    let entry = map.get(key)
    if (entry) {
      // Most recently used last, so the bound drops the one unused longest.
      if (who !== undefined) {
        map.delete(key)
        map.set(key, entry)
      }
      return entry
    }
    entry = {
      connectionName: connection.name,
      fingerprint,
      callerKey: who,
      list: undefined,
      fetchedAt: -Infinity,
      expired: false,
      signature: undefined,
      inflight: undefined,
      failing: false,
      listening: undefined,
      debounce: undefined,
    }
    map.set(key, entry)
    if (who !== undefined && perCaller.size > MAX_CALLER_ENTRIES) {
      const oldest = perCaller.keys().next().value
      if (oldest !== undefined) perCaller.delete(oldest)
    }
    return entry
  }

  /** Whose credential lists this connection's tools for `caller`: the caller's own, or the owner's (the shared one unless per-user). */
  const catalogCaller = (connection: Connection, caller: Caller): Caller =>
    connection.mcp!.catalogCredential === 'caller' ? caller : ownerCaller(live(), connection.owner)

  const consentProblem = (connection: Connection, caller: Caller): CatalogAnswer => {
    if (connection.mcp!.catalogCredential === 'caller')
      return { ok: false, reason: 'consent-required', problem: `CONSENT_REQUIRED: ${caller.user} has not connected their account to "${connection.name}" yet` }
    const owner = 'user' in connection.owner ? connection.owner.user : 'the owner'
    return { ok: false, reason: 'consent-required', problem: `the owner ${owner} has not connected their account to "${connection.name}" yet` }
  }

  /** One fetch of the list: breaker, credential, tools/list, one forced refresh on a 401. Never throws. */
  const fetchList = async (connection: Connection, caller: Caller): Promise<CatalogAnswer> => {
    const unavailable = (problem: string): CatalogAnswer => ({ ok: false, reason: 'unavailable', problem })
    try {
      breakers.check(connection.name)
    } catch (e) {
      return unavailable(errorMessage(e))
    }
    // Only a failure of the upstream itself counts against its breaker, not one of the credential.
    let listing = false
    try {
      // The credential step of tool calls, without grants or in-flight limits: one forced refresh on a 401 (design.md §8).
      const sent = await withCredential(
        { credentials, caller: catalogCaller(connection, caller), connection },
        (authorization) => {
          listing = true
          return client.listTools({ connection, authorization }, { signals: [closing.signal, AbortSignal.timeout(connection.timeoutMs)] })
        },
        (a) => a.kind === 'http' && a.status === 401,
      )
      if (sent.kind !== 'sent') return consentProblem(connection, caller)
      const answer = sent.value
      if (answer.kind === 'http') {
        if (answer.status >= 500) breakers.failed(connection.name)
        else breakers.succeeded(connection.name)
        return unavailable(`the upstream answered tools/list with HTTP ${answer.status}`)
      }
      breakers.succeeded(connection.name)
      if (answer.kind === 'error') return unavailable(`the upstream answered tools/list with error ${answer.code}`)
      const tools = answer.result.tools
      if (!Array.isArray(tools)) return unavailable('the upstream answered tools/list without a tools array')
      const keep = toolFilter(connection.mcp!.include, connection.mcp!.exclude)
      return { ok: true, tools: tools.filter((t): t is Record<string, unknown> => isRecord(t) && typeof t.name === 'string' && keep(t.name)) }
    } catch (e) {
      if (listing) breakers.failed(connection.name)
      return unavailable(isAppError(e) ? `${e.code}: ${e.message}` : `${listing ? 'tools/list' : 'the catalog credential'} failed: ${errorMessage(e)}`)
    }
  }

  /** Fetches into `entry` (one fetch in flight per entry; concurrent askers share it) and answers what is to be shown. */
  const refresh = (entry: Entry, connection: Connection, caller: Caller): Promise<CatalogAnswer> => {
    if (entry.inflight) return entry.inflight
    entry.inflight = fetchList(connection, caller)
      .then((answer) => settle(entry, connection, caller, answer))
      .finally(() => {
        entry.inflight = undefined
      })
    return entry.inflight
  }

  const settle = (entry: Entry, connection: Connection, caller: Caller, answer: CatalogAnswer): CatalogAnswer => {
    let shown: CatalogAnswer = answer
    if (answer.ok) {
      entry.list = answer.tools
      entry.fetchedAt = now()
      entry.expired = false
      entry.failing = false
      if (entry.callerKey === undefined) startListening(entry, connection, caller)
    } else {
      if (answer.reason === 'unavailable' && !entry.failing) {
        entry.failing = true
        log.warn('upstream MCP tool list unavailable', { connection: connection.name, problem: answer.problem, keptLastList: entry.list !== undefined })
      }
      if (entry.list !== undefined && now() - entry.fetchedAt < STALE_FACTOR * connection.mcp!.refreshSeconds * 1000 && answer.reason === 'unavailable')
        shown = { ok: true, tools: entry.list }
      else entry.list = undefined
    }
    const signature = shown.ok ? JSON.stringify(shown.tools) : 'unavailable'
    if (entry.signature !== undefined && entry.signature !== signature) notify()
    entry.signature = signature
    return shown
  }

  const isLive = (entry: Entry): Connection | undefined => {
    const c = live().connections.get(entry.connectionName)
    return c && c.protocol === 'mcp' && c.isMcpConnection && fingerprintOf(c) === entry.fingerprint ? c : undefined
  }

  /** Keeps one `listen` open per shared catalog whose upstream declares `tools.listChanged`. */
  const startListening = (entry: Entry, connection: Connection, caller: Caller): void => {
    if (entry.listening || closing.signal.aborted || client.declaresListChanged(connection) !== true) return
    const stop = new AbortController()
    entry.listening = stop
    const signal = AbortSignal.any([stop.signal, closing.signal])
    const onToolsChanged = (): void => {
      if (entry.debounce !== undefined) return
      entry.debounce = setTimeout(() => {
        entry.debounce = undefined
        const current = isLive(entry)
        if (current) void refresh(entry, current, caller)
      }, LIST_CHANGED_DEBOUNCE_MS)
      entry.debounce.unref()
    }
    const loop = async (): Promise<void> => {
      let backoff = LISTEN_BACKOFF_MIN_MS
      while (!signal.aborted) {
        const current = isLive(entry)
        if (!current) break
        const started = now()
        try {
          const credential = await credentials.resolve(current, catalogCaller(current, caller))
          if (credential.kind !== 'ready') throw new Error('no catalog credential')
          await client.listen({ connection: current, authorization: credential.authorization }, onToolsChanged, signal)
        } catch (e) {
          if (!signal.aborted) log.debug('upstream MCP list_changed stream failed', { connection: entry.connectionName, problem: errorMessage(e) })
        }
        if (signal.aborted) break
        // A stream that fails or ends at once is reopened after a growing pause; a long one at once.
        if (now() - started >= LISTEN_BACKOFF_MAX_MS) backoff = LISTEN_BACKOFF_MIN_MS
        else {
          await delay(backoff, undefined, { signal, ref: false }).catch(() => undefined)
          backoff = Math.min(backoff * 2, LISTEN_BACKOFF_MAX_MS)
        }
      }
      if (entry.listening === stop) entry.listening = undefined
    }
    void loop()
  }

  const drop = (map: Map<string, Entry>, key: string, entry: Entry): void => {
    entry.listening?.abort()
    if (entry.debounce !== undefined) clearTimeout(entry.debounce)
    map.delete(key)
  }

  /** Every replica: `keyway mcp sync` generations, and lists of connections that left or changed. */
  const poll = async (): Promise<void> => {
    const mcp = live().mcpConnections
    if (mcp.length === 0) {
      stopPolling()
      for (const map of [shared, perCaller]) for (const [key, entry] of map) drop(map, key, entry)
      return
    }
    for (const map of [shared, perCaller]) for (const [key, entry] of map) if (!isLive(entry)) drop(map, key, entry)
    for (const c of mcp) {
      let state: StateRecord | undefined
      try {
        state = await store.getState(syncStateName(c.name))
      } catch (e) {
        log.debug('cannot read mcp sync state', { connection: c.name, problem: errorMessage(e) })
        continue
      }
      const id = typeof state?.id === 'string' ? state.id : undefined
      const at = typeof state?.at === 'number' ? state.at : 0
      const known = seenSync.has(c.name)
      const previous = seenSync.get(c.name)
      seenSync.set(c.name, id)
      // A generation first seen here counts when it was made after this catalog started.
      if (id !== undefined && id !== previous && (known || at >= startedAt)) catalog.sync(c.name)
    }
  }

  const startPolling = (): void => {
    if (pollTimer !== undefined || closing.signal.aborted) return
    pollTimer = setInterval(() => {
      if (polling) return
      polling = true
      void poll().finally(() => {
        polling = false
      })
    }, SYNC_POLL_MS)
    pollTimer.unref()
    void poll()
  }
  const stopPolling = (): void => {
    if (pollTimer !== undefined) clearInterval(pollTimer)
    pollTimer = undefined
  }

  const catalog: Catalog = {
    async tools(connection, caller) {
      const settings = connection.mcp
      if (!settings) return { ok: false, reason: 'unavailable', problem: `connection "${connection.name}" is not protocol: mcp` }
      if (closing.signal.aborted) return { ok: false, reason: 'unavailable', problem: 'the catalog is closed' }
      startPolling()
      const entry = entryFor(connection, caller)
      const age = now() - entry.fetchedAt
      const freshMs = settings.refreshSeconds * 1000
      if (entry.list !== undefined && !entry.expired && age < STALE_FACTOR * freshMs) {
        // Stale but within bounds: answer now, refresh behind (its outcome is settled in `refresh`).
        if (age >= freshMs) void refresh(entry, connection, caller)
        return { ok: true, tools: entry.list }
      }
      return refresh(entry, connection, caller)
    },
    sync(connectionName) {
      for (const map of [shared, perCaller])
        for (const entry of map.values()) {
          if (entry.connectionName !== connectionName) continue
          entry.expired = true
          const c = entry.callerKey === undefined ? isLive(entry) : undefined
          // A shared list is refetched at once, so its change reaches listening clients; per-caller ones on their next ask.
          const owner = c && ownerCaller(live(), c.owner)
          if (c && owner) void refresh(entry, c, owner)
        }
    },
    onChange(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    close() {
      closing.abort()
      stopPolling()
      if (notifyTimer !== undefined) clearTimeout(notifyTimer)
      for (const map of [shared, perCaller]) for (const [key, entry] of map) drop(map, key, entry)
      listeners.clear()
    },
  }
  if (live().mcpConnections.length > 0) startPolling()
  return catalog
}

/**
 * Who fetches a shared or owner catalog. For `oauth_u2m_per_user` the owner is a user (load.ts
 * checks it) whose own token lists the tools; the other methods give every caller the same
 * credential, so any caller standing for the owner will do (a group owner is named after it).
 */
function ownerCaller(snapshot: ConfigSnapshot, owner: Principal): Caller {
  if ('user' in owner) return createCaller(snapshot, owner.user, 'stdio')
  if ('servicePrincipal' in owner) return createServicePrincipalCaller(snapshot, owner.servicePrincipal, 'stdio')
  return createServicePrincipalCaller(snapshot, `group ${owner.group}`, 'stdio')
}

/** What of a connection a cached list depends on: a reload that changes none of it keeps the list. */
function fingerprintOf(c: Connection): string {
  const auth = c.auth.type === 'bearer_token' ? [c.auth.type] : [c.auth.type, c.auth.clientId, c.auth.issuer, c.auth.tokenEndpoint, c.auth.scopes]
  return JSON.stringify([c.origin, c.basePath, auth, c.mcp, 'user' in c.owner ? c.owner.user : c.owner])
}
