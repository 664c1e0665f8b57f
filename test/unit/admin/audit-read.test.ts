/**
 * Reading the audit log back: `--since` parsing, line parsing that survives garbage and a
 * truncated last line, each filter, and the aligned table, against a fixture log.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  auditRow,
  formatAuditTable,
  matchesAuditFilter,
  parseAuditLine,
  parseSince,
  readAuditLog,
  type AuditFilter,
  type AuditRecord,
  type ReadStats,
} from '../../../src/admin/audit-read.js'

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'audit-read-fixture.jsonl')
const NOW = Date.parse('2026-11-28T10:05:00.000Z')

async function collect(file: string, filter: AuditFilter = {}, stats?: ReadStats): Promise<AuditRecord[]> {
  const out: AuditRecord[] = []
  for await (const r of readAuditLog(file, filter, stats)) out.push(r)
  return out
}

describe('parseSince', () => {
  test.each([
    ['45s', NOW - 45_000],
    ['30m', NOW - 30 * 60_000],
    ['1h', NOW - 3_600_000],
    ['2d', NOW - 2 * 86_400_000],
    ['1w', NOW - 7 * 86_400_000],
    ['2026-11-28', Date.parse('2026-11-28')],
    ['2026-11-28T09:30:00Z', Date.parse('2026-11-28T09:30:00Z')],
  ])('%s', (value, expected) => {
    expect(parseSince(value, NOW)).toBe(expected)
  })

  test.each(['', 'yesterday', '1y', '-1h', '1.5h', '28/11/2026', '2026-13-45'])('%j is refused', (value) => {
    expect(parseSince(value, NOW)).toBeUndefined()
  })
})

describe('parseAuditLine', () => {
  test('a record needs a string time and type', () => {
    expect(parseAuditLine('{"time":"2026-11-28T00:00:00Z","type":"tool.call","user":"a"}')).toEqual({
      time: '2026-11-28T00:00:00Z',
      type: 'tool.call',
      user: 'a',
    })
    for (const bad of ['', '   ', 'not json', '[1,2]', 'null', '"x"', '{"type":"tool.call"}', '{"time":1,"type":"x"}', '{"time":"2026-11-28T00:00:00Z","ty'])
      expect(parseAuditLine(bad)).toBeUndefined()
  })
})

describe('readAuditLog', () => {
  test('streams every record of the fixture and skips the truncated last line quietly', async () => {
    const stats: ReadStats = { malformed: 0, truncatedLast: false }
    const all = await collect(FIXTURE, {}, stats)
    expect(all).toHaveLength(11)
    expect(all[0]?.type).toBe('config.reloaded')
    expect(stats).toEqual({ malformed: 0, truncatedLast: true })
  })

  test('garbage in the middle is counted, blank lines are not', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-audit-'))
    const file = path.join(dir, 'audit.jsonl')
    await writeFile(file, '{"time":"2026-11-28T00:00:00Z","type":"a"}\n\nnot json\r\n{"time":"2026-11-28T00:00:01Z","type":"b"}\r\n')
    const stats: ReadStats = { malformed: 0, truncatedLast: false }
    expect((await collect(file, {}, stats)).map((r) => r.type)).toEqual(['a', 'b'])
    expect(stats).toEqual({ malformed: 1, truncatedLast: false })
  })

  test('a missing file rejects with ENOENT', async () => {
    await expect(collect('/nonexistent/keyway/audit.jsonl')).rejects.toMatchObject({ code: 'ENOENT' })
  })

  test('a large log is streamed: records arrive before the file is read to the end', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-audit-'))
    const file = path.join(dir, 'audit.jsonl')
    const line = `${JSON.stringify({ time: '2026-11-28T00:00:00.000Z', type: 'tool.call', user: 'u', path: '/x'.repeat(100) })}\n`
    await writeFile(file, line.repeat(50_000))
    const before = process.memoryUsage().heapUsed
    let n = 0
    let peak = 0
    for await (const _ of readAuditLog(file)) {
      n++
      if (n % 5_000 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - before)
    }
    expect(n).toBe(50_000)
    // The file is ~11 MB; a streaming reader stays far below holding it (and its parsed records) at once.
    expect(peak).toBeLessThan(40 * 1024 * 1024)
  })
})

describe('filters', () => {
  const cases: [string, AuditFilter, string[]][] = [
    ['user', { user: 'bob@example.com' }, ['09:06', '10:01']],
    ['connection', { connection: 'google_drive' }, ['09:30', '09:31', '10:02', '10:03']],
    ['decision deny', { decision: 'deny' }, ['09:07', '10:01']],
    ['decision allow', { decision: 'allow' }, ['09:05', '09:06', '10:03']],
    ['since', { since: Date.parse('2026-11-28T10:00:00.100Z') }, ['10:00', '10:01', '10:02', '10:03']],
    ['exact type', { types: ['consent.granted'] }, ['09:31']],
    ['type family', { types: ['config'] }, ['09:00', '10:00']],
    ['several types', { types: ['grant.changed', 'credential'] }, ['10:00', '10:02']],
    ['combined', { user: 'carol@example.com', connection: 'google_drive', types: ['tool.call'] }, ['10:03']],
  ]
  test.each(cases)('%s', async (_name, filter, times) => {
    expect((await collect(FIXTURE, filter)).map((r) => r.time.slice(11, 16))).toEqual(times)
  })

  test('a family prefix needs the dot: "tool" does not match "toolbox.x"', () => {
    const rec: AuditRecord = { time: '2026-11-28T00:00:00Z', type: 'toolbox.x' }
    expect(matchesAuditFilter(rec, { types: ['tool'] })).toBe(false)
    expect(matchesAuditFilter({ ...rec, type: 'tool.call' }, { types: ['tool'] })).toBe(true)
  })

  test('an unparseable time never passes --since', () => {
    expect(matchesAuditFilter({ time: 'garbage', type: 'x' }, { since: 0 })).toBe(false)
  })
})

describe('table', () => {
  test('one row per event type, with the details that matter for it', async () => {
    const rows = (await collect(FIXTURE)).map(auditRow)
    expect(rows[0]).toEqual(['2026-11-28T09:00:00.000Z', 'config.reloaded', '-', '-', '-', '-', '3 connections, 4 grants', '-', '-'])
    expect(rows[2]).toEqual([
      '2026-11-28T09:06:00.000Z',
      'tool.call',
      'bob@example.com',
      'github',
      'POST /repos/o/r/issues',
      'allow',
      'grant to group data-engineering',
      '201',
      '120',
    ])
    expect(rows[3]).toEqual(['2026-11-28T09:07:00.000Z', 'tool.call', 'carol@example.com', 'github', 'GET /user', 'deny', 'PERMISSION_DENIED', '-', '1'])
    expect(rows[5]?.[6]).toBe('no refresh token; scopes drive.readonly')
    expect(rows[7]?.[6]).toBe('2 problems')
    expect(rows[9]?.[4]).toBe('oauth_u2m_per_user')
    expect(rows[10]?.slice(6)).toEqual(['grant to user carol@example.com; UPSTREAM_UNAVAILABLE', '503', '3012'])
  })

  test('columns line up', async () => {
    const lines = formatAuditTable(await collect(FIXTURE, { types: ['tool.call'] }))
    expect(lines[0]).toMatch(/^TIME {2,}TYPE {2,}USER {2,}CONNECTION {2,}REQUEST {2,}DECISION {2,}RULE\/ERROR {2,}STATUS {2,}MS$/)
    const starts = (line: string) => [...line.matchAll(/(?:^| {2})(\S)/g)].map((m) => (m.index ?? 0) + m[0].length - 1)
    const header = starts(lines[0] ?? '')
    for (const line of lines.slice(1)) {
      // Cells contain single spaces ("GET /user"), so compare where each header column starts.
      for (const col of header) expect(line[col - 1] === ' ' || col === 0, `${line} @${col}`).toBe(true)
    }
    expect(lines).toHaveLength(6)
  })

  test('control characters in a field are escaped, not printed', () => {
    const row = auditRow({ time: 't', type: 'tool.call', method: 'GET', path: '/a\nb\u001b[31m' })
    expect(row[4]).toBe('GET /a\\x0ab\\x1b[31m')
  })
})
