/**
 * Attack suite, the audit trail: what a caller writes into an audit line (a request path above
 * all) cannot act on the terminal of whoever reads it with `keyway audit` or `tail`, and the log
 * file is private to its owner even when it existed before with looser permissions.
 * @module
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { isAppError } from '../../src/errors.js'
import { run } from '../../tools/audit.js'
import type { CliIo } from '../../tools/cli.js'
import { writeTempConfig } from '../helpers/config.js'

/** Each row: a character a terminal would act on, as a caller could put it into a path. */
const UNSAFE: readonly [string, string][] = [
  ['ESC (starts ANSI escape sequences)', '\u001b[2J'],
  ['newline (a forged second row)', '\n2026-01-01T00:00:00.000Z  tool.call  admin@example.com'],
  ['carriage return', '\r'],
  ['C1 CSI (8-bit escape sequence)', '\u009b31m'],
  ['C1 NEL (next line)', '\u0085'],
  ['RIGHT-TO-LEFT OVERRIDE', '\u202e'],
  ['LEFT-TO-RIGHT EMBEDDING', '\u202a'],
  ['FIRST STRONG ISOLATE', '\u2068'],
  ['POP DIRECTIONAL ISOLATE', '\u2069'],
  ['RIGHT-TO-LEFT MARK', '\u200f'],
  ['ARABIC LETTER MARK', '\u061c'],
  ['LINE SEPARATOR', '\u2028'],
  ['DEL', '\u007f'],
]
const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/

async function setup(): Promise<{ config: string; logFile: string }> {
  const { dir, file } = await writeTempConfig(`version: 1
audit: { file: ./logs/audit.jsonl }
`)
  return { config: file, logFile: path.join(dir, 'logs', 'audit.jsonl') }
}

async function audit(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env: {}, cwd: process.cwd() }
  return { code: await run(argv, io), out, err }
}

describe('caller text in the audit log cannot act on a terminal [audit:terminal-safe]', () => {
  for (const [what, text] of UNSAFE) {
    test(`${what}: escaped in the file, in the table and in --json output`, async () => {
      const { config, logFile } = await setup()
      const log = createAuditLog(logFile)
      const evil = `/repos/${text}/issues`
      log.record({
        type: 'tool.call',
        user: 'mallory@example.com',
        via: 'api_key',
        connection: 'gh',
        method: 'GET',
        path: evil,
        decision: 'allow',
        status: 200,
        durationMs: 1,
      })
      await log.close()
      const raw = await readFile(logFile, 'utf8')
      expect(raw.trimEnd().split('\n')).toHaveLength(1)
      expect(raw.trimEnd()).not.toMatch(TERMINAL_UNSAFE)
      // Still the same JSON value: nothing was lost, only escaped.
      expect(JSON.parse(raw).path).toBe(evil)

      const table = await audit(['--config', config])
      expect(table.code).toBe(0)
      expect(table.out).toHaveLength(2)
      for (const line of table.out) expect(line).not.toMatch(TERMINAL_UNSAFE)
      expect(table.out[1]).toContain('/repos/\\')

      const json = await audit(['--config', config, '--json'])
      expect(json.out).toHaveLength(1)
      expect(json.out[0]).not.toMatch(TERMINAL_UNSAFE)
      expect(JSON.parse(json.out[0] ?? '').path).toBe(evil)
    })
  }
})

describe('the audit file is private [audit:file-0600]', () => {
  test('a new file is created 0600', async () => {
    const { logFile } = await setup()
    const log = createAuditLog(logFile)
    await log.close()
    expect((await stat(logFile)).mode & 0o777).toBe(0o600)
  })

  test('an existing file with mode 0644 is tightened to 0600 and appended to, not replaced', async () => {
    const { logFile } = await setup()
    await mkdir(path.dirname(logFile), { recursive: true })
    await writeFile(logFile, '{"time":"2026-01-01T00:00:00.000Z","type":"config.reloaded","file":"x"}\n')
    await chmod(logFile, 0o644)
    const log = createAuditLog(logFile)
    log.record({ type: 'config.reloaded', file: 'y' })
    await log.close()
    expect((await stat(logFile)).mode & 0o777).toBe(0o600)
    expect((await readFile(logFile, 'utf8')).trimEnd().split('\n')).toHaveLength(2)
  })

  test('a path that is not a regular file stops start-up with the reason', async () => {
    const { logFile } = await setup()
    await mkdir(logFile, { recursive: true })
    let error: unknown
    try {
      createAuditLog(logFile)
    } catch (e) {
      error = e
    }
    expect(isAppError(error, 'CONFIG_INVALID')).toBe(true)
    expect((error as Error).message).toMatch(/^audit\.file \S+ cannot be opened for writing \(EISDIR\)$|is not a regular file$/)
  })
})
