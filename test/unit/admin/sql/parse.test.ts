import { describe, expect, test } from 'vitest'
import { formatSyntaxError, isMutating, parseStatement, quoteName, type Statement } from '../../../../src/admin/sql/parse.js'
import { tokenize } from '../../../../src/admin/sql/tokenize.js'

function ok(text: string): Statement {
  const r = parseStatement(text)
  if (!r.ok) throw new Error(`${r.error.message}\n${formatSyntaxError(text, r.error).join('\n')}`)
  return r.statement
}

/** The message and the caret line, so a test shows exactly what the admin sees. */
function fails(text: string): { message: string; caret: string; start: number; end: number } {
  const r = parseStatement(text)
  if (r.ok) throw new Error(`parsed: ${JSON.stringify(r.statement)}`)
  return { message: r.error.message, caret: formatSyntaxError(text, r.error)[1], start: r.error.start, end: r.error.end }
}

describe('tokenize', () => {
  test('words, backtick names with doubled backticks, semicolons, offsets', () => {
    const r = tokenize('GRANT `a``b` ;')
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.tokens).toEqual([
      { kind: 'word', text: 'GRANT', start: 0, end: 5 },
      { kind: 'quoted', text: 'a`b', start: 6, end: 12 },
      { kind: 'semicolon', start: 13, end: 14 },
      { kind: 'end', start: 14, end: 14 },
    ])
  })

  test('an unterminated backtick points at its opening', () => {
    const r = tokenize('TO `alice')
    expect(r).toEqual({ ok: false, error: { start: 3, end: 9, message: 'unterminated name: a backtick-quoted name needs a closing `' } })
  })

  test('quotes are refused with a hint to use backticks', () => {
    const r = tokenize('TO "alice"')
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.error).toMatchObject({ start: 3, end: 4 })
    expect(r.error.message).toBe('unexpected character "\\"": names are quoted with backticks (`name`), not quotes')
  })
})

describe('parseStatement: every statement', () => {
  test('GRANT to a user (name with @) and to a group (any other name)', () => {
    expect(ok('GRANT USE CONNECTION ON CONNECTION my_github_conn TO `alice@example.com`')).toEqual({
      kind: 'grant',
      connection: 'my_github_conn',
      principal: { user: 'alice@example.com' },
    })
    expect(ok('GRANT USE CONNECTION ON CONNECTION my_github_conn TO `data-engineering`')).toEqual({
      kind: 'grant',
      connection: 'my_github_conn',
      principal: { group: 'data-engineering' },
    })
  })

  test('REVOKE ... FROM', () => {
    expect(ok('REVOKE USE CONNECTION ON CONNECTION c FROM `bob@example.com`')).toEqual({
      kind: 'revoke',
      connection: 'c',
      principal: { user: 'bob@example.com' },
    })
  })

  test('SHOW GRANTS ON CONNECTION, SHOW CONNECTIONS, DESCRIBE CONNECTION', () => {
    expect(ok('SHOW GRANTS ON CONNECTION c')).toEqual({ kind: 'show_grants', connection: 'c' })
    expect(ok('SHOW CONNECTIONS')).toEqual({ kind: 'show_connections' })
    expect(ok('DESCRIBE CONNECTION google_drive')).toEqual({ kind: 'describe_connection', connection: 'google_drive' })
  })

  test('ALTER CONNECTION ... OWNER TO', () => {
    expect(ok('ALTER CONNECTION c OWNER TO `platform`')).toEqual({ kind: 'alter_owner', connection: 'c', principal: { group: 'platform' } })
  })

  test('isMutating tells edits from reads', () => {
    expect(isMutating(ok('GRANT USE CONNECTION ON CONNECTION c TO `g`'))).toBe(true)
    expect(isMutating(ok('REVOKE USE CONNECTION ON CONNECTION c FROM `g`'))).toBe(true)
    expect(isMutating(ok('ALTER CONNECTION c OWNER TO `g`'))).toBe(true)
    expect(isMutating(ok('SHOW CONNECTIONS'))).toBe(false)
    expect(isMutating(ok('SHOW GRANTS ON CONNECTION c'))).toBe(false)
    expect(isMutating(ok('DESCRIBE CONNECTION c'))).toBe(false)
  })
})

describe('parseStatement: lexical rules', () => {
  test('keywords are case-insensitive; names keep their case', () => {
    expect(ok('grant Use connection oN Connection My_Conn to `Data-Eng`')).toEqual({
      kind: 'grant',
      connection: 'My_Conn',
      principal: { group: 'Data-Eng' },
    })
    expect(ok('show connections')).toEqual({ kind: 'show_connections' })
    expect(ok('Describe Connection x')).toEqual({ kind: 'describe_connection', connection: 'x' })
    expect(ok('alter connection x owner to user `root`')).toEqual({ kind: 'alter_owner', connection: 'x', principal: { user: 'root' } })
  })

  test('an optional trailing semicolon, and any whitespace between tokens', () => {
    expect(ok('SHOW CONNECTIONS;')).toEqual({ kind: 'show_connections' })
    expect(ok('  SHOW\tGRANTS\n ON CONNECTION c ;  ')).toEqual({ kind: 'show_grants', connection: 'c' })
  })

  test('USER and GROUP override the @ rule', () => {
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO GROUP `ops@corp`').kind).toBe('grant')
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO GROUP `ops@corp`')).toMatchObject({ principal: { group: 'ops@corp' } })
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO USER `svc-robot`')).toMatchObject({ principal: { user: 'svc-robot' } })
    expect(ok('REVOKE USE CONNECTION ON CONNECTION c FROM user `svc-robot`')).toMatchObject({ principal: { user: 'svc-robot' } })
    expect(ok('ALTER CONNECTION c OWNER TO group `a@b`')).toMatchObject({ principal: { group: 'a@b' } })
  })

  test('connection names may be backtick-quoted, keywords included', () => {
    expect(ok('GRANT USE CONNECTION ON CONNECTION to TO `x`')).toMatchObject({ connection: 'to' })
    expect(ok('SHOW GRANTS ON CONNECTION `my-conn`')).toEqual({ kind: 'show_grants', connection: 'my-conn' })
    expect(ok('DESCRIBE CONNECTION `grant`')).toEqual({ kind: 'describe_connection', connection: 'grant' })
    expect(ok('DESCRIBE CONNECTION connection')).toEqual({ kind: 'describe_connection', connection: 'connection' })
  })

  test('doubled backticks stand for one; spaces inside names are kept', () => {
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO `we``ird`')).toMatchObject({ principal: { group: 'we`ird' } })
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO `account users`')).toMatchObject({ principal: { group: 'account users' } })
    expect(ok('GRANT USE CONNECTION ON CONNECTION c TO ````')).toMatchObject({ principal: { group: '`' } })
  })

  test('quoteName round-trips through the parser', () => {
    for (const name of ['a`b', '``', 'x@y', 'with space']) {
      expect(ok(`GRANT USE CONNECTION ON CONNECTION c TO GROUP ${quoteName(name)}`)).toMatchObject({ principal: { group: name } })
    }
  })
})

describe('parseStatement: syntax errors point at the token with a caret', () => {
  const cases: [string, string, string][] = [
    ['GRANT USE CONNECTION ON conn TO `x`', 'expected CONNECTION after ON', '                        ^^^^'],
    ['GRANT SELECT ON CONNECTION c TO `x`', 'expected USE after GRANT: the only privilege is USE CONNECTION', '      ^^^^^^'],
    ['GRANT USE ON CONNECTION c TO `x`', 'expected CONNECTION after USE', '          ^^'],
    ['GRANT USE CONNECTION CONNECTION c TO `x`', 'expected ON after USE CONNECTION', '                     ^^^^^^^^^^'],
    ['GRANT USE CONNECTION ON CONNECTION TO `x`', 'expected a connection name after ON CONNECTION', '                                   ^^'],
    ['REVOKE USE CONNECTION ON CONNECTION FROM `x`', 'expected a connection name after ON CONNECTION', '                                    ^^^^'],
    ['GRANT USE CONNECTION ON CONNECTION c `x`', 'expected TO after the connection name', '                                     ^^^'],
    ['GRANT USE CONNECTION ON CONNECTION c FROM `x`', 'expected TO after the connection name', '                                     ^^^^'],
    ['REVOKE USE CONNECTION ON CONNECTION c TO `x`', 'expected FROM after the connection name', '                                      ^^'],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO',
      'expected a principal in backticks after TO, e.g. `alice@example.com` or `data-engineering`',
      '                                       ^',
    ],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO data-eng',
      'expected a principal in backticks after TO, e.g. `alice@example.com` or `data-engineering` (write `data-eng`)',
      '                                        ^^^^^^^^',
    ],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO GROUP ops',
      'expected a principal in backticks after GROUP, e.g. `data-engineering`',
      '                                              ^^^',
    ],
    [
      'GRANT USE CONNECTION ON CONNECTION c TO USER',
      'expected a principal in backticks after USER, e.g. `alice@example.com`',
      '                                            ^',
    ],
    ['GRANT USE CONNECTION ON CONNECTION c TO ``', 'a principal name cannot be empty', '                                        ^^'],
    ['GRANT USE CONNECTION ON CONNECTION c TO `x` now', 'expected end of statement, found now', '                                            ^^^'],
    ['SHOW CONNECTIONS; SHOW CONNECTIONS', 'expected end of statement after ;: run one statement at a time', '                  ^^^^'],
    ['SHOW TABLES', 'expected GRANTS or CONNECTIONS after SHOW', '     ^^^^^^'],
    ['SHOW GRANTS CONNECTION c', 'expected ON after SHOW GRANTS', '            ^^^^^^^^^^'],
    ['SHOW GRANTS ON c', 'expected CONNECTION after ON', '               ^'],
    ['SHOW GRANTS ON CONNECTION', 'expected a connection name after SHOW GRANTS ON CONNECTION', '                         ^'],
    ['DESCRIBE c', 'expected CONNECTION after DESCRIBE', '         ^'],
    ['DESCRIBE CONNECTION `has space`', 'a connection name matches ^[A-Za-z0-9_-]{1,64}$', '                    ^^^^^^^^^^^'],
    ['ALTER c OWNER TO `x`', 'expected CONNECTION after ALTER', '      ^'],
    ['ALTER CONNECTION c TO `x`', 'expected OWNER after the connection name: ALTER CONNECTION c OWNER TO principal', '                   ^^'],
    ['ALTER CONNECTION c OWNER `x`', 'expected TO after OWNER', '                         ^^^'],
    ['DROP CONNECTION c', 'expected a statement: GRANT, REVOKE, SHOW, DESCRIBE or ALTER, found DROP', '^^^^'],
    ['', 'expected a statement: GRANT, REVOKE, SHOW, DESCRIBE or ALTER', '^'],
    ['GRANT USE CONNECTION ON CONNECTION c TO `x', 'unterminated name: a backtick-quoted name needs a closing `', '                                        ^^'],
    [
      "GRANT USE CONNECTION ON CONNECTION c TO 'x'",
      'unexpected character "\'": names are quoted with backticks (`name`), not quotes',
      '                                        ^',
    ],
    ['SHOW CONNECTIONS!', 'unexpected character "!"', '                ^'],
  ]
  test.each(cases)('%s', (text, message, caret) => {
    const e = fails(text)
    expect(e.message).toBe(message)
    expect(e.caret).toBe(caret)
  })

  test('a name longer than 64 characters is refused where it stands', () => {
    const long = 'x'.repeat(65)
    const e = fails(`DESCRIBE CONNECTION ${long}`)
    expect(e).toMatchObject({ start: 20, end: 85, message: 'a connection name matches ^[A-Za-z0-9_-]{1,64}$' })
  })

  test('on a multi-line statement the caret is under the right line, tabs kept', () => {
    const text = 'GRANT USE CONNECTION\n\tON conn TO `x`'
    const r = parseStatement(text)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(formatSyntaxError(text, r.error)).toEqual(['\tON conn TO `x`', '\t   ^^^^'])
  })

  test('an error at the end of the input gets one caret after the last character', () => {
    const r = parseStatement('SHOW GRANTS ON CONNECTION ')
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.error).toMatchObject({ start: 26, end: 26 })
    expect(formatSyntaxError('SHOW GRANTS ON CONNECTION ', r.error)).toEqual(['SHOW GRANTS ON CONNECTION ', '                          ^'])
  })
})
