/**
 * `keyway credentials [--connection C] [--user U] [--json] [--config F]`: the inventory of stored
 * credentials (connection, user or "(shared)", method, expiry, refreshable, last refresh,
 * warnings), as a table or JSON lines; and `keyway credentials revoke C [--user U]`: deletes the
 * stored tokens and revokes them at the provider when it has a revocation endpoint (RFC 7009).
 * Never prints a token or secret. Subcommands are dispatched from one table so later ones (last
 * use, prune) slot in.
 * @module
 */
import { parseArgs } from 'node:util'
import type { ConfigSnapshot } from '../src/config/load.js'
import { listCredentials, type CredentialRow } from '../src/credentials/inventory.js'
import { revokeCredentials, type RevokeResult } from '../src/credentials/revoke.js'
import { isAppError } from '../src/errors.js'
import { createLogger } from '../src/log.js'
import { createRuntime, type Runtime } from '../src/runtime.js'
import { configPath, loadOrReport, type CliIo, type Command } from './cli.js'

const USAGE = [
  'usage: keyway credentials [--connection C] [--user U] [--json] [--config F]',
  '       keyway credentials revoke CONNECTION [--user U] [--config F]',
].join('\n')

type Sub = (positionals: readonly string[], values: Options, snapshot: ConfigSnapshot, runtime: Runtime, io: CliIo) => Promise<number>

interface Options {
  readonly connection?: string | undefined
  readonly user?: string | undefined
  readonly json?: boolean | undefined
}

const SUBCOMMANDS: Readonly<Record<string, Sub>> = {
  list: async (positionals, values, snapshot, runtime, io) => {
    if (positionals.length > 0) return usage(io)
    const rows = await listCredentials(
      runtime.store,
      snapshot,
      { ...(values.connection === undefined ? {} : { connection: values.connection }), ...(values.user === undefined ? {} : { user: values.user }) },
      runtime.now(),
    )
    if (values.json) for (const r of rows) io.out(JSON.stringify(jsonRow(r)))
    else for (const line of table(rows, runtime.now())) io.out(line)
    if (snapshot.store.url === 'memory://') io.err('keyway: note: store.url is memory://, which keeps nothing between processes')
    return 0
  },
  revoke: async (positionals, values, snapshot, runtime, io) => {
    const connection = positionals[0]
    if (!connection || positionals.length > 1 || values.json || values.connection !== undefined) return usage(io)
    const results = await revokeCredentials({ store: runtime.store, clients: runtime.oauth, audit: runtime.audit }, snapshot, connection, values.user)
    if (results.length === 0) {
      io.err(`keyway: no stored credentials for connection "${connection}"${values.user === undefined ? '' : ` and user ${values.user}`}`)
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
      options: { config: { type: 'string' }, connection: { type: 'string' }, user: { type: 'string' }, json: { type: 'boolean', default: false } },
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
  let runtime: Runtime
  try {
    runtime = await createRuntime(snapshot, { log: createLogger({ level: 'warn' }) })
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

function jsonRow(r: CredentialRow): Record<string, unknown> {
  return {
    connection: r.connection,
    user: r.user,
    method: r.method,
    expiresAt: r.expiresAt === undefined ? null : new Date(r.expiresAt).toISOString(),
    refreshable: r.refreshable,
    obtainedAt: new Date(r.obtainedAt).toISOString(),
    lastRefreshAt: r.lastRefreshAt === undefined ? null : new Date(r.lastRefreshAt).toISOString(),
    subject: r.subject ?? null,
    scope: r.scope ?? null,
    warnings: r.warnings,
  }
}

const COLUMNS = ['CONNECTION', 'USER', 'METHOD', 'EXPIRES', 'REFRESHABLE', 'LAST REFRESH', 'WARNINGS'] as const

function table(rows: readonly CredentialRow[], now: number): string[] {
  if (rows.length === 0) return ['no stored credentials']
  const cells = rows.map((r) => [
    r.connection,
    r.user ?? '(shared)',
    r.method,
    r.expiresAt === undefined ? '-' : relative(r.expiresAt, now),
    r.refreshable ? 'yes' : 'NO',
    r.lastRefreshAt === undefined ? 'never' : relative(r.lastRefreshAt, now),
    r.warnings.length === 0 ? '' : r.warnings.map((w) => `WARNING: ${w}`).join('; '),
  ])
  const widths = COLUMNS.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)))
  const line = (c: readonly string[]): string => c.map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i] ?? 0))).join('  ').trimEnd()
  return [line(COLUMNS), ...cells.map(line)]
}

/** `in 59m`, `3h ago`, with the ISO time for exactness. */
function relative(at: number, now: number): string {
  const d = at - now
  const abs = Math.abs(d)
  const span = abs < 60_000 ? `${Math.round(abs / 1000)}s` : abs < 7_200_000 ? `${Math.round(abs / 60_000)}m` : abs < 172_800_000 ? `${Math.round(abs / 3_600_000)}h` : `${Math.round(abs / 86_400_000)}d`
  return `${new Date(at).toISOString().replace(/\.\d+Z$/, 'Z')} (${d >= 0 ? `in ${span}` : `${span} ago`})`
}

function describeRevoke(r: RevokeResult): string {
  const who = `${r.ref.connection} ${r.ref.user ?? '(shared)'}`
  const local = r.deleted ? 'deleted' : 'already gone'
  switch (r.provider.kind) {
    case 'revoked': {
      const done = r.provider.tokens.length > 0 ? `revoked at the provider (${r.provider.tokens.join(' and ').replace(/_/g, ' ')})` : undefined
      const kept = r.provider.unsupported.includes('access_token') ? 'the provider does not revoke this kind of access token, so it stays valid until it expires' : undefined
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
