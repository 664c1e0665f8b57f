/**
 * `keyway audit [--user U] [--connection C] [--since 1h|30m|2d|ISO] [--decision allow|deny]
 * [--type tool.call|config|...] [--json] [--config F]`: reads the config's `audit.file` and prints
 * the matching records as an aligned table, or as JSON lines with `--json`. The file is streamed;
 * a truncated last line (the server is writing) is skipped quietly. The config is read without
 * resolving secrets, so this runs where the server's secrets are not set.
 * @module
 */
import { parseArgs } from 'node:util'
import { AUDIT_COLUMNS, auditRow, columnWidths, formatAuditRow, parseSince, readAuditLog, type AuditFilter, type ReadStats } from '../src/admin/audit-read.js'
import { toSafeJsonLine } from '../src/safe-text.js'
import { configPath, loadOrReport, type Command } from './cli.js'

/** Rows buffered to size the table's columns before the rest is streamed with those widths. */
const TABLE_SIZING_ROWS = 1_000

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      user: { type: 'string' },
      connection: { type: 'string' },
      since: { type: 'string' },
      decision: { type: 'string' },
      type: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  })
  let since: number | undefined
  if (values.since !== undefined) {
    since = parseSince(values.since, Date.now())
    if (since === undefined) {
      io.err(`keyway: --since must be a duration such as 30m, 1h, 2d or an ISO date, not "${values.since}"`)
      return 2
    }
  }
  const decision = values.decision
  if (decision !== undefined && decision !== 'allow' && decision !== 'deny') {
    io.err(`keyway: --decision must be allow or deny, not "${decision}"`)
    return 2
  }
  const types = (values.type ?? [])
    .flatMap((t) => t.split(','))
    .map((t) => t.trim())
    .filter(Boolean)
  const filter: AuditFilter = {
    ...(values.user === undefined ? {} : { user: values.user }),
    ...(values.connection === undefined ? {} : { connection: values.connection }),
    ...(since === undefined ? {} : { since }),
    ...(decision === undefined ? {} : { decision }),
    ...(types.length === 0 ? {} : { types }),
  }

  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io, { skipSecrets: true })
  if (!snapshot) return 1
  const logFile = snapshot.audit.file

  const stats: ReadStats = { malformed: 0, truncatedLast: false }
  let count = 0
  try {
    if (values.json) {
      for await (const rec of readAuditLog(logFile, filter, stats)) {
        io.out(toSafeJsonLine(rec))
        count++
      }
    } else {
      let widths: number[] | undefined
      const buffered: string[][] = []
      const flush = (): void => {
        widths = columnWidths(buffered)
        io.out(formatAuditRow(AUDIT_COLUMNS, widths))
        for (const r of buffered) io.out(formatAuditRow(r, widths))
        buffered.length = 0
      }
      for await (const rec of readAuditLog(logFile, filter, stats)) {
        count++
        if (widths) io.out(formatAuditRow(auditRow(rec), widths))
        else {
          buffered.push(auditRow(rec))
          if (buffered.length >= TABLE_SIZING_ROWS) flush()
        }
      }
      if (!widths && count > 0) flush()
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    io.err(
      code === 'ENOENT'
        ? `keyway: audit log ${logFile} does not exist yet (audit.file in ${file})`
        : `keyway: cannot read audit log ${logFile} (${e instanceof Error ? e.message : String(e)})`,
    )
    return 1
  }
  if (count === 0 && !values.json) io.err('keyway: no matching audit records')
  if (stats.malformed > 0) io.err(`keyway: warning: skipped ${stats.malformed} unreadable line${stats.malformed === 1 ? '' : 's'} in ${logFile}`)
  return 0
}
