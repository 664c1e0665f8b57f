/**
 * `keyway sql` with service principals: `TO SERVICE PRINCIPAL \`etl-bot\`` and `FROM SERVICE
 * PRINCIPAL` parse to `{ servicePrincipal }`, are written to the file as such, shown by SHOW
 * GRANTS with their type, and rendered back (`formatPrincipal`) into statements that parse to
 * the same principal. A user and a service principal of the same name stay two principals.
 * @module
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { parseDocument } from 'yaml'
import { loadConfigText } from '../../../../src/config/load.js'
import { ConfigSchema, type Principal } from '../../../../src/config/schema.js'
import { applyStatement } from '../../../../src/admin/sql/apply.js'
import { formatPrincipal, formatSyntaxError, parseStatement, type MutatingStatement, type Statement } from '../../../../src/admin/sql/parse.js'
import { showGrants } from '../../../../src/admin/sql/render.js'

const FIXTURE = path.join(import.meta.dirname, '../../../fixtures/config/sql/commented.yaml')
const TEXT = readFileSync(FIXTURE, 'utf8')

function ok(text: string): Statement {
  const r = parseStatement(text)
  if (!r.ok) throw new Error(`${r.error.message}\n${formatSyntaxError(text, r.error).join('\n')}`)
  return r.statement
}

function mutating(text: string): MutatingStatement {
  const s = ok(text)
  if (s.kind !== 'grant' && s.kind !== 'revoke' && s.kind !== 'alter_owner') throw new Error(text)
  return s
}

function changed(text: string, statement: string): string {
  const r = applyStatement(text, mutating(statement))
  if (r.kind !== 'changed') throw new Error(`expected a change, got ${JSON.stringify(r)}`)
  return r.text
}

async function load(text: string) {
  return loadConfigText(text, FIXTURE, { env: {}, skipSecrets: true })
}

describe('parse: SERVICE PRINCIPAL [identity:service-principal]', () => {
  test.each([
    [
      'GRANT USE CONNECTION ON CONNECTION internal_api TO SERVICE PRINCIPAL `etl-bot`',
      { kind: 'grant', connection: 'internal_api', principal: { servicePrincipal: 'etl-bot' } },
    ],
    [
      'revoke use connection on connection internal_api from service principal `etl-bot`;',
      { kind: 'revoke', connection: 'internal_api', principal: { servicePrincipal: 'etl-bot' } },
    ],
    [
      'ALTER CONNECTION internal_api OWNER TO SERVICE PRINCIPAL `etl.bot_2`',
      { kind: 'alter_owner', connection: 'internal_api', principal: { servicePrincipal: 'etl.bot_2' } },
    ],
  ])('%s', (text, expected) => {
    expect(ok(text)).toEqual(expected)
  })

  test('a bare name is never guessed to be a service principal', () => {
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO `etl-bot`')).toMatchObject({ principal: { group: 'etl-bot' } })
  })

  test.each([
    [
      'GRANT USE CONNECTION ON CONNECTION c TO SERVICE `etl-bot`',
      'expected PRINCIPAL after SERVICE: SERVICE PRINCIPAL `name`',
      '                                                ^^^^^^^^^',
    ],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO SERVICE PRINCIPAL etl-bot',
      'expected a principal in backticks after SERVICE PRINCIPAL, e.g. `etl-bot`',
      '                                                          ^^^^^^^',
    ],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO SERVICE PRINCIPAL `etl bot`',
      'a service principal name matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$',
      '                                                          ^^^^^^^^^',
    ],
  ])('%s is refused at the offending token', (text, message, caret) => {
    const r = parseStatement(text)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.error.message).toBe(message)
    expect(formatSyntaxError(text, r.error)[1]).toBe(caret)
  })

  test('formatPrincipal renders every kind so that it parses back to itself', () => {
    const principals: Principal[] = [{ user: 'etl-bot' }, { group: 'etl-bot' }, { servicePrincipal: 'etl-bot' }, { user: 'a`b@x' }, { group: 'with space' }]
    for (const p of principals) {
      expect(ok(`GRANT USE CONNECTION ON CONNECTION c TO ${formatPrincipal(p)}`)).toMatchObject({ principal: p })
      expect(ok(`REVOKE USE CONNECTION ON CONNECTION c FROM ${formatPrincipal(p)}`)).toMatchObject({ principal: p })
    }
    expect(formatPrincipal({ servicePrincipal: 'etl-bot' })).toBe('SERVICE PRINCIPAL `etl-bot`')
  })
})

describe('apply and render: round trip through the file [identity:service-principal]', () => {
  test('GRANT writes { servicePrincipal }, SHOW GRANTS types it, the rendered row parses back, REVOKE restores the file byte for byte', async () => {
    const granted = changed(TEXT, 'GRANT USE CONNECTION ON CONNECTION internal_api TO SERVICE PRINCIPAL `etl-bot`')
    expect(granted).toContain('    to: { servicePrincipal: etl-bot }')
    const loaded = await load(granted)
    if (!loaded.ok) throw new Error(loaded.problems.join('\n'))
    expect(loaded.snapshot.grants.at(-1)).toEqual({ on: 'internal_api', to: { servicePrincipal: 'etl-bot' } })
    // The fixture maps no client to etl-bot: loading warns, and still loads.
    expect(loaded.warnings).toContain(
      'service principal "etl-bot" is named in owners or grants, but no identity.oidc.servicePrincipals entry maps a client to it',
    )

    const table = showGrants({ snapshot: loaded.snapshot, file: ConfigSchema.parse(parseDocument(granted).toJS()) }, 'internal_api')
    expect(table?.rows.at(-1)).toEqual(['etl-bot', 'service principal', 'USE CONNECTION', 'grant'])
    const last = loaded.snapshot.grants.at(-1)?.to
    if (!last) throw new Error('no grant')
    expect(ok(`REVOKE USE CONNECTION ON CONNECTION internal_api FROM ${formatPrincipal(last)}`)).toMatchObject({ principal: { servicePrincipal: 'etl-bot' } })

    expect(changed(granted, 'REVOKE USE CONNECTION ON CONNECTION internal_api FROM SERVICE PRINCIPAL `etl-bot`')).toBe(TEXT)
  })

  test('a user and a service principal of one name are two principals: revoking the user names the other type', () => {
    const granted = changed(TEXT, 'GRANT USE CONNECTION ON CONNECTION internal_api TO SERVICE PRINCIPAL `etl-bot`')
    expect(applyStatement(granted, mutating('GRANT USE CONNECTION ON CONNECTION internal_api TO USER `etl-bot`')).kind).toBe('changed')
    expect(applyStatement(granted, mutating('REVOKE USE CONNECTION ON CONNECTION internal_api FROM USER `etl-bot`'))).toEqual({
      kind: 'refused',
      reason: 'no-such-grant',
      otherType: { servicePrincipal: 'etl-bot' },
    })
  })

  test('ALTER ... OWNER TO SERVICE PRINCIPAL rewrites the owner in place', async () => {
    const out = changed(TEXT, 'ALTER CONNECTION internal_api OWNER TO SERVICE PRINCIPAL `etl-bot`')
    expect(out).toContain('    owner: { servicePrincipal: etl-bot }\n')
    expect((await load(out)).ok).toBe(true)
  })

  test('a service principal on a per-user connection is a config problem, so keyway sql refuses to write it', async () => {
    const granted = changed(TEXT, 'GRANT USE CONNECTION ON CONNECTION google_drive TO SERVICE PRINCIPAL `etl-bot`')
    const r = await load(granted)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems).toEqual([expect.stringMatching(/ grants\[\d+\]\.to: a service principal cannot use the oauth_u2m_per_user connection "google_drive": /)])
    const owned = await load(changed(TEXT, 'ALTER CONNECTION google_drive OWNER TO SERVICE PRINCIPAL `etl-bot`'))
    expect(owned.ok ? [] : owned.problems).toEqual([
      expect.stringMatching(/connections\.google_drive\.owner: a service principal cannot own an oauth_u2m_per_user connection/),
    ])
  })
})
