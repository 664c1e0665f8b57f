import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { parseDocument } from 'yaml'
import { loadConfigText } from '../../../../src/config/load.js'
import { ConfigSchema } from '../../../../src/config/schema.js'
import { parseStatement, type ReadStatement } from '../../../../src/admin/sql/parse.js'
import { describeConnection, formatTable, renderStatement, showConnections, showGrants, type ConfigView } from '../../../../src/admin/sql/render.js'

const FIXTURE = path.join(import.meta.dirname, '../../../fixtures/config/sql/commented.yaml')
const TEXT = readFileSync(FIXTURE, 'utf8')

async function view(text = TEXT, env: Record<string, string> = {}, skipSecrets = true): Promise<ConfigView> {
  const r = await loadConfigText(text, FIXTURE, { env, skipSecrets })
  if (!r.ok) throw new Error(r.problems.join('\n'))
  return { snapshot: r.snapshot, file: ConfigSchema.parse(parseDocument(text).toJS()) }
}

function read(text: string): ReadStatement {
  const r = parseStatement(text)
  if (!r.ok || r.statement.kind === 'grant' || r.statement.kind === 'revoke' || r.statement.kind === 'alter_owner') throw new Error(text)
  return r.statement
}

describe('skipSecrets (load.ts)', () => {
  test('the file loads with no secret set, and fails without skipSecrets', async () => {
    await expect(view()).resolves.toBeDefined()
    const strict = await loadConfigText(TEXT, FIXTURE, { env: {} })
    expect(strict.ok).toBe(false)
    if (strict.ok) return
    expect(strict.problems).toHaveLength(3)
    expect(strict.problems.every((p) => /is not set|cannot read secret file/.test(p))).toBe(true)
  })
})

describe('SHOW GRANTS ON CONNECTION', () => {
  test('the owner first, then grants in file order', async () => {
    expect(showGrants(await view(), 'my_github_conn')).toEqual({
      columns: ['principal', 'type', 'privilege', 'source'],
      rows: [
        ['admin@example.com', 'user', 'USE CONNECTION', 'owner'],
        ['data-engineering', 'group', 'USE CONNECTION', 'grant'],
        ['alice@example.com', 'user', 'USE CONNECTION', 'grant'],
      ],
    })
  })

  test('an unknown connection is undefined', async () => {
    expect(showGrants(await view(), 'nope')).toBeUndefined()
  })
})

describe('SHOW CONNECTIONS', () => {
  test('one row per connection, sorted by name', async () => {
    expect(showConnections(await view())).toEqual({
      columns: ['name', 'url', 'auth', 'owner', 'mcp_tool', 'grants'],
      rows: [
        ['google_drive', 'https://www.googleapis.com/drive/v3/', 'oauth_u2m_per_user', 'group data-engineering', 'yes', '1'],
        ['internal_api', 'https://api.example.com/', 'bearer_token', 'group platform', 'no', '2'],
        ['my_github_conn', 'https://api.github.com/', 'bearer_token', 'user admin@example.com', 'yes', '2'],
      ],
    })
  })
})

describe('DESCRIBE CONNECTION', () => {
  test('a bearer connection: fields, limits (with where they come from), the token reference, grants', async () => {
    const t = await describeConnection(await view(), 'my_github_conn')
    expect(t?.columns).toEqual(['property', 'value'])
    expect(t?.rows).toEqual([
      ['name', 'my_github_conn'],
      ['description', 'GitHub REST API of the data team'],
      ['url', 'https://api.github.com/'],
      ['auth', 'bearer_token'],
      ['owner', 'user admin@example.com'],
      ['mcp_tool', 'yes'],
      ['read_only', 'no'],
      ['timeout_ms', '10000'],
      ['max_response_bytes', '262144 (egress default)'],
      ['token', '{ env: GITHUB_TOKEN }'],
      ['grant', 'group data-engineering'],
      ['grant', 'user alice@example.com'],
    ])
  })

  test('an OAuth connection: client id, secret reference, endpoints, scopes, exchange, params', async () => {
    const t = await describeConnection(await view(), 'google_drive')
    expect(t?.rows).toEqual([
      ['name', 'google_drive'],
      ['description', '-'],
      ['url', 'https://www.googleapis.com/drive/v3/'],
      ['auth', 'oauth_u2m_per_user'],
      ['owner', 'group data-engineering'],
      ['mcp_tool', 'yes'],
      ['read_only', 'no'],
      ['timeout_ms', '30000 (egress default)'],
      ['max_response_bytes', '262144 (egress default)'],
      ['client_id', '1234.apps.googleusercontent.com'],
      ['client_secret', '{ env: GDRIVE_CLIENT_SECRET }'],
      ['authorization_endpoint', 'https://accounts.google.com/o/oauth2/v2/auth'],
      ['token_endpoint', 'https://oauth2.googleapis.com/token'],
      ['scopes', 'https://www.googleapis.com/auth/drive.readonly'],
      ['credential_exchange', 'from the provider metadata'],
      ['authorization_params', 'access_type=offline prompt=consent'],
      ['grant', 'user carol@example.com'],
    ])
  })

  test('a file secret reference and a connection with an issuer and an explicit exchange', async () => {
    const text = `version: 1
connections:
  m2m:
    host: https://api.example.com
    owner: { user: o@example.com }
    auth:
      type: oauth_m2m
      issuer: https://login.example.com
      clientId: svc
      clientSecret: { file: ./m2m-secret }
      credentialExchange: body_only
      tokenParams: { audience: api }
`
    const rows = (await describeConnection(await view(text), 'm2m'))?.rows ?? []
    expect(rows).toContainEqual(['client_secret', '{ file: ./m2m-secret }'])
    expect(rows).toContainEqual(['issuer', 'https://login.example.com'])
    expect(rows).toContainEqual(['scopes', '-'])
    expect(rows).toContainEqual(['credential_exchange', 'body_only'])
    expect(rows).toContainEqual(['token_params', 'audience=api'])
    expect(rows).toContainEqual(['grant', '- (only the owner)'])
  })

  test('never a secret value, even when the secrets resolve [secret:never-logged]', async () => {
    const env = { GITHUB_TOKEN: 'ghp_CANARY_github', GDRIVE_CLIENT_SECRET: 'CANARY-gdrive' }
    const v = await view(TEXT.replace('{ file: ./secrets/internal-token }', '{ env: GITHUB_TOKEN }'), env, false)
    for (const name of ['my_github_conn', 'google_drive', 'internal_api']) {
      const t = await describeConnection(v, name)
      expect(JSON.stringify(t)).not.toMatch(/CANARY/)
    }
    expect(JSON.stringify(showConnections(v))).not.toMatch(/CANARY/)
  })

  test('credential state comes in through the seam and is left out without it', async () => {
    const asked: string[] = []
    const credentialState = async (c: string): Promise<string | undefined> => {
      asked.push(c)
      return c === 'google_drive' ? 'tokens stored for 2 users' : undefined
    }
    const drive = await describeConnection(await view(), 'google_drive', { credentialState })
    expect(drive?.rows.at(-1)).toEqual(['credentials', 'tokens stored for 2 users'])
    const gh = await describeConnection(await view(), 'my_github_conn', { credentialState })
    expect(gh?.rows.some(([k]) => k === 'credentials')).toBe(false)
    expect(asked).toEqual(['google_drive', 'my_github_conn'])
  })

  test('an unknown connection is undefined', async () => {
    expect(await describeConnection(await view(), 'constructor')).toBeUndefined()
  })
})

describe('renderStatement', () => {
  test('dispatches each read statement and reports unknown connections as data', async () => {
    const v = await view()
    expect(await renderStatement(v, read('SHOW CONNECTIONS'))).toMatchObject({ ok: true })
    expect(await renderStatement(v, read('SHOW GRANTS ON CONNECTION internal_api'))).toMatchObject({ ok: true })
    expect(await renderStatement(v, read('DESCRIBE CONNECTION internal_api'), { credentialState: async () => 'none stored' })).toMatchObject({
      ok: true,
      table: { rows: expect.arrayContaining([['credentials', 'none stored']]) },
    })
    expect(await renderStatement(v, read('SHOW GRANTS ON CONNECTION nope'))).toEqual({ ok: false, reason: 'unknown-connection', connection: 'nope' })
    expect(await renderStatement(v, read('DESCRIBE CONNECTION nope'))).toEqual({ ok: false, reason: 'unknown-connection', connection: 'nope' })
  })
})

describe('formatTable', () => {
  test('header, rule, padded columns, no trailing spaces', () => {
    expect(
      formatTable({
        columns: ['principal', 'type'],
        rows: [
          ['admin@example.com', 'user'],
          ['eng', ''],
        ],
      }),
    ).toEqual(['principal          type', '-----------------  ----', 'admin@example.com  user', 'eng'])
  })

  test('control characters are escaped so a value cannot drive the terminal', () => {
    expect(formatTable({ columns: ['v'], rows: [['a\nb\u001b[2Jc\td']] })).toEqual(['v', '-'.repeat(16), 'a\\nb\\u001b[2Jc d'])
  })

  test('a table with no rows still has its header', () => {
    expect(formatTable({ columns: ['name', 'url'], rows: [] })).toEqual(['name  url', '----  ---'])
  })
})
