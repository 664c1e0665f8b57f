/**
 * `keyway credentials`, `keyway validate`, `keyway sql` SHOW/DESCRIBE and the reload of `keyway
 * serve`, against a real SQLite token store in a temporary folder whose records are written
 * through the real TokenStore, and an audit log fixture for last use. The commands run
 * in-process through the CLI I/O seam; the reload runs the built bin. Every output is checked
 * for token and secret values.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { NO_REFRESH_TOKEN_WARNING } from '../../src/credentials/token-record.js'
import { openTokenStore, type TokenRecord, type TokenRef, type TokenStore } from '../../src/store/index.js'
import type { CliIo, Command } from '../../tools/cli.js'
import { run as credentials } from '../../tools/credentials.js'
import { run as sql } from '../../tools/sql.js'
import { run as validate } from '../../tools/validate.js'
import { spawnKeyway } from '../helpers/spawn-keyway.js'

const MIN = 60_000
const KEY = randomBytes(32).toString('base64')
const ENV = { KEYWAY_ENCRYPTION_KEY: KEY, GH_TOKEN: 'ghp_CANARY_bearer_value', CLIENT_SECRET: 'CANARY_client_secret_value' }
const dirs: string[] = []

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

const OAUTH = `authorizationEndpoint: https://idp.example.com/authorize
      tokenEndpoint: https://idp.example.com/token
      clientId: keyway
      clientSecret: { env: CLIENT_SECRET }`

const oauthConnection = (name: string, type: string): string => `  ${name}:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: ${type}
      ${OAUTH}${type === 'oauth_u2m_per_user' ? '\n      accountMatch: { claim: email }' : ''}
`

interface ConfigOptions {
  readonly legacy?: boolean
  readonly crmType?: string
  readonly store?: string
}

/** gh (bearer), svc (m2m), crm (shared), drive (per-user) and, unless removed, legacy_drive (per-user). */
function configText(o: ConfigOptions = {}): string {
  return `version: 1
server: { publicUrl: http://127.0.0.1:8787, host: 127.0.0.1, port: 0 }
store: ${o.store ?? '{ url: "sqlite://./data/keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }'}
audit: { file: ./data/audit.jsonl }
connections:
  gh:
    host: https://api.github.com
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: GH_TOKEN } }
${oauthConnection('svc', 'oauth_m2m')}${oauthConnection('crm', o.crmType ?? 'oauth_u2m_shared')}${oauthConnection('drive', 'oauth_u2m_per_user')}${o.legacy === false ? '' : oauthConnection('legacy_drive', 'oauth_u2m_per_user')}`
}

interface Workspace {
  readonly dir: string
  readonly file: string
  readonly t0: number
  /** Every token value written to the store. */
  readonly tokens: string[]
  readonly iso: (msAgo: number) => string
}

let serial = 0
function record(method: TokenRecord['method'], tokens: string[], over: Partial<TokenRecord> = {}, refresh = method !== 'oauth_m2m'): TokenRecord {
  const n = ++serial
  const at = `CANARY_access_${n}_${randomBytes(6).toString('hex')}`
  const rt = `CANARY_refresh_${n}_${randomBytes(6).toString('hex')}`
  tokens.push(at, ...(refresh ? [rt] : []))
  return {
    method,
    accessToken: at,
    ...(refresh ? { refreshToken: rt } : {}),
    tokenType: 'bearer',
    obtainedAt: Date.now() - 90 * MIN,
    expiresAt: Date.now() + 42 * MIN,
    ...over,
  }
}

/** Opens the workspace's store the way the server does (from the loaded config). */
async function openStore(file: string, env: Record<string, string> = ENV): Promise<TokenStore> {
  const r = await loadConfigFile(file, { env })
  if (!r.ok) throw new Error(r.problems.join('\n'))
  return openTokenStore(r.snapshot.store, { warn: () => {} })
}

async function workspace(): Promise<Workspace> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-credentials-'))
  dirs.push(dir)
  const file = path.join(dir, 'connections.yaml')
  await writeFile(file, configText())
  const t0 = Date.now()
  const iso = (msAgo: number): string => new Date(t0 - msAgo).toISOString()
  const tokens: string[] = []
  const store = await openStore(file)
  try {
    const put = (ref: TokenRef, rec: TokenRecord): Promise<void> => store.putToken(ref, rec)
    await put({ connection: 'svc', user: null }, record('oauth_m2m', tokens))
    await put({ connection: 'crm', user: null }, record('oauth_u2m_shared', tokens, { lastRefreshAt: t0 - 5 * MIN, subject: 'owner-sub' }))
    await put({ connection: 'drive', user: 'alice@example.com' }, record('oauth_u2m_per_user', tokens))
    await put({ connection: 'drive', user: 'bob@example.com' }, record('oauth_u2m_per_user', tokens, { warnings: [NO_REFRESH_TOKEN_WARNING] }, false))
    await put({ connection: 'legacy_drive', user: 'alice@example.com' }, record('oauth_u2m_per_user', tokens))
    await put({ connection: 'legacy_drive', user: 'carol@example.com' }, record('oauth_u2m_per_user', tokens))
  } finally {
    await store.close()
  }
  const call = (msAgo: number, connection: string, user: string, authMethod: string, fields: Record<string, unknown>): string =>
    JSON.stringify({ time: iso(msAgo), type: 'tool.call', user, via: 'api_key', connection, method: 'GET', path: '/x', authMethod, durationMs: 3, ...fields })
  const allow = { decision: 'allow', rule: 'owner', status: 200 }
  await mkdir(path.join(dir, 'data'), { recursive: true })
  await writeFile(
    path.join(dir, 'data', 'audit.jsonl'),
    [
      call(50 * MIN, 'drive', 'alice@example.com', 'oauth_u2m_per_user', allow),
      call(20 * MIN, 'drive', 'alice@example.com', 'oauth_u2m_per_user', allow),
      call(40 * MIN, 'drive', 'bob@example.com', 'oauth_u2m_per_user', allow),
      // Allowed, but no token was sent: not a use.
      call(10 * MIN, 'drive', 'bob@example.com', 'oauth_u2m_per_user', { decision: 'allow', rule: 'owner', error: 'CONSENT_REQUIRED' }),
      call(30 * MIN, 'crm', 'bob@example.com', 'oauth_u2m_shared', allow),
      call(15 * MIN, 'crm', 'alice@example.com', 'oauth_u2m_shared', allow),
      call(5 * MIN, 'gh', 'carol@example.com', 'bearer_token', allow),
      call(1 * MIN, 'gh', 'dave@example.com', 'bearer_token', { decision: 'deny', error: 'PERMISSION_DENIED' }),
      call(60 * MIN, 'legacy_drive', 'alice@example.com', 'oauth_u2m_per_user', allow),
      JSON.stringify({ time: iso(2 * MIN), type: 'config.reloaded', file, connections: 5, grants: 0 }),
    ].join('\n') + '\n',
  )
  return { dir, file, t0, tokens, iso }
}

interface Run {
  readonly code: number
  readonly out: string[]
  readonly err: string[]
}

async function runCommand(command: Command, argv: string[], env: Record<string, string> = ENV, cwd = process.cwd()): Promise<Run> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env, cwd }
  const code = await command(argv, io)
  return { code, out, err }
}

/** No token and no secret value of the workspace anywhere in `text`. */
function expectNoSecret(ws: Workspace, text: string): void {
  expect(ws.tokens.length).toBeGreaterThan(0)
  for (const secret of [...ws.tokens, ENV.GH_TOKEN, ENV.CLIENT_SECRET, KEY]) expect(text).not.toContain(secret)
  expect(text).not.toMatch(/CANARY/)
}

const all = (r: Run): string => [...r.out, ...r.err].join('\n')
const json = (r: Run): Record<string, unknown>[] => r.out.map((l) => JSON.parse(l) as Record<string, unknown>)
const key = (row: Record<string, unknown>): string => `${String(row.connection)}/${typeof row.user === 'string' ? row.user : '-'}`

async function storedRefs(file: string): Promise<string[]> {
  const store = await openStore(file)
  try {
    const refs: string[] = []
    for await (const { ref } of store.listTokens()) refs.push(`${ref.connection}/${ref.user ?? '-'}`)
    return refs.sort()
  } finally {
    await store.close()
  }
}

describe('keyway credentials', () => {
  test('lists every auth method: stored m2m, shared and per-user tokens and the bearer_token connection from the config; last use from the audit log [cli:credentials] [secret:never-logged]', async () => {
    const ws = await workspace()
    const r = await runCommand(credentials, ['--config', ws.file])
    expect(r.code).toBe(0)
    expect(r.err).toEqual([])
    expect(r.out[0]).toMatch(/^CONNECTION\s+USER\s+METHOD\s+EXPIRES\s+REFRESHABLE\s+LAST REFRESH\s+LAST USE\s+SOURCE\s+WARNINGS$/)
    const rows = r.out.slice(1)
    expect(rows.map((l) => l.split(/\s+/).slice(0, 3).join(' '))).toEqual([
      'crm (shared) oauth_u2m_shared',
      'drive alice@example.com oauth_u2m_per_user',
      'drive bob@example.com oauth_u2m_per_user',
      'gh (shared) bearer_token',
      'legacy_drive alice@example.com oauth_u2m_per_user',
      'legacy_drive carol@example.com oauth_u2m_per_user',
      'svc (shared) oauth_m2m',
    ])
    const span = String.raw`\S+ \((?:in \d+[smhd]|\d+[smhd] ago)\)`
    expect(r.out).toContainEqual(
      expect.stringMatching(new RegExp(`^gh\\s+\\(shared\\)\\s+bearer_token\\s+-\\s+no\\s+-\\s+${span}\\s+config secret \\{ env: GH_TOKEN \\}$`)),
    )
    expect(r.out).toContainEqual(
      expect.stringMatching(new RegExp(`^crm\\s+\\(shared\\)\\s+oauth_u2m_shared\\s+${span}\\s+yes\\s+${span}\\s+${span}\\s+store$`)),
    )
    expect(r.out).toContainEqual(expect.stringMatching(new RegExp(`^svc\\s+\\(shared\\)\\s+oauth_m2m\\s+${span}\\s+yes\\s+never\\s+never\\s+store$`)))
    expect(r.out).toContainEqual(
      expect.stringMatching(
        new RegExp(`^drive\\s+bob@example\\.com\\s+oauth_u2m_per_user\\s+${span}\\s+NO\\s+never\\s+${span}\\s+store\\s+WARNING: no refresh token was issued`),
      ),
    )

    const j = await runCommand(credentials, ['--config', ws.file, '--json'])
    expect(j.code).toBe(0)
    const byKey = Object.fromEntries(json(j).map((row) => [key(row), row]))
    expect(Object.keys(byKey)).toHaveLength(7)
    expect(byKey['gh/-']).toEqual({
      connection: 'gh',
      user: null,
      method: 'bearer_token',
      source: 'config secret { env: GH_TOKEN }',
      expiresAt: null,
      refreshable: false,
      obtainedAt: null,
      lastRefreshAt: null,
      lastUsedAt: ws.iso(5 * MIN),
      subject: null,
      scope: null,
      orphaned: null,
      warnings: [],
    })
    expect(byKey['crm/-']).toMatchObject({
      method: 'oauth_u2m_shared',
      refreshable: true,
      subject: 'owner-sub',
      lastRefreshAt: new Date(ws.t0 - 5 * MIN).toISOString(),
      lastUsedAt: ws.iso(15 * MIN),
      source: 'store',
    })
    // Per-user: that user's own calls only; bob's later call that needed consent sent no token.
    expect(byKey['drive/alice@example.com']?.lastUsedAt).toBe(ws.iso(20 * MIN))
    expect(byKey['drive/bob@example.com']).toMatchObject({ lastUsedAt: ws.iso(40 * MIN), refreshable: false, warnings: [NO_REFRESH_TOKEN_WARNING] })
    expect(byKey['legacy_drive/carol@example.com']?.lastUsedAt).toBeNull()
    expect(byKey['svc/-']).toMatchObject({ method: 'oauth_m2m', refreshable: true, lastUsedAt: null, orphaned: null })
    expectNoSecret(ws, all(r) + all(j))
  })

  test('--connection and --user narrow the list; without an audit log last use is "unknown", with a note', async () => {
    const ws = await workspace()
    const drive = await runCommand(credentials, ['--config', ws.file, '--connection', 'drive', '--json'])
    expect(json(drive).map(key)).toEqual(['drive/alice@example.com', 'drive/bob@example.com'])
    const alice = await runCommand(credentials, ['--config', ws.file, '--user', 'alice@example.com', '--json'])
    expect(json(alice).map(key)).toEqual(['drive/alice@example.com', 'legacy_drive/alice@example.com'])
    const gh = await runCommand(credentials, ['--config', ws.file, '--connection', 'gh'])
    expect(gh.out).toHaveLength(2)

    await rm(path.join(ws.dir, 'data', 'audit.jsonl'))
    const r = await runCommand(credentials, ['--config', ws.file, '--connection', 'svc'])
    expect(r.code).toBe(0)
    expect(r.out[1]).toMatch(/^svc\s+\(shared\)\s+oauth_m2m\s+\S+ \(in \d+m\)\s+yes\s+never\s+unknown\s+store$/)
    expect(r.err).toEqual([
      `keyway: note: last use unknown: audit log ${path.join(ws.dir, 'data', 'audit.jsonl')} does not exist yet (audit.file in ${ws.file})`,
    ])
  })

  test('a connection removed from the config leaves its credentials listed as orphaned, and so does a change of auth type [cli:credentials]', async () => {
    const ws = await workspace()
    await writeFile(ws.file, configText({ legacy: false, crmType: 'oauth_u2m_per_user' }))
    const r = await runCommand(credentials, ['--config', ws.file])
    expect(r.code).toBe(0)
    expect(r.out).toContainEqual(
      expect.stringMatching(
        /^legacy_drive\s+alice@example\.com\s+oauth_u2m_per_user\s+.*store\s+ORPHANED: connection no longer in the config \(removed or renamed\); keyway credentials --prune deletes it$/,
      ),
    )
    expect(r.out).toContainEqual(expect.stringMatching(/^legacy_drive\s+carol@example\.com\s+.*ORPHANED: /))
    expect(r.out).toContainEqual(
      expect.stringMatching(
        /^crm\s+\(shared\)\s+oauth_u2m_shared\s+.*ORPHANED: connection now uses oauth_u2m_per_user; keyway credentials --prune deletes it$/,
      ),
    )
    expect(r.out.filter((l) => l.includes('ORPHANED'))).toHaveLength(3)
    expect(r.err).toEqual([
      'keyway: 3 orphaned credentials (connection removed, renamed or switched to another auth type): never used again; keyway credentials --prune deletes them',
    ])
    const j = await runCommand(credentials, ['--config', ws.file, '--json', '--connection', 'legacy_drive'])
    expect(json(j).map((row) => [key(row), row.orphaned, row.orphanedBecause])).toEqual([
      ['legacy_drive/alice@example.com', 'connection-removed', 'connection no longer in the config (removed or renamed)'],
      ['legacy_drive/carol@example.com', 'connection-removed', 'connection no longer in the config (removed or renamed)'],
    ])
    expectNoSecret(ws, all(r) + all(j))
  })

  test('--prune deletes only the orphans, says what it deleted and that nothing was revoked at the provider; audited [cli:credentials]', async () => {
    const ws = await workspace()
    await writeFile(ws.file, configText({ legacy: false, crmType: 'oauth_u2m_per_user' }))
    const filtered = await runCommand(credentials, ['--config', ws.file, '--prune', '--user', 'carol@example.com'])
    expect(filtered).toMatchObject({
      code: 0,
      out: [
        'legacy_drive carol@example.com (oauth_u2m_per_user): deleted (connection no longer in the config (removed or renamed)); not revoked at the provider',
      ],
    })
    const r = await runCommand(credentials, ['--config', ws.file, '--prune'])
    expect(r.code).toBe(0)
    expect(r.out).toEqual([
      'crm (shared) (oauth_u2m_shared): deleted (connection now uses oauth_u2m_per_user); not revoked at the provider',
      'legacy_drive alice@example.com (oauth_u2m_per_user): deleted (connection no longer in the config (removed or renamed)); not revoked at the provider',
    ])
    expect(r.err).toEqual([
      expect.stringMatching(
        /^keyway: note: pruned credentials were deleted here only, not revoked at the provider: a removed connection's provider settings are gone/,
      ),
    ])
    expect(await storedRefs(ws.file)).toEqual(['drive/alice@example.com', 'drive/bob@example.com', 'svc/-'])
    const again = await runCommand(credentials, ['--config', ws.file, '--prune'])
    expect(again).toEqual({ code: 0, out: ['no orphaned credentials'], err: [] })
    const audit = (await readFile(path.join(ws.dir, 'data', 'audit.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(audit.filter((e) => e.type === 'credential.revoked').map((e) => [e.connection, e.user ?? null, e.reason])).toEqual([
      ['legacy_drive', 'carol@example.com', 'pruned as orphaned (connection-removed); not revoked at the provider'],
      ['crm', null, 'pruned as orphaned (method-changed); not revoked at the provider'],
      ['legacy_drive', 'alice@example.com', 'pruned as orphaned (connection-removed); not revoked at the provider'],
    ])
    expectNoSecret(ws, all(filtered) + all(r) + JSON.stringify(audit))
  })

  test('with nothing orphaned, --prune deletes nothing', async () => {
    const ws = await workspace()
    const before = await storedRefs(ws.file)
    expect(await runCommand(credentials, ['--config', ws.file, '--prune', '--json'])).toEqual({ code: 0, out: [], err: [] })
    expect(await storedRefs(ws.file)).toEqual(before)
  })
})

describe('keyway validate', () => {
  test('warns about a removed connection and a re-typed one that still hold credentials; validation still passes [cli:credentials]', async () => {
    const ws = await workspace()
    const clean = await runCommand(validate, ['--config', ws.file])
    const storeLine = `store: sqlite ${path.join(path.dirname(ws.file), 'data', 'keyway.sqlite')}`
    expect(clean).toEqual({ code: 0, out: [`${ws.file}: ok (5 connections, 0 tools, 0 grants)`, storeLine], err: [] })
    await writeFile(ws.file, configText({ legacy: false, crmType: 'oauth_u2m_per_user' }))
    const r = await runCommand(validate, ['--config', ws.file])
    expect(r.code).toBe(0)
    expect(r.out).toEqual([`${ws.file}: ok (4 connections, 0 tools, 0 grants)`, storeLine])
    expect(r.err).toEqual([
      'keyway: warning: connection "crm" now uses oauth_u2m_per_user but 1 oauth_u2m_shared credential is still stored under it; it is never used again: keyway credentials lists them, keyway credentials --prune deletes them',
      'keyway: warning: connection "legacy_drive" is no longer in the config (removed or renamed) but 2 oauth_u2m_per_user credentials are still stored under it; they are never used again: keyway credentials lists them, keyway credentials --prune deletes them',
    ])
    // Only listed: nothing was deleted.
    expect(await storedRefs(ws.file)).toHaveLength(6)
    expectNoSecret(ws, all(r))
  })

  test('when the store cannot be read from here, the check is skipped with the reason and validation passes', async () => {
    const ws = await workspace()
    await writeFile(ws.file, configText({ legacy: false, store: '{ url: "sqlite://./data/keyway.sqlite" }' }))
    const noKey = await runCommand(validate, ['--config', ws.file])
    expect(noKey.code).toBe(0)
    expect(noKey.err).toEqual([
      expect.stringMatching(/^keyway: note: stored credentials were not checked against this config: store\.encryptionKey is not set: /),
    ])

    await writeFile(ws.file, configText({ legacy: false }))
    const otherKey = await runCommand(validate, ['--config', ws.file], { ...ENV, KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') })
    expect(otherKey.code).toBe(0)
    expect(otherKey.err).toEqual([
      expect.stringMatching(/^keyway: note: stored credentials were not checked against this config: stored token record does not open/),
    ])

    await writeFile(ws.file, configText({ legacy: false, store: '{ url: "memory://", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }' }))
    expect((await runCommand(validate, ['--config', ws.file])).err).toEqual([])
    expectNoSecret(ws, all(noKey) + all(otherKey))
  })
})

describe('keyway sql SHOW CONNECTIONS / DESCRIBE CONNECTION', () => {
  test("show each connection's credential state with only the store key in the environment; never a secret [secret:never-logged]", async () => {
    const ws = await workspace()
    const env = { KEYWAY_ENCRYPTION_KEY: KEY }
    const show = await runCommand(sql, ['--config', ws.file, 'SHOW CONNECTIONS'], env)
    expect(show.code).toBe(0)
    expect(show.out[0]).toMatch(/^name\s+url\s+auth\s+owner\s+mcp_tool\s+grants\s+credentials$/)
    expect(show.out.slice(2).map((l) => [l.split(/\s+/)[0], l.replace(/^.*?\s+\d+\s{2,}/, '')])).toEqual([
      ['crm', 'signed in (expires in 42m, refreshable)'],
      ['drive', '2 users connected (1 without a refresh token)'],
      ['gh', 'static secret'],
      ['legacy_drive', '2 users connected'],
      ['svc', 'token cached (expires in 42m; fetched again automatically)'],
    ])
    const describeCrm = await runCommand(sql, ['--config', ws.file, 'DESCRIBE CONNECTION crm'], env)
    expect(describeCrm.out.at(-1)).toMatch(/^credentials\s+signed in \(expires in 42m, refreshable\)$/)

    const store = await openStore(ws.file)
    await store.deleteToken({ connection: 'crm', user: null })
    await store.close()
    const signedOut = await runCommand(sql, ['--config', ws.file, 'DESCRIBE CONNECTION crm'], env)
    expect(signedOut.out.at(-1)).toMatch(/^credentials\s+not signed in — run keyway authorize crm$/)

    const keyless = await runCommand(sql, ['--config', ws.file, 'SHOW CONNECTIONS'], {})
    expect(keyless.code).toBe(0)
    expect(keyless.out.find((l) => l.startsWith('drive '))).toMatch(
      /store unavailable \(store\.encryptionKey: environment variable KEYWAY_ENCRYPTION_KEY is not set\)$/,
    )
    expect(keyless.out.find((l) => l.startsWith('gh '))).toMatch(/static secret$/)
    const describeGh = await runCommand(sql, ['--config', ws.file, 'DESCRIBE CONNECTION gh'], env)
    expect(describeGh.out.at(-1)).toMatch(/^credentials\s+static secret$/)
    expectNoSecret(ws, all(show) + all(describeCrm) + all(signedOut) + all(keyless) + all(describeGh))
  })
})

describe('keyway serve reload', () => {
  test('removing a connection that holds credentials logs a warning naming it, how many, and --prune; no secret in stderr [cli:credentials]', async () => {
    const ws = await workspace()
    await using keyway = await spawnKeyway(['serve', '--config', ws.file], { env: ENV, cwd: ws.dir })
    await writeFile(ws.file, configText({ legacy: false }))
    const line = await keyway.waitForLog((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('legacy_drive'))
    expect(line).toMatchObject({
      msg: 'connection "legacy_drive" was removed from the config (or renamed) but still holds 2 stored credentials; they are never used again: keyway credentials lists them, keyway credentials --prune deletes them',
      connections: ['legacy_drive'],
      credentials: { legacy_drive: 2 },
    })
    // Removing a connection that holds nothing says nothing beyond the reload line.
    await writeFile(ws.file, configText({ legacy: false }).replace(/ {2}gh:\n(?: {4}.*\n){3}/, ''))
    await keyway.waitForLog((l) => l.msg === 'config reloaded' && Array.isArray(l.removedConnections) && l.removedConnections.includes('gh'))
    expect(keyway.logs().filter((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('"gh"'))).toEqual([])
    expectNoSecret(ws, keyway.stderr())
  })
})
