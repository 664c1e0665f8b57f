/**
 * `keyway credentials [--connection C] [--user U] [--json] [--prune] [--config F]`: the inventory
 * of credentials for every auth method (connection, user or "(shared)", method, expiry,
 * refreshable, last refresh, last use, source, warnings) as a table or JSON lines: the stored
 * OAuth tokens and the `bearer_token` connections, whose secret is named by its reference. Last
 * use is read from the audit log. Credentials orphaned by a removed, renamed or re-typed
 * connection are flagged; `--prune` deletes them (locally: an orphan is never sent to a
 * provider). `keyway credentials revoke C [--user U]` deletes stored tokens and revokes them at
 * the provider when it has a revocation endpoint (RFC 7009). Never prints a token or secret.
 * Subcommands are dispatched from one table.
 * @module
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { parseDocument } from 'yaml'
import { createMemoryAuditLog } from '../src/audit/audit-log.js'
import { readLastUse } from '../src/admin/last-use.js'
import type { ConfigSnapshot } from '../src/config/load.js'
import { ConfigSchema } from '../src/config/schema.js'
import { bearerSecretRefs, formatRelative, listCredentials, type CredentialRow } from '../src/admin/inventory.js'
import { describeOrphan, pruneOrphans, type CredentialFilter, type PruneResult } from '../src/credentials/orphans.js'
import { revokeCredentials, type RevokeResult } from '../src/admin/revoke.js'
import { isAppError } from '../src/errors.js'
import { createLogger } from '../src/log.js'
import { createRuntime, type Runtime } from '../src/runtime.js'
import { escapeForTerminal, toSafeJsonLine } from '../src/safe-text.js'
import { configPath, loadOrReport, type CliIo, type Command } from './cli.js'

const USAGE = [
  'usage: keyway credentials [--connection C] [--user U] [--json] [--config F]',
  '       keyway credentials --prune [--connection C] [--user U] [--json] [--config F]',
  '       keyway credentials revoke CONNECTION [--user U] [--config F]',
].join('\n')

type Sub = (positionals: readonly string[], values: Options, snapshot: ConfigSnapshot, runtime: Runtime, io: CliIo) => Promise<number>

interface Options {
  readonly connection?: string | undefined
  readonly user?: string | undefined
  readonly json?: boolean | undefined
  readonly prune?: boolean | undefined
}

const SUBCOMMANDS: Readonly<Record<string, Sub>> = {
  list: async (positionals, values, snapshot, runtime, io) => {
    if (positionals.length > 0) return usage(io)
    if (values.prune) return prune(values, snapshot, runtime, io)
    const filter = filterOf(values)
    // With --user only that user's per-user tokens are listed, so only that user's calls matter.
    const lastUse = await readLastUse(snapshot.audit.file, filter)
    const rows = await listCredentials(
      {
        store: runtime.store,
        snapshot,
        now: runtime.now(),
        ...(lastUse.ok ? { lastUse: lastUse.index } : {}),
        secretRefs: await secretRefs(snapshot.file),
      },
      filter,
    )
    if (values.json) for (const r of rows) io.out(toSafeJsonLine(jsonRow(r, snapshot)))
    else for (const line of table(rows, runtime.now(), lastUse.ok, snapshot)) io.out(line)
    if (!lastUse.ok) io.err(`keyway: note: last use unknown: ${lastUse.reason} (audit.file in ${snapshot.file})`)
    const orphans = rows.filter((r) => r.orphaned !== undefined).length
    if (orphans > 0)
      io.err(
        `keyway: ${orphans} orphaned credential${orphans === 1 ? '' : 's'} (connection removed, renamed or switched to another auth type): ` +
          'never used again; keyway credentials --prune deletes them',
      )
    if (snapshot.store.url === 'memory://') io.err('keyway: note: store.url is memory://, which keeps nothing between processes')
    return 0
  },
  revoke: async (positionals, values, snapshot, runtime, io) => {
    const connection = positionals[0]
    if (!connection || positionals.length > 1 || values.json || values.prune || values.connection !== undefined) return usage(io)
    const results = await revokeCredentials({ store: runtime.store, clients: runtime.oauth, audit: runtime.audit }, snapshot, connection, values.user)
    if (results.length === 0) {
      const bearer = snapshot.connections.get(connection)?.auth.type === 'bearer_token'
      io.err(
        `keyway: no stored credentials for connection "${connection}"${values.user === undefined ? '' : ` and user ${values.user}`}` +
          (bearer ? ' (a bearer_token connection uses its config secret: rotate it at the provider and change the secret)' : ''),
      )
      return 1
    }
    for (const r of results) io.out(describeRevoke(r))
    return results.some((r) => r.provider.kind === 'failed') ? 1 : 0
  },
}

export const run: Command = async (argv, io) => {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        connection: { type: 'string' },
        user: { type: 'string' },
        json: { type: 'boolean', default: false },
        prune: { type: 'boolean', default: false },
      },
      strict: true,
    })
  } catch (e) {
    io.err(`keyway credentials: ${(e as Error).message}\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  const [first, ...rest] = positionals
  const sub = first === undefined ? SUBCOMMANDS.list : SUBCOMMANDS[first]
  if (!sub) return usage(io)
  const snapshot = await loadOrReport(configPath(values.config, io), io)
  if (!snapshot) return 1
  // A listing writes nothing, not even an empty audit file; revoke and prune audit what they delete.
  const writes = first !== undefined || values.prune
  let runtime: Runtime
  try {
    runtime = await createRuntime(snapshot, { log: createLogger({ level: 'warn' }), ...(writes ? {} : { audit: createMemoryAuditLog() }) })
  } catch (e) {
    io.err(`keyway credentials: ${e instanceof Error ? e.message : String(e)}`)
    return 1
  }
  try {
    return await sub(first === undefined ? [] : rest, values, snapshot, runtime, io)
  } catch (e) {
    io.err(`keyway credentials: ${isAppError(e) ? e.message : `failed unexpectedly (${e instanceof Error ? e.message : String(e)})`}`)
    return 1
  } finally {
    await runtime.close()
  }
}

function usage(io: CliIo): number {
  io.err(USAGE)
  return 2
}

function filterOf(values: Options): CredentialFilter {
  return { ...(values.connection === undefined ? {} : { connection: values.connection }), ...(values.user === undefined ? {} : { user: values.user }) }
}

/** Bearer tokens' secret references, read from the file itself (the snapshot holds resolved secrets only). */
async function secretRefs(file: string): Promise<ReadonlyMap<string, string>> {
  // The file loaded a moment ago; if it changed since and no longer parses, the rows just say "config secret".
  try {
    const parsed = ConfigSchema.safeParse(parseDocument(await readFile(file, 'utf8')).toJS() ?? {})
    return parsed.success ? bearerSecretRefs(parsed.data) : new Map()
  } catch {
    return new Map()
  }
}

/** `--prune`: deletes the orphans matching the filter and says what it did. */
async function prune(values: Options, snapshot: ConfigSnapshot, runtime: Runtime, io: CliIo): Promise<number> {
  const results = await pruneOrphans({ store: runtime.store, audit: runtime.audit }, snapshot, filterOf(values))
  if (values.json) for (const r of results) io.out(toSafeJsonLine(jsonPrune(r)))
  else if (results.length === 0) io.out('no orphaned credentials')
  else for (const r of results) io.out(describePrune(r, snapshot))
  if (results.some((r) => r.outcome === 'deleted'))
    io.err(
      "keyway: note: pruned credentials were deleted here only, not revoked at the provider: a removed connection's provider settings are gone, " +
        "and a re-typed one's may not be the ones the token was issued under; revoke the grant at the provider if it must end now",
    )
  return results.some((r) => r.outcome === 'changed') ? 1 : 0
}

function describePrune(r: PruneResult, snapshot: ConfigSnapshot): string {
  const who = `${r.ref.connection} ${r.ref.user ?? '(shared)'} (${r.method})`
  const why = describeOrphan(r.ref.connection, r.reason, snapshot)
  switch (r.outcome) {
    case 'deleted':
      return `${who}: deleted (${why}); not revoked at the provider`
    case 'gone':
      return `${who}: already gone (${why})`
    case 'changed':
      return `${who}: NOT deleted: it changed since it was listed (a server with an older config still using it?); check that server's config and run again`
    default: {
      const never: never = r.outcome
      return never
    }
  }
}

function jsonPrune(r: PruneResult): Record<string, unknown> {
  return { connection: r.ref.connection, user: r.ref.user, method: r.method, orphaned: r.reason, outcome: r.outcome, revokedAtProvider: false }
}

function jsonRow(r: CredentialRow, snapshot: ConfigSnapshot): Record<string, unknown> {
  const iso = (t: number | undefined): string | null => (t === undefined ? null : new Date(t).toISOString())
  return {
    connection: r.connection,
    user: r.user,
    method: r.method,
    source: r.source,
    expiresAt: iso(r.expiresAt),
    refreshable: r.refreshable,
    obtainedAt: iso(r.obtainedAt),
    lastRefreshAt: iso(r.lastRefreshAt),
    lastUsedAt: iso(r.lastUsedAt),
    subject: r.subject ?? null,
    scope: r.scope ?? null,
    orphaned: r.orphaned ?? null,
    ...(r.orphaned === undefined ? {} : { orphanedBecause: describeOrphan(r.connection, r.orphaned, snapshot) }),
    warnings: r.warnings,
  }
}

const COLUMNS = ['CONNECTION', 'USER', 'METHOD', 'EXPIRES', 'REFRESHABLE', 'LAST REFRESH', 'LAST USE', 'SOURCE', 'WARNINGS'] as const

function table(rows: readonly CredentialRow[], now: number, lastUseKnown: boolean, snapshot: ConfigSnapshot): string[] {
  if (rows.length === 0) return ['no credentials']
  const cells = rows.map((r) =>
    [
      r.connection,
      r.user ?? '(shared)',
      r.method,
      r.expiresAt === undefined ? '-' : when(r.expiresAt, now),
      // A bearer token is never refreshed by design; an OAuth token that cannot be is a problem.
      r.refreshable ? 'yes' : r.method === 'bearer_token' ? 'no' : 'NO',
      r.lastRefreshAt !== undefined ? when(r.lastRefreshAt, now) : r.method === 'bearer_token' ? '-' : 'never',
      r.lastUsedAt !== undefined ? when(r.lastUsedAt, now) : lastUseKnown ? 'never' : 'unknown',
      r.source,
      [
        ...(r.orphaned === undefined ? [] : [`ORPHANED: ${describeOrphan(r.connection, r.orphaned, snapshot)}; keyway credentials --prune deletes it`]),
        ...r.warnings.map((w) => `WARNING: ${w}`),
      ].join('; '),
    ].map(escapeForTerminal),
  )
  const widths = COLUMNS.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)))
  const line = (c: readonly string[]): string =>
    c
      .map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(COLUMNS), ...cells.map(line)]
}

/** `2026-11-28T10:00:00Z (in 59m)`, `… (3h ago)`: the ISO time for exactness, the span for reading. */
function when(at: number, now: number): string {
  return `${new Date(at).toISOString().replace(/\.\d+Z$/, 'Z')} (${formatRelative(at, now)})`
}

function describeRevoke(r: RevokeResult): string {
  const who = `${r.ref.connection} ${r.ref.user ?? '(shared)'}`
  const local = r.deleted ? 'deleted' : 'already gone'
  switch (r.provider.kind) {
    case 'revoked': {
      const done = r.provider.tokens.length > 0 ? `revoked at the provider (${r.provider.tokens.join(' and ').replace(/_/g, ' ')})` : undefined
      const kept = r.provider.unsupported.includes('access_token')
        ? 'the provider does not revoke this kind of access token, so it stays valid until it expires'
        : undefined
      return `${who}: ${[local, done, kept].filter(Boolean).join('; ')}`
    }
    case 'no-endpoint':
      return `${who}: ${local}; the provider has no revocation endpoint (set auth.revocationEndpoint if it has one), so the grant may still be live there`
    case 'not-in-config':
      return `${who}: ${local}; connection not in the config, so it was not revoked at the provider`
    case 'failed':
      return `${who}: ${local}; revocation at the provider FAILED: ${r.provider.message}`
    default: {
      const never: never = r.provider
      return String(never)
    }
  }
}
