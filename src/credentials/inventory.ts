/**
 * What `keyway credentials` shows about stored credentials: one row per stored token with its
 * connection, user (or shared), method, expiry, whether it can be refreshed, when it was last
 * refreshed, and warnings (no refresh token, expired, connection removed or changed). Rows are
 * built from records by a pure function and never carry a token, a refresh token or any part of
 * one. Made to grow: later columns (last use, orphan pruning) are more fields on `CredentialRow`.
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import type { TokenMethod, TokenRecord, TokenRef, TokenStore } from '../store/index.js'
import { isUsable } from './refresh.js'

/** One stored credential, as shown to an administrator. Never a secret. */
export interface CredentialRow {
  readonly connection: string
  /** `null`: the connection's one shared token (m2m, shared u2m). */
  readonly user: string | null
  readonly method: TokenMethod
  readonly expiresAt: number | undefined
  readonly refreshable: boolean
  readonly obtainedAt: number
  readonly lastRefreshAt: number | undefined
  readonly lastUsedAt: number | undefined
  /** Who signed in at the provider (ID token `sub`), when known. */
  readonly subject: string | undefined
  readonly scope: string | undefined
  readonly warnings: readonly string[]
}

export interface CredentialFilter {
  readonly connection?: string
  readonly user?: string
}

/** The row for one record: its own warnings plus what the current config says about it. */
export function credentialRow(ref: TokenRef, record: TokenRecord, snapshot: ConfigSnapshot, now: number): CredentialRow {
  const warnings = [...(record.warnings ?? [])]
  const connection = snapshot.connections.get(ref.connection)
  if (!connection) warnings.push('connection is no longer in the config: this token is unused (keyway credentials revoke removes it)')
  else if (connection.auth.type !== record.method) warnings.push(`connection now uses ${connection.auth.type}: this token is unused`)
  const refreshable = record.method === 'oauth_m2m' || record.refreshToken !== undefined
  if (!isUsable(record, now)) warnings.push(refreshable ? 'access token expired; it is renewed at the next call' : 'access token expired and cannot be renewed: sign in again')
  return {
    connection: ref.connection,
    user: ref.user,
    method: record.method,
    expiresAt: record.expiresAt,
    refreshable,
    obtainedAt: record.obtainedAt,
    lastRefreshAt: record.lastRefreshAt,
    lastUsedAt: record.lastUsedAt,
    subject: record.subject,
    scope: record.scope,
    warnings,
  }
}

/**
 * Every stored credential matching the filter, sorted by connection then user (shared first).
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function listCredentials(store: TokenStore, snapshot: ConfigSnapshot, filter: CredentialFilter, now: number): Promise<CredentialRow[]> {
  const rows: CredentialRow[] = []
  const storeFilter = {
    ...(filter.connection === undefined ? {} : { connection: filter.connection }),
    ...(filter.user === undefined ? {} : { user: filter.user }),
  }
  for await (const { ref, record } of store.listTokens(storeFilter)) rows.push(credentialRow(ref, record, snapshot, now))
  return rows.sort((a, b) => compare(a.connection, b.connection) || compare(a.user ?? '', b.user ?? ''))
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
