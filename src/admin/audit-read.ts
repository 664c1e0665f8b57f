/**
 * Reading the audit log back (`keyway audit`): streams the JSON-lines file record by record (a
 * log of any size is never held in memory at once), tolerates a truncated last line (the server
 * may be writing it), filters by user, connection, time, decision and event type, and formats
 * records as an aligned table or JSON lines. Records on disk are data, not trusted shapes: every
 * field is read defensively. This module never writes the log and never prints.
 * @module
 */
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { escapeForTerminal } from '../safe-text.js'

/** One audit line as read from disk: `time` and `type` are required, anything else is optional. */
export interface AuditRecord {
  readonly time: string
  readonly type: string
  readonly [field: string]: unknown
}

export interface AuditFilter {
  readonly user?: string
  readonly connection?: string
  /** Epoch milliseconds; records before it are left out. */
  readonly since?: number
  readonly decision?: 'allow' | 'deny'
  /** Exact types (`tool.call`) or families (`config` matches `config.reloaded` and `config.rejected`). */
  readonly types?: readonly string[]
}

export interface ReadStats {
  /** Lines that were not a JSON object with `time` and `type` (the last line excepted). */
  malformed: number
  /** The last line was incomplete (no newline, not JSON): the log is being written. */
  truncatedLast: boolean
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * `--since`: a duration back from `now` (`45s`, `30m`, `1h`, `2d`, `1w`) or an ISO 8601 date or
 * date-time (`2026-11-28`, `2026-11-28T10:00:00Z`). Undefined when the value is neither.
 */
export function parseSince(value: string, now: number): number | undefined {
  const rel = /^(\d+)\s*([smhdw])$/i.exec(value.trim())
  if (rel) return now - Number(rel[1]) * (UNIT_MS[(rel[2] ?? '').toLowerCase()] ?? NaN)
  if (!/^\d{4}-\d{2}-\d{2}/.test(value)) return undefined
  const t = Date.parse(value)
  return Number.isNaN(t) ? undefined : t
}

/** Parses one line; undefined when it is not an audit record (blank, truncated, foreign). */
export function parseAuditLine(line: string): AuditRecord | undefined {
  if (line.trim() === '') return undefined
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const rec = value as Record<string, unknown>
  if (typeof rec.time !== 'string' || typeof rec.type !== 'string') return undefined
  return rec as AuditRecord
}

/** True when the record passes every filter that is set. */
export function matchesAuditFilter(rec: AuditRecord, filter: AuditFilter): boolean {
  if (filter.user !== undefined && rec.user !== filter.user) return false
  if (filter.connection !== undefined && rec.connection !== filter.connection) return false
  if (filter.decision !== undefined && rec.decision !== filter.decision) return false
  if (filter.since !== undefined) {
    const t = Date.parse(rec.time)
    if (Number.isNaN(t) || t < filter.since) return false
  }
  if (filter.types !== undefined && filter.types.length > 0) {
    if (!filter.types.some((t) => rec.type === t || rec.type.startsWith(`${t}.`))) return false
  }
  return true
}

/**
 * Streams the records of an audit log file that match `filter`, in file order. Blank lines are
 * skipped; other unreadable lines are counted in `stats` (a truncated last line separately).
 * Rejects when the file cannot be opened (`ENOENT` and friends keep their `code`).
 */
export async function* readAuditLog(
  file: string,
  filter: AuditFilter = {},
  stats: ReadStats = { malformed: 0, truncatedLast: false },
): AsyncGenerator<AuditRecord> {
  const input = createReadStream(file, { encoding: 'utf8' })
  // Open errors surface before the first line; readline would otherwise swallow them into 'close'.
  await new Promise<void>((resolve, reject) => {
    input.once('ready', () => resolve())
    input.once('error', reject)
  })
  const lines = createInterface({ input, crlfDelay: Infinity })
  let pendingBad = false
  try {
    for await (const line of lines) {
      // A bad line is only "truncated" if it turns out to be the last one.
      if (pendingBad) stats.malformed++
      pendingBad = false
      const rec = parseAuditLine(line)
      if (!rec) {
        if (line.trim() !== '') pendingBad = true
        continue
      }
      if (matchesAuditFilter(rec, filter)) yield rec
    }
    if (pendingBad) stats.truncatedLast = true
  } finally {
    lines.close()
    input.destroy()
  }
}

/** The table's columns, in order. */
export const AUDIT_COLUMNS = ['TIME', 'TYPE', 'USER', 'CONNECTION', 'REQUEST', 'DECISION', 'RULE/ERROR', 'STATUS', 'MS'] as const

/** One record as the table's cells (see `AUDIT_COLUMNS`); fields an event does not have are `-`. */
export function auditRow(rec: AuditRecord): string[] {
  const s = (k: string): string => {
    const v = rec[k]
    return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : ''
  }
  const request = rec.type === 'tool.call' ? [s('method'), s('path')].filter(Boolean).join(' ') : s('authMethod')
  return [
    rec.time,
    rec.type,
    s('user') || (s('servicePrincipal') && `service principal ${s('servicePrincipal')}`),
    s('connection'),
    request,
    s('decision'),
    detailOf(rec, s),
    s('status'),
    s('durationMs'),
  ].map((cell) => escapeForTerminal(cell) || '-')
}

function detailOf(rec: AuditRecord, s: (k: string) => string): string {
  switch (rec.type) {
    case 'tool.call':
      return [s('rule'), s('error')].filter(Boolean).join('; ')
    case 'config.reloaded':
      return `${s('connections') || '?'} connections, ${s('grants') || '?'} grants`
    case 'config.rejected':
      return `${s('problems') || '?'} problems`
    case 'grant.changed':
      return s('statement')
    default:
      return [
        s('providerAccount') && `provider account ${s('providerAccount')}`,
        s('expected') && `expected ${s('expected')}`,
        s('reason'),
        s('warning'),
        s('scopes') && `scopes ${s('scopes')}`,
      ]
        .filter(Boolean)
        .join('; ')
  }
}

/**
 * Lays rows out in aligned columns, widths taken from the header and `rows`. Streaming callers
 * pass the first batch to fix the widths and format later rows with `formatAuditRow` (a longer
 * cell then pushes its line, never truncates).
 */
export function columnWidths(rows: readonly (readonly string[])[]): number[] {
  return AUDIT_COLUMNS.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
}

/** One aligned line; the last column is not padded. */
export function formatAuditRow(cells: readonly string[], widths: readonly number[]): string {
  return cells
    .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
    .join('  ')
    .trimEnd()
}

/** The whole table for a finite list of records (header first). */
export function formatAuditTable(records: readonly AuditRecord[]): string[] {
  const rows = records.map(auditRow)
  const widths = columnWidths(rows)
  return [formatAuditRow(AUDIT_COLUMNS, widths), ...rows.map((r) => formatAuditRow(r, widths))]
}
