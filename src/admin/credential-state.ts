/**
 * The credential state `keyway sql` shows in SHOW CONNECTIONS and DESCRIBE CONNECTION: one short
 * phrase per connection saying what is stored for it and what to do next ("signed in (expires in
 * 42m, refreshable)", "not signed in — run keyway authorize crm", "3 users connected", "static
 * secret", "store unavailable (reason)"). The phrase is a pure function of the connection and its
 * stored records; the store is opened lazily, once per command, when the first connection is
 * asked about. Never a token, a secret or any part of one.
 * @module
 */
import type { Connection } from '../config/load.js'
import type { CredentialState } from './sql/render.js'
import type { TokenRecord, TokenRef } from '../store/index.js'
import { formatSpan } from './inventory.js'
import { PRUNE_HINT } from '../credentials/orphans.js'
import type { StoreInspection } from '../credentials/store-access.js'

/** A stored record with its key. */
export interface StoredCredential {
  readonly ref: TokenRef
  readonly record: TokenRecord
}

/** What the store holds, as far as this command could see. */
export type StoreView = { readonly kind: 'records'; readonly records: readonly StoredCredential[] } | { readonly kind: 'unavailable'; readonly reason: string }

/** The phrase for one connection, given every record stored under its name. */
export function describeCredentialState(connection: Connection, view: StoreView, now: number): string {
  const type = connection.auth.type
  if (type === 'bearer_token') return `static secret${view.kind === 'records' ? orphanSuffix(connection, view.records) : ''}`
  if (view.kind === 'unavailable') return `store unavailable (${view.reason})`
  const own = view.records.filter((r) => r.record.method === type)
  const suffix = orphanSuffix(connection, view.records)
  switch (type) {
    case 'oauth_m2m': {
      const r = own.find((c) => c.ref.user === null)?.record
      return `${r ? `token cached (${expiry(r, now)}; fetched again automatically)` : 'no token yet (fetched at the first call)'}${suffix}`
    }
    case 'oauth_u2m_shared': {
      const r = own.find((c) => c.ref.user === null)?.record
      if (!r) return `not signed in — run keyway authorize ${connection.name}${suffix}`
      const refreshable = r.refreshToken !== undefined
      if (!refreshable && r.expiresAt !== undefined && r.expiresAt <= now)
        return `signed in, but the access token ${expiry(r, now)} and cannot be refreshed — run keyway authorize ${connection.name}${suffix}`
      return `signed in (${expiry(r, now)}, ${refreshable ? 'refreshable' : 'NOT refreshable: no refresh token'})${suffix}`
    }
    case 'oauth_u2m_per_user': {
      const users = own.filter((c) => c.ref.user !== null)
      if (users.length === 0) return `no user connected yet (each user consents at first use)${suffix}`
      const stuck = users.filter((c) => c.record.refreshToken === undefined).length
      return `${count(users.length, 'user')} connected${stuck > 0 ? ` (${stuck} without a refresh token)` : ''}${suffix}`
    }
    default: {
      const never: never = type
      return never
    }
  }
}

/** `expires in 42m`, `expired 3m ago`, or `no expiry stated`. */
function expiry(r: TokenRecord, now: number): string {
  if (r.expiresAt === undefined) return 'no expiry stated'
  return r.expiresAt > now ? `expires in ${formatSpan(r.expiresAt - now)}` : `expired ${formatSpan(r.expiresAt - now)} ago`
}

/** Credentials stored under this name by another auth type: orphans left by a change of `auth.type`. */
function orphanSuffix(connection: Connection, records: readonly StoredCredential[]): string {
  const n = records.filter((r) => r.record.method !== connection.auth.type).length
  return n === 0 ? '' : `; ${count(n, 'orphaned credential')} of an earlier auth type (${PRUNE_HINT})`
}

function count(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

/** A credential-state callback over the token store, and its cleanup. */
export interface StoreCredentialState {
  readonly state: CredentialState
  /** Closes the store if it was opened. */
  close(): Promise<void>
}

/**
 * Builds the callback `keyway sql` passes to its renderer. `open` is called at most once, at the
 * first connection asked about; every record is listed once and grouped by connection. A bearer
 * token needs no store, so it reads "static secret" even when the store is out of reach.
 */
export function createStoreCredentialState(opts: {
  readonly connections: ReadonlyMap<string, Connection>
  readonly open: () => Promise<StoreInspection>
  readonly now: number
}): StoreCredentialState {
  let opened: StoreInspection | undefined
  let view: Promise<Map<string, StoredCredential[]> | { reason: string }> | undefined
  const load = async (): Promise<Map<string, StoredCredential[]> | { reason: string }> => {
    opened = await opts.open()
    if (opened.kind === 'unavailable') return { reason: opened.reason }
    const byConnection = new Map<string, StoredCredential[]>()
    if (opened.kind === 'empty') return byConnection
    try {
      for await (const item of opened.store.listTokens()) {
        const list = byConnection.get(item.ref.connection) ?? []
        list.push(item)
        byConnection.set(item.ref.connection, list)
      }
    } catch (e) {
      return { reason: e instanceof Error ? e.message : String(e) }
    }
    return byConnection
  }
  return {
    state: async (name) => {
      const connection = opts.connections.get(name)
      if (!connection) return undefined
      const got = await (view ??= load())
      const storeView: StoreView = got instanceof Map ? { kind: 'records', records: got.get(name) ?? [] } : { kind: 'unavailable', reason: got.reason }
      return describeCredentialState(connection, storeView, opts.now)
    },
    async close() {
      if (view) await view.catch(() => undefined)
      if (opened?.kind === 'open') await opened.store.close()
    },
  }
}
