/**
 * `keyway sql "STATEMENT"` (design.md §3): GRANT and REVOKE of USE CONNECTION, ALTER CONNECTION
 * ... OWNER TO, SHOW GRANTS, SHOW CONNECTIONS and DESCRIBE CONNECTION against the config file.
 * Edits keep every comment and every line they do not change, are checked by the config loader
 * before anything is written, are written atomically, and are recorded in the audit log as
 * `grant.changed`. Secrets are never resolved here: the file is checked with secret references
 * left unresolved, because an admin's shell rarely holds the server's secrets and no statement
 * needs them; nor are the auth types this build serves, which no statement changes (`keyway
 * validate` reports both). SHOW CONNECTIONS and DESCRIBE CONNECTION add each connection's
 * credential state from the token store, resolving only the `store` settings' secrets; a store out
 * of reach is a state with its reason, not a failure. Exit codes: 0 done (or nothing to do), 1
 * refused or failed, 2 usage or syntax error.
 * @module
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { parseDocument } from 'yaml'
import { createAuditLog } from '../src/audit/audit-log.js'
import { loadConfigText, type ConfigSnapshot } from '../src/config/load.js'
import { ConfigSchema, type Principal } from '../src/config/schema.js'
import { applyStatement, type ApplyOutcome } from '../src/admin/sql/apply.js'
import { formatSyntaxError, isMutating, parseStatement, formatPrincipal, type MutatingStatement, type ReadStatement } from '../src/admin/sql/parse.js'
import { formatTable, renderStatement, type RenderOptions, type RenderResult } from '../src/admin/sql/render.js'
import { writeFileAtomic } from '../src/admin/write-atomic.js'
import { createStoreCredentialState } from '../src/admin/credential-state.js'
import { openStoreToInspect, storeSettingsFromText } from '../src/credentials/store-access.js'
import { decide, describePrincipal } from '../src/grants/decide.js'
import { createCaller, createServicePrincipalCaller } from '../src/identity/caller.js'
import { configPath, reportProblems, type CliIo, type Command } from './cli.js'

const USAGE = `usage: keyway sql [--config FILE] 'STATEMENT'

  GRANT USE CONNECTION ON CONNECTION c TO principal
  REVOKE USE CONNECTION ON CONNECTION c FROM principal
  ALTER CONNECTION c OWNER TO principal
  SHOW GRANTS ON CONNECTION c
  SHOW CONNECTIONS
  DESCRIBE CONNECTION c

A principal is a name in backticks: with @ a user, else a group; USER \`x\` or GROUP \`x\` says
which explicitly. Put the statement in single quotes so the shell leaves the backticks alone:
  keyway sql 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO \`data-engineering\`'`

/**
 * Builds the command. `opts.credentialState` says what is stored for a connection (a
 * `credentials` column in SHOW CONNECTIONS and line in DESCRIBE CONNECTION); without it the
 * command reads the token store itself (`createStoreCredentialState`), resolving only the
 * `store` settings' secrets.
 */
export function createSqlCommand(opts: RenderOptions = {}): Command {
  return (argv, io) => runSql(argv, io, opts)
}

/** `keyway sql`, as dispatched by `tools/keyway.ts`: credential state from the token store. */
export const run: Command = createSqlCommand()

async function runSql(argv: string[], io: CliIo, opts: RenderOptions): Promise<number> {
  const args = parseSqlArgs(argv)
  if ('error' in args) {
    io.err(`keyway sql: ${args.error}\n\n${USAGE}`)
    return 2
  }
  if (args.help) {
    io.out(USAGE)
    return 0
  }
  const text = args.statement
  if (text.trim() === '') {
    io.err(USAGE)
    return 2
  }
  const parsed = parseStatement(text)
  if (!parsed.ok) {
    const [line, caret] = formatSyntaxError(text, parsed.error)
    io.err(`keyway sql: syntax error: ${parsed.error.message}`)
    io.err(`  ${line}`)
    io.err(`  ${caret}`)
    return 2
  }

  const file = configPath(args.config, io)
  const source = await readText(file, io)
  if (source === undefined) return 1
  const loaded = await loadConfigText(source, file, { env: io.env, skipSecrets: true })
  if (!loaded.ok) {
    const n = loaded.problems.length
    reportProblems(
      io,
      `keyway sql: ${display(file, io)} has ${plural(n, 'problem')}; fix ${n === 1 ? 'it' : 'them'} first (nothing was done):`,
      loaded.problems,
    )
    return 1
  }
  const statement = parsed.statement
  return isMutating(statement)
    ? mutate({ io, file, source, snapshot: loaded.snapshot, statement, text })
    : show(io, file, source, loaded.snapshot, statement, opts)
}

/** `--config F`, `--help`, and the statement: every other argument, joined by spaces. */
function parseSqlArgs(
  argv: string[],
): { readonly config: string | undefined; readonly help: boolean; readonly statement: string } | { readonly error: string } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    })
    return { config: values.config, help: values.help ?? false, statement: positionals.join(' ') }
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) }
  }
}

/**
 * Prints the answer of SHOW or DESCRIBE. Credential state comes from `opts.credentialState`, else
 * from the token store, opened only if the statement asks for it and closed afterwards.
 */
async function show(io: CliIo, file: string, source: string, snapshot: ConfigSnapshot, statement: ReadStatement, opts: RenderOptions): Promise<number> {
  // The loader accepted this text, so the schema accepts it too; the raw data carries the secret
  // references and which limits a connection sets itself.
  const raw = ConfigSchema.parse(parseDocument(source).toJS() ?? {})
  const fromStore = opts.credentialState
    ? undefined
    : createStoreCredentialState({
        connections: snapshot.connections,
        now: Date.now(),
        open: async () => {
          const settings = await storeSettingsFromText(source, file, io.env)
          return settings.ok ? openStoreToInspect(settings.settings) : { kind: 'unavailable', reason: settings.reason }
        },
      })
  let r: RenderResult
  try {
    r = await renderStatement({ snapshot, file: raw }, statement, fromStore ? { ...opts, credentialState: fromStore.state } : opts)
  } finally {
    await fromStore?.close()
  }
  if (!r.ok) {
    io.err(unknownConnection(r.connection, file, io))
    return 1
  }
  for (const line of formatTable(r.table)) io.out(line)
  return 0
}

interface MutateInput {
  readonly io: CliIo
  readonly file: string
  readonly source: string
  /** The snapshot `source` loads into. */
  readonly snapshot: ConfigSnapshot
  readonly statement: MutatingStatement
  /** The statement as typed, for the audit log. */
  readonly text: string
}

async function mutate({ io, file, source, snapshot, statement, text }: MutateInput): Promise<number> {
  let outcome: ApplyOutcome
  try {
    outcome = applyStatement(source, statement)
  } catch (e) {
    io.err(`keyway sql: cannot edit ${display(file, io)}: ${e instanceof Error ? e.message : String(e)}`)
    return 1
  }
  const c = statement.connection
  const who = describePrincipal(statement.principal)
  if (outcome.kind === 'unchanged') {
    switch (outcome.reason) {
      case 'already-granted':
        io.out(`${who} already holds USE CONNECTION on ${c}; nothing changed`)
        break
      case 'owner-holds':
        io.out(`${who} owns ${c} and so already holds USE CONNECTION on it; nothing changed`)
        break
      case 'already-owner':
        io.out(`${who} already owns ${c}; nothing changed`)
        break
      default: {
        const never: never = outcome
        return never
      }
    }
    return 0
  }
  if (outcome.kind === 'refused') {
    switch (outcome.reason) {
      case 'unknown-connection':
        io.err(unknownConnection(c, file, io))
        break
      case 'revoke-owner':
        io.err(
          `keyway sql: cannot revoke USE CONNECTION on ${c} from ${describePrincipal(outcome.owner)}: it owns ${c}, and the owner always holds USE CONNECTION; ` +
            `transfer ownership first with ALTER CONNECTION ${c} OWNER TO \`new-owner\``,
        )
        break
      case 'no-such-grant': {
        const other = outcome.otherType
        const hint = other ? ` (there is one to ${describePrincipal(other)}: REVOKE USE CONNECTION ON CONNECTION ${c} FROM ${sqlPrincipal(other)})` : ''
        io.err(`keyway sql: ${who} holds no grant of USE CONNECTION on ${c}; nothing revoked${hint}`)
        if ('user' in statement.principal) {
          const via = remainingAccess(snapshot, c, statement.principal.user)
          if (via) io.err(`note: ${who} holds USE CONNECTION on ${c} through ${via}`)
        }
        break
      }
      default: {
        const never: never = outcome
        return never
      }
    }
    return 1
  }

  const next = await loadConfigText(outcome.text, file, { env: io.env, skipSecrets: true })
  if (!next.ok) {
    reportProblems(
      io,
      `keyway sql: refused: after this change ${display(file, io)} would have ${plural(next.problems.length, 'problem')}; nothing was written:`,
      next.problems,
    )
    return 1
  }
  // A concurrent edit between our read and our write would be lost; refuse rather than overwrite it.
  if ((await readText(file, io)) !== source) {
    io.err(`keyway sql: ${display(file, io)} changed while this statement ran; nothing was written, run it again`)
    return 1
  }
  try {
    await writeFileAtomic(file, outcome.text)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const hint = code === 'EROFS' ? ' (a read-only mount such as a Kubernetes ConfigMap: change the file where it is managed)' : ''
    io.err(`keyway sql: cannot write ${display(file, io)}: ${e instanceof Error ? e.message : String(e)}${hint}`)
    return 1
  }
  await recordAudit(io, next.snapshot, file, text)

  const updated = `${display(file, io)} updated`
  switch (statement.kind) {
    case 'grant':
      io.out(`granted USE CONNECTION on ${c} to ${who} (${updated})`)
      break
    case 'revoke': {
      const extra = (outcome.removed ?? 1) > 1 ? `${outcome.removed} grant entries removed; ` : ''
      io.out(`revoked USE CONNECTION on ${c} from ${who} (${extra}${updated})`)
      if ('user' in statement.principal) {
        const via = remainingAccess(next.snapshot, c, statement.principal.user)
        if (via) io.out(`note: ${who} still holds USE CONNECTION on ${c} through ${via}`)
      }
      break
    }
    case 'alter_owner': {
      const prev = outcome.previousOwner
      io.out(`changed the owner of ${c}${prev ? ` from ${describePrincipal(prev)}` : ''} to ${who} (${updated})`)
      if (prev && !holdsAfterOwnerChange(next.snapshot, c, prev))
        io.out(
          `note: ${describePrincipal(prev)} no longer holds USE CONNECTION on ${c}; to keep its access: GRANT USE CONNECTION ON CONNECTION ${c} TO ${sqlPrincipal(prev)}`,
        )
      break
    }
    default: {
      const never: never = statement
      return never
    }
  }
  return 0
}

/**
 * How a user still reaches a connection, as far as the config tells: ownership or a grant to a
 * group it belongs to (config groups, `account users`, the groups of its API keys). Groups an
 * OIDC identity provider puts in tokens are not known here.
 */
function remainingAccess(snapshot: ConfigSnapshot, connection: string, user: string): string | undefined {
  const conn = snapshot.connections.get(connection)
  if (!conn) return undefined
  const keyGroups = [...snapshot.identity.apiKeys.values()].filter((k) => k.user === user).map((k) => k.groups)
  for (const extra of [[], ...keyGroups]) {
    const d = decide(createCaller(snapshot, user, 'stdio', extra), conn, snapshot.grants)
    if (d.effect === 'allow') {
      const what = d.via === 'owner' ? `${describePrincipal(d.principal)}, its owner` : describePrincipal(d.principal)
      return extra.length > 0 ? `${what} (a group of its API key)` : what
    }
  }
  return undefined
}

/** Whether the previous owner keeps USE CONNECTION through a grant (or, for a user or service principal, a group). */
function holdsAfterOwnerChange(snapshot: ConfigSnapshot, connection: string, prev: Principal): boolean {
  if ('user' in prev) return remainingAccess(snapshot, connection, prev.user) !== undefined
  if ('servicePrincipal' in prev) {
    const conn = snapshot.connections.get(connection)
    return conn !== undefined && decide(createServicePrincipalCaller(snapshot, prev.servicePrincipal, 'stdio'), conn, snapshot.grants).effect === 'allow'
  }
  return snapshot.grants.some((g) => g.on === connection && 'group' in g.to && g.to.group === prev.group)
}

async function recordAudit(io: CliIo, snapshot: ConfigSnapshot, file: string, statement: string): Promise<void> {
  try {
    const log = createAuditLog(snapshot.audit.file, { onError: (e) => io.err(`keyway sql: warning: audit log not written: ${e.message}`) })
    log.record({ type: 'grant.changed', statement: statement.trim(), file })
    await log.close()
  } catch (e) {
    io.err(`keyway sql: warning: audit log not written: ${e instanceof Error ? e.message : String(e)}`)
  }
}

async function readText(file: string, io: CliIo): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    io.err(`keyway sql: ${file}: ${code === 'ENOENT' ? 'file not found' : `cannot read file (${e instanceof Error ? e.message : String(e)})`}`)
    return undefined
  }
}

function unknownConnection(name: string, file: string, io: CliIo): string {
  return `keyway sql: unknown connection "${name}" in ${display(file, io)} (SHOW CONNECTIONS lists them)`
}

/** `USER \`x\`` / `GROUP \`x\`` / `SERVICE PRINCIPAL \`x\``: a principal as a statement would name it. */
const sqlPrincipal = formatPrincipal

/** The file as the admin would type it: relative to the working directory when inside it. */
function display(file: string, io: CliIo): string {
  const rel = path.relative(io.cwd, file)
  return rel === '' || rel.startsWith('..') || path.isAbsolute(rel) ? file : rel
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}
