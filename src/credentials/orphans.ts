/**
 * Orphaned credentials: tokens in the store that no connection of the current config will ever
 * use, because their connection was removed or renamed (a name is a connection's identity,
 * design.md §2) or now uses another auth type. This module decides what is orphaned (a pure
 * function of the record and the config), words the warnings `keyway validate` and a reload of
 * `keyway serve` print, counts what is stored under given connections, and prunes orphans from
 * the store (`keyway credentials --prune`). Pruning deletes locally only: an orphan's provider
 * settings are gone or may not be the ones it was issued under, so it is never sent to a
 * provider. Nothing here returns or prints a token.
 * @module
 */
import type { AuditLog } from '../audit/audit-log.js'
import type { ConfigSnapshot } from '../config/load.js'
import type { AuthType } from '../config/schema.js'
import type { TokenMethod, TokenRecord, TokenRef, TokenStore } from '../store/index.js'

/** Why a stored credential is orphaned. */
export type OrphanReason = 'connection-removed' | 'method-changed'

/** A stored credential and why it is orphaned. */
export interface StoredOrphan {
  readonly ref: TokenRef
  readonly record: TokenRecord
  readonly reason: OrphanReason
}

/** Narrows `keyway credentials` and `--prune` to one connection and/or one user. */
export interface CredentialFilter {
  readonly connection?: string
  readonly user?: string
}

/**
 * Whether a credential stored under `connection`, obtained by `method`, is orphaned by the
 * config: undefined while the connection exists with that auth type.
 */
export function orphanReason(connection: string, method: TokenMethod, snapshot: ConfigSnapshot): OrphanReason | undefined {
  const c = snapshot.connections.get(connection)
  if (!c) return 'connection-removed'
  return c.auth.type === method ? undefined : 'method-changed'
}

/** What the config now says about an orphan, in a few words (`no longer in the config`, `now uses bearer_token`). */
export function describeOrphan(connection: string, reason: OrphanReason, snapshot: ConfigSnapshot): string {
  switch (reason) {
    case 'connection-removed':
      return 'connection no longer in the config (removed or renamed)'
    case 'method-changed':
      return `connection now uses ${snapshot.connections.get(connection)?.auth.type ?? 'another auth type'}`
    default: {
      const never: never = reason
      return never
    }
  }
}

/** The store filter for a credential filter (the store's own shape, without absent keys). */
export function storeFilter(filter: CredentialFilter): { connection?: string; user?: string } {
  return {
    ...(filter.connection === undefined ? {} : { connection: filter.connection }),
    ...(filter.user === undefined ? {} : { user: filter.user }),
  }
}

/**
 * Every orphaned credential matching the filter.
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function findOrphans(store: TokenStore, snapshot: ConfigSnapshot, filter: CredentialFilter = {}): Promise<StoredOrphan[]> {
  const found: StoredOrphan[] = []
  for await (const { ref, record } of store.listTokens(storeFilter(filter))) {
    const reason = orphanReason(ref.connection, record.method, snapshot)
    if (reason) found.push({ ref, record, reason })
  }
  return found.sort((a, b) => compare(a.ref.connection, b.ref.connection) || compare(a.ref.user ?? '', b.ref.user ?? ''))
}

/** Orphans of one connection, for one warning line. */
export interface OrphanGroup {
  readonly connection: string
  readonly reason: OrphanReason
  /** What the connection uses now (`method-changed` only). */
  readonly now: AuthType | undefined
  readonly count: number
  /** The methods the orphaned tokens were obtained by, sorted. */
  readonly methods: readonly TokenMethod[]
}

/** Groups orphans by connection (sorted by name). */
export function groupOrphans(orphans: readonly Pick<StoredOrphan, 'ref' | 'reason' | 'record'>[], snapshot: ConfigSnapshot): OrphanGroup[] {
  const groups = new Map<string, { reason: OrphanReason; count: number; methods: Set<TokenMethod> }>()
  for (const o of orphans) {
    const g = groups.get(o.ref.connection) ?? { reason: o.reason, count: 0, methods: new Set<TokenMethod>() }
    g.count++
    g.methods.add(o.record.method)
    groups.set(o.ref.connection, g)
  }
  return [...groups.entries()]
    .sort(([a], [b]) => compare(a, b))
    .map(([connection, g]) => ({
      connection,
      reason: g.reason,
      now: g.reason === 'method-changed' ? snapshot.connections.get(connection)?.auth.type : undefined,
      count: g.count,
      methods: [...g.methods].sort(),
    }))
}

/** What to do about orphans, said the same way everywhere. */
export const PRUNE_HINT = 'keyway credentials lists them, keyway credentials --prune deletes them'

/** One warning line per connection holding orphans (`keyway validate`). */
export function orphanWarnings(groups: readonly OrphanGroup[]): string[] {
  return groups.map((g) => {
    const held = `${plural(g.count, `${g.methods.join('/')} credential`)} ${g.count === 1 ? 'is' : 'are'} still stored under it`
    const why = g.reason === 'connection-removed' ? 'is no longer in the config (removed or renamed)' : `now uses ${g.now ?? 'another auth type'}`
    return `connection "${g.connection}" ${why} but ${held}; ${g.count === 1 ? 'it is' : 'they are'} never used again: ${PRUNE_HINT}`
  })
}

/**
 * How many credentials are stored under each of `connections` (reload of `keyway serve`: the
 * connections a reload removed). Connections with none are left out.
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function countStoredCredentials(store: TokenStore, connections: readonly string[]): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  for (const connection of connections) {
    let n = 0
    for await (const _ of store.listTokens({ connection })) n++
    if (n > 0) counts.set(connection, n)
  }
  return counts
}

/** The reload warning for removed connections that hold credentials; undefined when none do. */
export function removedConnectionsWarning(counts: ReadonlyMap<string, number>): string | undefined {
  if (counts.size === 0) return undefined
  const entries = [...counts.entries()].sort(([a], [b]) => compare(a, b))
  const total = entries.reduce((sum, [, n]) => sum + n, 0)
  const held = `${total === 1 ? 'it is' : 'they are'} never used again: ${PRUNE_HINT}`
  const [only] = entries
  if (entries.length === 1 && only)
    return `connection "${only[0]}" was removed from the config (or renamed) but still holds ${plural(only[1], 'stored credential')}; ${held}`
  const list = entries.map(([c, n]) => `"${c}" (${plural(n, 'stored credential')})`).join(', ')
  return `connections ${list} were removed from the config (or renamed) but still hold credentials; ${held}`
}

/** What happened to one orphan when pruning. */
export interface PruneResult {
  readonly ref: TokenRef
  readonly method: TokenMethod
  readonly reason: OrphanReason
  /** `deleted`; `changed`: rewritten since it was listed (a server still using it?), left in place; `gone`: already deleted. */
  readonly outcome: 'deleted' | 'changed' | 'gone'
}

/**
 * Deletes the orphaned credentials matching the filter from the store, each only if it is still
 * the record that was listed (compare-and-delete), and audits each deletion as
 * `credential.revoked` with the reason. Never contacts a provider.
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function pruneOrphans(
  deps: { readonly store: TokenStore; readonly audit: AuditLog },
  snapshot: ConfigSnapshot,
  filter: CredentialFilter = {},
): Promise<PruneResult[]> {
  const results: PruneResult[] = []
  for (const { ref, record, reason } of await findOrphans(deps.store, snapshot, filter)) {
    let outcome: PruneResult['outcome']
    if (await deps.store.replaceToken(ref, record, undefined)) outcome = 'deleted'
    else outcome = (await deps.store.getToken(ref)) === undefined ? 'gone' : 'changed'
    if (outcome === 'deleted') {
      deps.audit.record({
        type: 'credential.revoked',
        connection: ref.connection,
        ...(ref.user === null ? {} : { user: ref.user }),
        authMethod: record.method,
        reason: `pruned as orphaned (${reason}); not revoked at the provider`,
      })
    }
    results.push({ ref, method: record.method, reason, outcome })
  }
  return results
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
