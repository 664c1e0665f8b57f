/**
 * `keyway audit` end to end: the command run in-process through the CLI I/O seam against a config
 * whose `audit.file` is a fixture log (truncated last line included), and once as the built bin.
 */
import { describe, expect, test } from 'vitest'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { run } from '../../tools/audit.js'
import type { CliIo } from '../../tools/cli.js'
import { writeTempConfig } from '../helpers/config.js'
import { runKeyway } from '../helpers/spawn-keyway.js'

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../unit/admin/audit-read-fixture.jsonl')

// The bearer token names an env var that is never set: `keyway audit` must not need secrets.
const CONFIG = `version: 1
audit: { file: ./logs/audit.jsonl }
connections:
  github:
    host: https://api.github.com
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: NEVER_SET_GITHUB_TOKEN } }
`

async function setup(log?: string): Promise<{ file: string; logFile: string }> {
  const { dir, file } = await writeTempConfig(CONFIG)
  const logFile = path.join(dir, 'logs', 'audit.jsonl')
  await mkdir(path.dirname(logFile), { recursive: true })
  if (log === undefined) await copyFile(FIXTURE, logFile)
  else await writeFile(logFile, log)
  return { file, logFile }
}

async function audit(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env: {}, cwd: process.cwd() }
  const code = await run(argv, io)
  return { code, out, err }
}

describe('keyway audit', () => {
  test('prints an aligned table of every record; the truncated last line is skipped quietly', async () => {
    const { file } = await setup()
    const r = await audit(['--config', file])
    expect(r.code).toBe(0)
    expect(r.err).toEqual([])
    expect(r.out).toHaveLength(12)
    expect(r.out[0]).toMatch(/^TIME +TYPE +USER +CONNECTION +REQUEST +DECISION +RULE\/ERROR +STATUS +MS$/)
    expect(r.out[3]).toMatch(
      /^2026-11-28T09:06:00\.000Z +tool\.call +bob@example\.com +github +POST \/repos\/o\/r\/issues +allow +grant to group data-engineering +201 +120$/,
    )
    const userColumn = r.out[0]?.indexOf('USER')
    for (const line of r.out.slice(1)) expect(line[(userColumn ?? 0) - 1]).toBe(' ')
  })

  test('--user, --connection, --decision, --type and --since (ISO) filter; --json prints the records as JSON lines', async () => {
    const { file } = await setup()
    const r = await audit([
      '--config',
      file,
      '--json',
      '--connection',
      'github',
      '--decision',
      'deny',
      '--type',
      'tool.call',
      '--since',
      '2026-11-28T09:00:00Z',
    ])
    expect(r.code).toBe(0)
    const recs = r.out.map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(recs.map((x) => x.user)).toEqual(['carol@example.com', 'bob@example.com'])
    expect(recs[1]).toEqual({
      time: '2026-11-28T10:01:00.000Z',
      type: 'tool.call',
      user: 'bob@example.com',
      via: 'oidc',
      connection: 'github',
      method: 'GET',
      path: '/repos/o/r',
      decision: 'deny',
      error: 'PERMISSION_DENIED',
      durationMs: 0,
    })
    const bob = await audit(['--config', file, '--json', '--user', 'bob@example.com'])
    expect(bob.out).toHaveLength(2)
    const families = await audit(['--config', file, '--json', '--type', 'config,grant.changed'])
    expect(families.out.map((l) => (JSON.parse(l) as { type: string }).type)).toEqual(['config.reloaded', 'grant.changed', 'config.rejected'])
  })

  test('--since with a relative duration counts back from now', async () => {
    const now = Date.now()
    const line = (ago: number, user: string) =>
      JSON.stringify({ time: new Date(now - ago).toISOString(), type: 'tool.call', user, connection: 'github', decision: 'allow' })
    const { file } = await setup(`${line(3 * 3_600_000, 'old@example.com')}\n${line(20 * 60_000, 'recent@example.com')}\n${line(1_000, 'now@example.com')}\n`)
    const r = await audit(['--config', file, '--json', '--since', '30m'])
    expect(r.out.map((l) => (JSON.parse(l) as { user: string }).user)).toEqual(['recent@example.com', 'now@example.com'])
    expect((await audit(['--config', file, '--json', '--since', '1h'])).out).toHaveLength(2)
    expect((await audit(['--config', file, '--json', '--since', '1d'])).out).toHaveLength(3)
  })

  test('no match says so on stderr; unreadable lines in the middle are counted', async () => {
    const { file, logFile } = await setup(
      '{"time":"2026-11-28T00:00:00Z","type":"tool.call","user":"a"}\ngarbage\n{"time":"2026-11-28T00:00:01Z","type":"tool.call","user":"b"}\n',
    )
    const r = await audit(['--config', file, '--user', 'nobody'])
    expect(r).toEqual({ code: 0, out: [], err: ['keyway: no matching audit records', `keyway: warning: skipped 1 unreadable line in ${logFile}`] })
  })

  test.each([
    [['--since', 'yesterday'], 'keyway: --since must be a duration such as 30m, 1h, 2d or an ISO date, not "yesterday"'],
    [['--decision', 'maybe'], 'keyway: --decision must be allow or deny, not "maybe"'],
  ])('bad option %j: exit 2 with a message naming it', async (args, message) => {
    const { file } = await setup()
    expect(await audit(['--config', file, ...args])).toEqual({ code: 2, out: [], err: [message] })
  })

  test('a log that does not exist yet: exit 1, naming the file and where it is configured', async () => {
    const { file } = await writeTempConfig(CONFIG)
    const r = await audit(['--config', file])
    expect(r.code).toBe(1)
    expect(r.err).toEqual([`keyway: audit log ${path.join(path.dirname(file), 'logs', 'audit.jsonl')} does not exist yet (audit.file in ${file})`])
  })

  test('an invalid config is reported as keyway validate reports it', async () => {
    const { file } = await writeTempConfig('version: 1\ncolour: blue\n')
    const r = await audit(['--config', file])
    expect(r).toEqual({ code: 1, out: [], err: [`keyway: ${file} has 1 problem:`, `  ${file}:2 colour: unknown key`] })
  })

  test('the built bin: keyway audit --user bob@example.com', async () => {
    const { file } = await setup()
    const r = await runKeyway(['audit', '--config', file, '--user', 'bob@example.com'])
    expect(r.code).toBe(0)
    const lines = r.stdout.trimEnd().split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[2]).toMatch(/bob@example\.com +github +GET \/repos\/o\/r +deny +PERMISSION_DENIED/)
  })
})
