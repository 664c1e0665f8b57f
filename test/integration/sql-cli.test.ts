import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import type { CliIo } from '../../tools/cli.js'
import { createSqlCommand, run } from '../../tools/sql.js'

const FIXTURE = path.join(import.meta.dirname, '../fixtures/config/sql/commented.yaml')
const dirs: string[] = []

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

/** A working directory holding a copy of the fixture at the default place, config/connections.yaml. */
async function workspace(): Promise<{ cwd: string; file: string; original: string }> {
  const cwd = await mkdtemp(path.join(tmpdir(), 'keyway-sql-'))
  dirs.push(cwd)
  await mkdir(path.join(cwd, 'config'))
  const file = path.join(cwd, 'config', 'connections.yaml')
  await cp(FIXTURE, file)
  return { cwd, file, original: await readFile(file, 'utf8') }
}

interface Run {
  code: number
  out: string[]
  err: string[]
}

/** Runs `keyway sql` in-process; env has none of the fixture's secrets on purpose. */
async function sql(cwd: string, argv: string[], env: Record<string, string> = {}, command = run): Promise<Run> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env, cwd }
  const code = await command(argv, io)
  return { code, out, err }
}

/** Lines of `after` that are not in `before` and the other way round (small files, exact lines). */
function changedLines(before: string, after: string): { removed: string[]; added: string[] } {
  const a = before.split('\n')
  const b = after.split('\n')
  let head = 0
  while (head < a.length && head < b.length && a[head] === b[head]) head++
  let tail = 0
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++
  return { removed: a.slice(head, a.length - tail), added: b.slice(head, b.length - tail) }
}

describe('keyway sql: edits', () => {
  test('GRANT edits the file, prints one line, and records grant.changed in the audit log', async () => {
    const { cwd, file, original } = await workspace()
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION my_github_conn TO `ops`;'])
    expect(r).toEqual({ code: 0, out: ['granted USE CONNECTION on my_github_conn to group ops (config/connections.yaml updated)'], err: [] })
    const after = await readFile(file, 'utf8')
    expect(changedLines(original, after)).toEqual({
      removed: [],
      added: ['  - privilege: USE CONNECTION', '    on: my_github_conn', '    to: { group: ops }'],
    })
    const audit = (await readFile(path.join(cwd, 'config', 'data', 'audit.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(audit).toEqual([{ time: expect.any(String), type: 'grant.changed', statement: 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO `ops`;', file }])
    expect(await readdir(path.join(cwd, 'config'))).toEqual(['connections.yaml', 'data'])
  })

  test('a duplicate GRANT is a no-op: exit 0, the file not even rewritten', async () => {
    const { cwd, file } = await workspace()
    const before = await stat(file)
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION my_github_conn TO GROUP `data-engineering`'])
    expect(r).toEqual({ code: 0, out: ['group data-engineering already holds USE CONNECTION on my_github_conn; nothing changed'], err: [] })
    const after = await stat(file)
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs])
  })

  test('GRANT to the owner is a no-op that says why', async () => {
    const { cwd } = await workspace()
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION my_github_conn TO `admin@example.com`'])
    expect(r.code).toBe(0)
    expect(r.out).toEqual(['user admin@example.com owns my_github_conn and so already holds USE CONNECTION on it; nothing changed'])
  })

  test('REVOKE of a user still allowed through a config group prints a note', async () => {
    const { cwd, file, original } = await workspace()
    const r = await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM `alice@example.com`'])
    expect(r).toEqual({
      code: 0,
      out: [
        'revoked USE CONNECTION on my_github_conn from user alice@example.com (config/connections.yaml updated)',
        'note: user alice@example.com still holds USE CONNECTION on my_github_conn through group data-engineering',
      ],
      err: [],
    })
    expect(changedLines(original, await readFile(file, 'utf8'))).toEqual({
      removed: ['  - { privilege: USE CONNECTION, on: my_github_conn, to: { user: alice@example.com } }'],
      added: [],
    })
  })

  test("the note also knows the groups of the user's API keys", async () => {
    const { cwd } = await workspace()
    expect((await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION internal_api TO `alice@example.com`'])).code).toBe(0)
    const r = await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION internal_api FROM `alice@example.com`'])
    expect(r.out[1]).toBe('note: user alice@example.com still holds USE CONNECTION on internal_api through group laptops (a group of its API key)')
  })

  test('REVOKE of the owner is refused and points to ALTER CONNECTION ... OWNER TO', async () => {
    const { cwd, file, original } = await workspace()
    const r = await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM `admin@example.com`'])
    expect(r.code).toBe(1)
    expect(r.out).toEqual([])
    expect(r.err).toEqual([
      'keyway sql: cannot revoke USE CONNECTION on my_github_conn from user admin@example.com: it owns my_github_conn, and the owner always holds USE CONNECTION; ' +
        'transfer ownership first with ALTER CONNECTION my_github_conn OWNER TO `new-owner`',
    ])
    expect(await readFile(file, 'utf8')).toBe(original)
  })

  test('REVOKE of a grant that does not exist: exit 1, with the other principal type as a hint', async () => {
    const { cwd } = await workspace()
    const none = await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION google_drive FROM `bob@example.com`'])
    expect(none).toEqual({
      code: 1,
      out: [],
      err: [
        'keyway sql: user bob@example.com holds no grant of USE CONNECTION on google_drive; nothing revoked',
        'note: user bob@example.com holds USE CONNECTION on google_drive through group data-engineering, its owner',
      ],
    })
    await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION internal_api TO GROUP `ops@corp`'])
    const other = await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION internal_api FROM `ops@corp`'])
    expect(other.code).toBe(1)
    expect(other.err[0]).toBe(
      'keyway sql: user ops@corp holds no grant of USE CONNECTION on internal_api; nothing revoked (there is one to group ops@corp: REVOKE USE CONNECTION ON CONNECTION internal_api FROM GROUP `ops@corp`)',
    )
  })

  test('ALTER CONNECTION ... OWNER TO changes one line and warns when the old owner loses access', async () => {
    const { cwd, file, original } = await workspace()
    const r = await sql(cwd, ['ALTER CONNECTION my_github_conn OWNER TO GROUP `platform`'])
    expect(r).toEqual({
      code: 0,
      out: [
        'changed the owner of my_github_conn from user admin@example.com to group platform (config/connections.yaml updated)',
        'note: user admin@example.com no longer holds USE CONNECTION on my_github_conn; to keep its access: GRANT USE CONNECTION ON CONNECTION my_github_conn TO USER `admin@example.com`',
      ],
      err: [],
    })
    expect(changedLines(original, await readFile(file, 'utf8'))).toEqual({
      removed: ['    owner: { user: admin@example.com }   # the owner always holds USE CONNECTION'],
      added: ['    owner: { group: platform }   # the owner always holds USE CONNECTION'],
    })
    // The new owner may not be revoked; the old one can now be granted.
    expect((await sql(cwd, ['REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM GROUP `platform`'])).code).toBe(1)
    expect((await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION my_github_conn TO USER `admin@example.com`'])).code).toBe(0)
  })

  test('the old-owner note appears only when the old owner is left without access', async () => {
    const { cwd } = await workspace()
    const r = await sql(cwd, ['ALTER CONNECTION google_drive OWNER TO `carol@example.com`'])
    expect(r.code).toBe(0)
    expect(r.out).toEqual([
      'changed the owner of google_drive from group data-engineering to user carol@example.com (config/connections.yaml updated)',
      'note: group data-engineering no longer holds USE CONNECTION on google_drive; to keep its access: GRANT USE CONNECTION ON CONNECTION google_drive TO GROUP `data-engineering`',
    ])
    const again = await sql(cwd, ['ALTER CONNECTION my_github_conn OWNER TO `alice@example.com`'])
    // admin@example.com had only ownership: a note. (alice keeps a grant of her own either way.)
    expect(again.out).toHaveLength(2)
    const back = await sql(cwd, ['ALTER CONNECTION my_github_conn OWNER TO `bob@example.com`'])
    // alice, the previous owner, still holds a grant: no note.
    expect(back.out).toEqual(['changed the owner of my_github_conn from user alice@example.com to user bob@example.com (config/connections.yaml updated)'])
  })

  test('an edit that would make the file invalid is refused with the problems; nothing is written', async () => {
    const { cwd, file, original } = await workspace()
    const long = 'g'.repeat(300)
    const r = await sql(cwd, [`GRANT USE CONNECTION ON CONNECTION my_github_conn TO \`${long}\``])
    expect(r.code).toBe(1)
    expect(r.err[0]).toBe('keyway sql: refused: after this change config/connections.yaml would have 1 problem; nothing was written:')
    expect(r.err[1]).toMatch(/^ {2}\/.*\/config\/connections\.yaml:\d+ grants\[5\]\.to\.group: Too big/)
    expect(await readFile(file, 'utf8')).toBe(original)
  })

  test('a file that already has problems is reported and left alone', async () => {
    const { cwd, file } = await workspace()
    const broken = (await readFile(file, 'utf8')).replace('    isMcpConnection: false\n', '    isMcpConnection: false\n    colour: blue\n')
    await writeFile(file, broken)
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION internal_api TO `ops`'])
    expect(r.code).toBe(1)
    expect(r.err[0]).toBe('keyway sql: config/connections.yaml has 1 problem; fix it first (nothing was done):')
    expect(r.err[1]).toMatch(/connections\.yaml:\d+ connections\.internal_api\.colour: unknown key$/)
    expect(await readFile(file, 'utf8')).toBe(broken)
  })

  test('an unknown connection: exit 1', async () => {
    const { cwd } = await workspace()
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION nope TO `ops`'])
    expect(r).toEqual({ code: 1, out: [], err: ['keyway sql: unknown connection "nope" in config/connections.yaml (SHOW CONNECTIONS lists them)'] })
  })

  test('a symlinked config is written through; the link stays a link', async () => {
    const { cwd, file, original } = await workspace()
    const real = path.join(cwd, 'managed', 'connections.yaml')
    await mkdir(path.dirname(real))
    await cp(file, real)
    await rm(file)
    await symlink('../managed/connections.yaml', file)
    const r = await sql(cwd, ['GRANT USE CONNECTION ON CONNECTION internal_api TO `ops`'])
    expect(r.code).toBe(0)
    expect((await lstat(file)).isSymbolicLink()).toBe(true)
    expect(changedLines(original, await readFile(real, 'utf8')).added).toEqual([
      '  - privilege: USE CONNECTION',
      '    on: internal_api',
      '    to: { group: ops }',
    ])
  })
})

describe('keyway sql: syntax errors and usage', () => {
  test('a syntax error prints the statement with a caret and exits 2; nothing is read or written', async () => {
    const { cwd, file, original } = await workspace()
    const r = await sql(cwd, ['GRANT USE CONNECTION ON my_github_conn TO `ops`'])
    expect(r).toEqual({
      code: 2,
      out: [],
      err: [
        'keyway sql: syntax error: expected CONNECTION after ON',
        '  GRANT USE CONNECTION ON my_github_conn TO `ops`',
        '                          ^^^^^^^^^^^^^^',
      ],
    })
    expect(await readFile(file, 'utf8')).toBe(original)
  })

  test('unquoted words are joined into one statement', async () => {
    const { cwd } = await workspace()
    const r = await sql(cwd, ['SHOW', 'CONNECTIONS'])
    expect(r.code).toBe(0)
  })

  test('no statement: usage, exit 2; --help: usage, exit 0; an unknown option: exit 2', async () => {
    const { cwd } = await workspace()
    const none = await sql(cwd, [])
    expect(none.code).toBe(2)
    expect(none.err[0]).toMatch(/^usage: keyway sql/)
    const help = await sql(cwd, ['--help'])
    expect(help.code).toBe(0)
    expect(help.out[0]).toMatch(/^usage: keyway sql/)
    expect((await sql(cwd, ['--nope', 'SHOW CONNECTIONS'])).code).toBe(2)
  })

  test('--config and KEYWAY_CONFIG choose the file; a missing file is exit 1', async () => {
    const { cwd, file } = await workspace()
    const other = path.join(cwd, 'other.yaml')
    await cp(file, other)
    await rm(file)
    expect((await sql(cwd, ['--config', 'other.yaml', 'SHOW CONNECTIONS'])).code).toBe(0)
    expect((await sql(cwd, ['SHOW CONNECTIONS'], { KEYWAY_CONFIG: other })).code).toBe(0)
    const missing = await sql(cwd, ['SHOW CONNECTIONS'])
    expect(missing).toEqual({ code: 1, out: [], err: [`keyway sql: ${file}: file not found`] })
  })
})

describe('keyway sql: SHOW and DESCRIBE', () => {
  test('SHOW GRANTS ON CONNECTION', async () => {
    const { cwd } = await workspace()
    expect(await sql(cwd, ['show grants on connection my_github_conn'])).toEqual({
      code: 0,
      out: [
        'principal          type   privilege       source',
        '-----------------  -----  --------------  ------',
        'admin@example.com  user   USE CONNECTION  owner',
        'data-engineering   group  USE CONNECTION  grant',
        'alice@example.com  user   USE CONNECTION  grant',
      ],
      err: [],
    })
  })

  test('SHOW CONNECTIONS', async () => {
    const { cwd } = await workspace()
    // The fixture's SQLite store file does not exist: nothing is stored (and looking creates nothing).
    expect((await sql(cwd, ['SHOW CONNECTIONS'])).out).toEqual([
      'name            url                                   auth                owner                   mcp_tool  grants  credentials',
      '--------------  ------------------------------------  ------------------  ----------------------  --------  ------  -------------------------------------------------------',
      'google_drive    https://www.googleapis.com/drive/v3/  oauth_u2m_per_user  group data-engineering  yes       1       no user connected yet (each user consents at first use)',
      'internal_api    https://api.example.com/              bearer_token        group platform          no        2       static secret',
      'my_github_conn  https://api.github.com/               bearer_token        user admin@example.com  yes       2       static secret',
    ])
    expect(await readdir(path.join(cwd, 'config'))).toEqual(['connections.yaml'])
  })

  test('DESCRIBE CONNECTION shows references, never secret values [secret:never-logged]', async () => {
    const { cwd } = await workspace()
    const env = { GITHUB_TOKEN: 'ghp_CANARY', GDRIVE_CLIENT_SECRET: 'CANARY_SECRET' }
    const r = await sql(cwd, ['DESCRIBE CONNECTION google_drive'], env)
    expect(r.code).toBe(0)
    expect(r.out).toContain('client_secret           { env: GDRIVE_CLIENT_SECRET }')
    expect(r.out).toContain('token_endpoint          https://oauth2.googleapis.com/token')
    const gh = await sql(cwd, ['DESCRIBE CONNECTION my_github_conn'], env)
    expect(gh.out).toContain('token               { env: GITHUB_TOKEN }')
    expect(JSON.stringify([r, gh])).not.toMatch(/CANARY/)
  })

  test('the credential-state seam adds a line to DESCRIBE', async () => {
    const { cwd } = await workspace()
    const command = createSqlCommand({ credentialState: async (c) => (c === 'google_drive' ? 'tokens stored for 2 users' : undefined) })
    const r = await sql(cwd, ['DESCRIBE CONNECTION google_drive'], {}, command)
    expect(r.out.at(-1)).toBe('credentials             tokens stored for 2 users')
  })

  test('SHOW GRANTS / DESCRIBE of an unknown connection: exit 1', async () => {
    const { cwd } = await workspace()
    expect((await sql(cwd, ['SHOW GRANTS ON CONNECTION nope'])).code).toBe(1)
    expect((await sql(cwd, ['DESCRIBE CONNECTION nope'])).err).toEqual([
      'keyway sql: unknown connection "nope" in config/connections.yaml (SHOW CONNECTIONS lists them)',
    ])
  })
})
