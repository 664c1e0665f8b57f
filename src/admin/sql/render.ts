/**
 * What SHOW GRANTS, SHOW CONNECTIONS and DESCRIBE CONNECTION answer, as tables of strings, and
 * the plain-text layout of such a table. Secrets are never part of an answer: a secret appears
 * as its reference (`{ env: NAME }`, `{ file: PATH }`) read from the file, never as a value, and
 * this module never calls `Secret.reveal()`. Credential state (stored tokens) lives in the token
 * store, so it comes in through an optional `credentialState` callback. Pure apart from that
 * callback.
 * @module
 */
import type { ConfigSnapshot, Connection } from '../../config/load.js'
import type { ConfigFile, Principal, SecretRef } from '../../config/schema.js'
import { USE_CONNECTION, type ReadStatement } from './parse.js'

/** Rows of cells under named columns; every row has one cell per column. */
export interface Table {
  readonly columns: readonly string[]
  readonly rows: readonly (readonly string[])[]
}

/**
 * The loaded config (effective values) beside the file's own data (secret references, and
 * whether a value was set on the connection or inherited), both from the same text.
 */
export interface ConfigView {
  readonly snapshot: ConfigSnapshot
  readonly file: ConfigFile
}

/**
 * Answers whether and which credentials are stored for a connection (for example `tokens for 3
 * users`), or undefined to leave the line out. Never a token or secret.
 */
export type CredentialState = (connection: string) => Promise<string | undefined>

export interface RenderOptions {
  /** Adds a `credentials` column to SHOW CONNECTIONS and a `credentials` line to DESCRIBE CONNECTION. */
  readonly credentialState?: CredentialState
}

export type RenderResult =
  { readonly ok: true; readonly table: Table } | { readonly ok: false; readonly reason: 'unknown-connection'; readonly connection: string }

/** Answers a read-only statement. */
export async function renderStatement(view: ConfigView, statement: ReadStatement, opts: RenderOptions = {}): Promise<RenderResult> {
  switch (statement.kind) {
    case 'show_connections': {
      const table = showConnections(view)
      return { ok: true, table: opts.credentialState ? await withCredentialColumn(table, opts.credentialState) : table }
    }
    case 'show_grants':
      return orUnknown(statement.connection, showGrants(view, statement.connection))
    case 'describe_connection':
      return orUnknown(statement.connection, await describeConnection(view, statement.connection, opts))
    default: {
      const never: never = statement
      return never
    }
  }
}

function orUnknown(connection: string, table: Table | undefined): RenderResult {
  return table ? { ok: true, table } : { ok: false, reason: 'unknown-connection', connection }
}

/**
 * SHOW GRANTS ON CONNECTION c: the owner first (owners always hold USE CONNECTION, design.md §2),
 * then the grants in file order. Undefined for an unknown connection.
 */
export function showGrants(view: ConfigView, name: string): Table | undefined {
  const c = view.snapshot.connections.get(name)
  if (!c) return undefined
  const row = (p: Principal, source: 'owner' | 'grant'): readonly string[] => [principalName(p), principalType(p), USE_CONNECTION, source]
  return {
    columns: ['principal', 'type', 'privilege', 'source'],
    rows: [row(c.owner, 'owner'), ...grantsOn(view.snapshot, name).map((p) => row(p, 'grant'))],
  }
}

/** SHOW CONNECTIONS: one row per connection, sorted by name. */
export function showConnections(view: ConfigView): Table {
  const conns = [...view.snapshot.connections.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  return {
    columns: ['name', 'url', 'auth', 'owner', 'mcp_tool', 'grants'],
    rows: conns.map((c) => [c.name, urlOf(c), c.auth.type, principalLabel(c.owner), yesNo(c.isMcpConnection), String(grantsOn(view.snapshot, c.name).length)]),
  }
}

/** SHOW CONNECTIONS with a last `credentials` column (`-` where the callback has nothing to say). */
async function withCredentialColumn(table: Table, state: CredentialState): Promise<Table> {
  const rows: (readonly string[])[] = []
  for (const row of table.rows) rows.push([...row, (await state(row[0] ?? '')) ?? '-'])
  return { columns: [...table.columns, 'credentials'], rows }
}

/**
 * DESCRIBE CONNECTION c: every SHOW CONNECTIONS field plus description, limits, each grant and,
 * for OAuth, the client and provider settings. Undefined for an unknown connection.
 */
export async function describeConnection(view: ConfigView, name: string, opts: RenderOptions = {}): Promise<Table | undefined> {
  const c = view.snapshot.connections.get(name)
  const raw = Object.hasOwn(view.file.connections, name) ? view.file.connections[name] : undefined
  if (!c || !raw) return undefined
  const rows: [string, string][] = [
    ['name', c.name],
    ['description', c.description ?? '-'],
    ['url', urlOf(c)],
    ['auth', c.auth.type],
    ['owner', principalLabel(c.owner)],
    ['mcp_tool', yesNo(c.isMcpConnection)],
    ['read_only', yesNo(c.readOnly)],
    ['timeout_ms', raw.timeoutMs === undefined ? `${c.timeoutMs} (egress default)` : String(c.timeoutMs)],
    ['max_response_bytes', raw.maxResponseBytes === undefined ? `${c.maxResponseBytes} (egress default)` : String(c.maxResponseBytes)],
  ]
  if (raw.auth.type === 'bearer_token') {
    rows.push(['token', secretRefLabel(raw.auth.token)])
  } else {
    const a = raw.auth
    rows.push(['client_id', a.clientId], ['client_secret', secretRefLabel(a.clientSecret)])
    if (a.issuer !== undefined) rows.push(['issuer', a.issuer])
    if (a.authorizationEndpoint !== undefined) rows.push(['authorization_endpoint', a.authorizationEndpoint])
    if (a.tokenEndpoint !== undefined) rows.push(['token_endpoint', a.tokenEndpoint])
    if (a.revocationEndpoint !== undefined) rows.push(['revocation_endpoint', a.revocationEndpoint])
    rows.push(['scopes', a.scopes.length > 0 ? a.scopes.join(' ') : '-'], ['credential_exchange', a.credentialExchange ?? 'from the provider metadata'])
    if (Object.keys(a.authorizationParams).length > 0) rows.push(['authorization_params', params(a.authorizationParams)])
    if (Object.keys(a.tokenParams).length > 0) rows.push(['token_params', params(a.tokenParams)])
  }
  const grants = grantsOn(view.snapshot, name)
  if (grants.length === 0) rows.push(['grant', '- (only the owner)'])
  for (const p of grants) rows.push(['grant', principalLabel(p)])
  const state = await opts.credentialState?.(name)
  if (state !== undefined) rows.push(['credentials', state])
  return { columns: ['property', 'value'], rows }
}

/**
 * Lays a table out for a terminal: a header, a rule, one line per row, columns padded to their
 * widest cell. Control characters in cells are escaped so a value cannot move the cursor.
 */
export function formatTable(table: Table): string[] {
  const cells = [table.columns, ...table.rows].map((r) => r.map(printable))
  const widths = table.columns.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  const line = (r: readonly string[]): string =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  const [header, ...rows] = cells
  return [line(header ?? []), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)]
}

function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => (ch === '\n' ? '\\n' : ch === '\t' ? ' ' : `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`))
}

function grantsOn(snapshot: ConfigSnapshot, name: string): Principal[] {
  return snapshot.grants.filter((g) => g.on === name).map((g) => g.to)
}

function urlOf(c: Connection): string {
  return `${c.origin}${c.basePath}`
}

function principalName(p: Principal): string {
  if ('user' in p) return p.user
  if ('group' in p) return p.group
  return p.servicePrincipal
}

function principalType(p: Principal): 'user' | 'group' | 'service principal' {
  if ('user' in p) return 'user'
  if ('group' in p) return 'group'
  return 'service principal'
}

function principalLabel(p: Principal): string {
  return `${principalType(p)} ${principalName(p)}`
}

function secretRefLabel(ref: SecretRef): string {
  return 'env' in ref ? `{ env: ${ref.env} }` : `{ file: ${ref.file} }`
}

function params(p: Readonly<Record<string, string>>): string {
  return Object.entries(p)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')
}

function yesNo(b: boolean): 'yes' | 'no' {
  return b ? 'yes' : 'no'
}
