/**
 * What `keyway credentials` shows, for every auth method: one row per stored OAuth token (m2m,
 * shared, per-user) with its connection, user (or shared), method, expiry, whether it can be
 * refreshed, when it was last refreshed and last used, whether it is orphaned (its connection
 * removed, renamed or switched to another auth type) and its warnings; plus one row per
 * `bearer_token` connection, whose credential lives in the config as a secret reference and has
 * no stored record. Last use comes from the audit log (an index built by `last-use.ts`),
 * never from a store write per call. Rows are built by pure functions and never carry a token, a
 * refresh token, a secret value or any part of one: a bearer row names the secret's reference.
 * @module
 */
import type { LastUseIndex } from './last-use.js'
import type { ConfigSnapshot, Connection } from '../config/load.js'
import type { AuthType, ConfigFile, SecretRef } from '../config/schema.js'
import type { TokenRecord, TokenRef, TokenStore } from '../store/index.js'
import { orphanReason, storeFilter, type CredentialFilter, type OrphanReason } from '../credentials/orphans.js'
import { isUsable } from '../credentials/refresh.js'

export type { CredentialFilter } from '../credentials/orphans.js'

/** One credential, as shown to an administrator. Never a secret. */
export interface CredentialRow {
  readonly connection: string
  /** `null`: the connection's one shared credential (bearer token, m2m, shared u2m). */
  readonly user: string | null
  readonly method: AuthType
  /** `store`, or for a bearer token `config secret { env: NAME }` (the reference, never the value). */
  readonly source: string
  readonly expiresAt: number | undefined
  readonly refreshable: boolean
  /** When the stored token was first obtained; undefined for a config secret. */
  readonly obtainedAt: number | undefined
  readonly lastRefreshAt: number | undefined
  /** Last call that sent this credential upstream, from the audit log; undefined when none is recorded. */
  readonly lastUsedAt: number | undefined
  /** Who signed in at the provider (ID token `sub`), when known. */
  readonly subject: string | undefined
  readonly scope: string | undefined
  /** Set when no connection of the config will use this credential again. */
  readonly orphaned: OrphanReason | undefined
  readonly warnings: readonly string[]
}

/** The label of a secret reference as the config file writes it: `{ env: NAME }` or `{ file: PATH }`. */
export function secretRefLabel(ref: SecretRef): string {
  return 'env' in ref ? `{ env: ${ref.env} }` : `{ file: ${ref.file} }`
}

/** connection → the label of its bearer token's reference, from the file's own data (the snapshot holds only resolved secrets). */
export function bearerSecretRefs(file: ConfigFile): Map<string, string> {
  const refs = new Map<string, string>()
  for (const [name, c] of Object.entries(file.connections)) if (c.auth.type === 'bearer_token') refs.set(name, secretRefLabel(c.auth.token))
  return refs
}

/** The row for one stored record: its own warnings plus what the current config says about it. */
export function credentialRow(ref: TokenRef, record: TokenRecord, snapshot: ConfigSnapshot, now: number, lastUsedAt?: number): CredentialRow {
  const orphaned = orphanReason(ref.connection, record.method, snapshot)
  const warnings = [...(record.warnings ?? [])]
  const refreshable = record.method === 'oauth_m2m' || record.refreshToken !== undefined
  // An orphan is never called again, so "renewed at the next call" would be untrue.
  if (!orphaned && !isUsable(record, now))
    warnings.push(refreshable ? 'access token expired; it is renewed at the next call' : 'access token expired and cannot be renewed: sign in again')
  return {
    connection: ref.connection,
    user: ref.user,
    method: record.method,
    source: 'store',
    expiresAt: record.expiresAt,
    refreshable,
    obtainedAt: record.obtainedAt,
    lastRefreshAt: record.lastRefreshAt,
    lastUsedAt,
    subject: record.subject,
    scope: record.scope,
    orphaned,
    warnings,
  }
}

/** The row for a `bearer_token` connection: a static secret from the config, shared, never refreshed. */
export function bearerRow(connection: Connection, secretRef: string | undefined, lastUsedAt?: number): CredentialRow {
  return {
    connection: connection.name,
    user: null,
    method: 'bearer_token',
    source: secretRef === undefined ? 'config secret' : `config secret ${secretRef}`,
    expiresAt: undefined,
    refreshable: false,
    obtainedAt: undefined,
    lastRefreshAt: undefined,
    lastUsedAt,
    subject: undefined,
    scope: undefined,
    orphaned: undefined,
    warnings: [],
  }
}

export interface InventoryInput {
  readonly store: TokenStore
  readonly snapshot: ConfigSnapshot
  readonly now: number
  /** Last use per credential, from the audit log; without it no row has a last use. */
  readonly lastUse?: LastUseIndex
  /** connection → its bearer token's reference label (see {@link bearerSecretRefs}). */
  readonly secretRefs?: ReadonlyMap<string, string>
}

/**
 * Every credential matching the filter, sorted by connection then user (shared first): the
 * stored tokens, orphans included, and the `bearer_token` connections of the config (shared,
 * so left out when the filter names a user).
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function listCredentials(input: InventoryInput, filter: CredentialFilter = {}): Promise<CredentialRow[]> {
  const { store, snapshot, now, lastUse } = input
  const rows: CredentialRow[] = []
  for await (const { ref, record } of store.listTokens(storeFilter(filter))) {
    rows.push(credentialRow(ref, record, snapshot, now, lastUse?.lastUse(ref.connection, ref.user, record.method)))
  }
  if (filter.user === undefined) {
    for (const c of snapshot.connections.values()) {
      if (c.auth.type !== 'bearer_token' || (filter.connection !== undefined && c.name !== filter.connection)) continue
      rows.push(bearerRow(c, input.secretRefs?.get(c.name), lastUse?.lastUse(c.name, null, 'bearer_token')))
    }
  }
  return rows.sort((a, b) => compare(a.connection, b.connection) || compareUsers(a.user, b.user) || compare(a.method, b.method))
}

/**
 * A span of time for people: `45s`, `42m`, `5h`, `3d` (rounded; minutes up to two hours, hours
 * up to two days).
 */
export function formatSpan(ms: number): string {
  const abs = Math.abs(ms)
  if (abs < 60_000) return `${Math.round(abs / 1000)}s`
  if (abs < 7_200_000) return `${Math.round(abs / 60_000)}m`
  if (abs < 172_800_000) return `${Math.round(abs / 3_600_000)}h`
  return `${Math.round(abs / 86_400_000)}d`
}

/** `in 42m` or `3h ago`. */
export function formatRelative(at: number, now: number): string {
  return at - now >= 0 ? `in ${formatSpan(at - now)}` : `${formatSpan(at - now)} ago`
}

function compareUsers(a: string | null, b: string | null): number {
  if (a === b) return 0
  if (a === null) return -1
  if (b === null) return 1
  return compare(a, b)
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
