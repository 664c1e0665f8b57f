import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { loadConfigText } from '../../../../src/config/load.js'
import { applyStatement, type ApplyOutcome } from '../../../../src/admin/sql/apply.js'
import { parseStatement, type MutatingStatement } from '../../../../src/admin/sql/parse.js'
import { yamlString } from '../../../../src/admin/sql/splice.js'

const FIXTURES = path.join(import.meta.dirname, '../../../fixtures/config/sql')
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), 'utf8')
const COMMENTED = fixture('commented.yaml')

function stmt(text: string): MutatingStatement {
  const r = parseStatement(text)
  if (!r.ok || (r.statement.kind !== 'grant' && r.statement.kind !== 'revoke' && r.statement.kind !== 'alter_owner'))
    throw new Error(`not a mutating statement: ${text}`)
  return r.statement
}

function apply(text: string, statement: string): ApplyOutcome {
  return applyStatement(text, stmt(statement))
}

/** The new text of a change, after checking it still loads exactly as the server would check it. */
async function changed(text: string, statement: string): Promise<string> {
  const r = apply(text, statement)
  if (r.kind !== 'changed') throw new Error(`expected a change, got ${JSON.stringify(r)}`)
  const loaded = await loadConfigText(r.text, '/cfg/connections.yaml', { env: {}, skipSecrets: true })
  if (!loaded.ok) throw new Error(loaded.problems.join('\n'))
  return r.text
}

/**
 * The one run of lines that differs: everything before `at` and after the run is identical byte
 * for byte (the comment-preservation check).
 */
function lineDiff(before: string, after: string): { at: number; removed: string[]; added: string[] } {
  const a = before.split('\n')
  const b = after.split('\n')
  let head = 0
  while (head < a.length && head < b.length && a[head] === b[head]) head++
  let tail = 0
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++
  return { at: head + 1, removed: a.slice(head, a.length - tail), added: b.slice(head, b.length - tail) }
}

const lineNo = (text: string, line: string): number => text.split('\n').indexOf(line) + 1

describe('GRANT', () => {
  test('appends after the last entry in its style (block), every other byte unchanged', async () => {
    const out = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO `ops`')
    expect(lineDiff(COMMENTED, out)).toEqual({
      at: lineNo(COMMENTED, '    to: { user: carol@example.com }') + 1,
      removed: [],
      added: ['  - privilege: USE CONNECTION', '    on: my_github_conn', '    to: { group: ops }'],
    })
    expect(out.endsWith('    to: { group: ops }\n\n# end of file\n')).toBe(true)
  })

  test('after a flow-map entry the new entry is a flow map like design.md', async () => {
    const text = `version: 1
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
grants:
  - { privilege: USE CONNECTION, on: c, to: { group: eng } }   # eng
# after
`
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION c TO `alice@example.com`')
    expect(lineDiff(text, out)).toEqual({ at: 6, removed: [], added: ['  - { privilege: USE CONNECTION, on: c, to: { user: alice@example.com } }'] })
  })

  test('grants in the middle of the file: the entry goes before the next key', async () => {
    const text = `version: 1
grants:
  - { privilege: USE CONNECTION, on: c, to: { group: eng } }

  # more to come
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
`
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION c TO `ops`')
    expect(lineDiff(text, out)).toEqual({ at: 4, removed: [], added: ['  - { privilege: USE CONNECTION, on: c, to: { group: ops } }'] })
  })

  test('a block entry with a block `to` gets a block `to`', async () => {
    const text = `version: 1
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
grants:
- privilege: USE CONNECTION
  on: c
  to:
    group: eng
`
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION c TO USER `svc`')
    expect(lineDiff(text, out).added).toEqual(['- privilege: USE CONNECTION', '  on: c', '  to:', '    user: svc'])
  })

  test('a flow sequence stays a flow sequence on its one line, its comment kept', async () => {
    const text = fixture('flow-grants.yaml')
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION b TO `eng`')
    const d = lineDiff(text, out)
    expect(d.removed).toEqual([expect.stringMatching(/^grants: \[/)])
    expect(d.added).toEqual([
      'grants: [ { privilege: USE CONNECTION, on: a, to: { group: eng } }, { privilege: USE CONNECTION, on: b, to: { user: bob@example.com } }, { privilege: USE CONNECTION, on: b, to: { group: eng } } ]   # flow style',
    ])
  })

  test('creates `grants:` at the end when absent, indented like the connections', async () => {
    const text = fixture('no-grants.yaml')
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION billing TO `finance`')
    expect(out).toBe(`${text}grants:\n    - { privilege: USE CONNECTION, on: billing, to: { group: finance } }\n`)
  })

  test('a file without a final newline still gets whole lines', async () => {
    const text = fixture('no-grants.yaml').trimEnd()
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION billing TO `finance`')
    expect(out).toBe(`${text}\ngrants:\n    - { privilege: USE CONNECTION, on: billing, to: { group: finance } }\n`)
  })

  test('`grants: []` grows into a block sequence; a comment on its line stays', async () => {
    const text = `version: 1
connections:
  c:
    host: https://api.example.com
    owner: { user: o@example.com }
    auth: { type: bearer_token, token: { env: T } }
grants: []   # none yet
# end
`
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION c TO `eng`')
    expect(lineDiff(text, out)).toEqual({
      at: 7,
      removed: ['grants: []   # none yet'],
      added: ['grants:   # none yet', '  - { privilege: USE CONNECTION, on: c, to: { group: eng } }'],
    })
  })

  test('CRLF files keep CRLF line breaks', async () => {
    const text = fixture('no-grants.yaml').replaceAll('\n', '\r\n')
    const out = await changed(text, 'GRANT USE CONNECTION ON CONNECTION billing TO `finance`')
    expect(out).toBe(`${text}grants:\r\n    - { privilege: USE CONNECTION, on: billing, to: { group: finance } }\r\n`)
  })

  test('names YAML would read as something else are quoted', async () => {
    const out = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION internal_api TO GROUP `123`')
    expect(lineDiff(COMMENTED, out).added).toContain('    to: { group: "123" }')
    const out2 = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION internal_api TO GROUP `a: b, {c}`')
    expect(lineDiff(COMMENTED, out2).added).toContain('    to: { group: "a: b, {c}" }')
    const out3 = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION internal_api TO GROUP `account users`')
    expect(lineDiff(COMMENTED, out3).added).toContain('    to: { group: account users }')
  })

  test('granting what is already granted is a no-op', () => {
    expect(apply(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO `data-engineering`')).toEqual({
      kind: 'unchanged',
      reason: 'already-granted',
    })
    expect(apply(COMMENTED, 'grant use connection on connection internal_api to `carol@example.com`')).toEqual({ kind: 'unchanged', reason: 'already-granted' })
  })

  test('granting to the owner is a no-op: the owner always holds USE CONNECTION', () => {
    expect(apply(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO `admin@example.com`')).toEqual({ kind: 'unchanged', reason: 'owner-holds' })
    expect(apply(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION google_drive TO `data-engineering`')).toEqual({ kind: 'unchanged', reason: 'owner-holds' })
  })

  test('the same name as the other principal type is a different principal', async () => {
    const out = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION my_github_conn TO USER `data-engineering`')
    expect(lineDiff(COMMENTED, out).added).toContain('    to: { user: data-engineering }')
  })

  test('an unknown connection is refused', () => {
    expect(apply(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION nope TO `x`')).toEqual({ kind: 'refused', reason: 'unknown-connection' })
    // Object prototype names are not connections either.
    expect(apply(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION constructor TO `x`')).toEqual({ kind: 'refused', reason: 'unknown-connection' })
  })
})

describe('REVOKE', () => {
  test('removes exactly the lines of the entry', async () => {
    const out = await changed(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM `alice@example.com`')
    expect(lineDiff(COMMENTED, out)).toEqual({
      at: lineNo(COMMENTED, '  - { privilege: USE CONNECTION, on: my_github_conn, to: { user: alice@example.com } }'),
      removed: ['  - { privilege: USE CONNECTION, on: my_github_conn, to: { user: alice@example.com } }'],
      added: [],
    })
  })

  test('removes a block-style entry; the comment above it stays', async () => {
    const out = await changed(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION internal_api FROM `carol@example.com`')
    expect(lineDiff(COMMENTED, out)).toEqual({
      at: lineNo(COMMENTED, '  - privilege: USE CONNECTION'),
      removed: ['  - privilege: USE CONNECTION', '    on: internal_api', '    to: { user: carol@example.com }'],
      added: [],
    })
    expect(out).toContain('  # a block-style entry\n\n# end of file\n')
  })

  test('an entry with a trailing comment goes with its comment', async () => {
    const out = await changed(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM `data-engineering`')
    expect(lineDiff(COMMENTED, out).removed).toEqual(['  - { privilege: USE CONNECTION, on: my_github_conn, to: { group: data-engineering } }   # team-wide'])
  })

  test('duplicate entries are all removed', async () => {
    const text = `version: 1
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
grants:
  - { privilege: USE CONNECTION, on: c, to: { group: eng } }
  - { privilege: USE CONNECTION, on: c, to: { group: ops } }
  - { privilege: USE CONNECTION, on: c, to: { group: eng } }
`
    const r = apply(text, 'REVOKE USE CONNECTION ON CONNECTION c FROM `eng`')
    expect(r).toMatchObject({ kind: 'changed', removed: 2 })
    if (r.kind !== 'changed') return
    expect(r.text).toBe(`version: 1
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
grants:
  - { privilege: USE CONNECTION, on: c, to: { group: ops } }
`)
  })

  test('removing the last entry leaves `grants: []`, not a null', async () => {
    const text = `version: 1
connections:
  c: { host: https://api.example.com, owner: { user: o@example.com }, auth: { type: bearer_token, token: { env: T } } }
grants:   # who may use what
  - { privilege: USE CONNECTION, on: c, to: { group: eng } }
# end
`
    const out = await changed(text, 'REVOKE USE CONNECTION ON CONNECTION c FROM `eng`')
    expect(lineDiff(text, out)).toEqual({
      at: 4,
      removed: ['grants:   # who may use what', '  - { privilege: USE CONNECTION, on: c, to: { group: eng } }'],
      added: ['grants: []   # who may use what'],
    })
  })

  test('flow sequences: first, last and every entry', async () => {
    const text = fixture('flow-grants.yaml')
    const first = await changed(text, 'REVOKE USE CONNECTION ON CONNECTION a FROM `eng`')
    expect(lineDiff(text, first).added).toEqual(['grants: [ { privilege: USE CONNECTION, on: b, to: { user: bob@example.com } } ]   # flow style'])
    const last = await changed(text, 'REVOKE USE CONNECTION ON CONNECTION b FROM `bob@example.com`')
    expect(lineDiff(text, last).added).toEqual(['grants: [ { privilege: USE CONNECTION, on: a, to: { group: eng } } ]   # flow style'])
    const none = await changed(last, 'REVOKE USE CONNECTION ON CONNECTION a FROM `eng`')
    expect(lineDiff(text, none).added).toEqual(['grants: []   # flow style'])
  })

  test('the owner cannot be revoked', () => {
    expect(apply(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION my_github_conn FROM `admin@example.com`')).toEqual({
      kind: 'refused',
      reason: 'revoke-owner',
      owner: { user: 'admin@example.com' },
    })
    expect(apply(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION google_drive FROM `data-engineering`')).toEqual({
      kind: 'refused',
      reason: 'revoke-owner',
      owner: { group: 'data-engineering' },
    })
  })

  test('revoking a grant that does not exist is refused, naming the other principal type when that one exists', async () => {
    expect(apply(COMMENTED, 'REVOKE USE CONNECTION ON CONNECTION google_drive FROM `bob@example.com`')).toEqual({ kind: 'refused', reason: 'no-such-grant' })
    const text = await changed(COMMENTED, 'GRANT USE CONNECTION ON CONNECTION google_drive TO GROUP `ops@corp`')
    expect(applyStatement(text, stmt('REVOKE USE CONNECTION ON CONNECTION google_drive FROM `ops@corp`'))).toEqual({
      kind: 'refused',
      reason: 'no-such-grant',
      otherType: { group: 'ops@corp' },
    })
    expect(applyStatement(text, stmt('REVOKE USE CONNECTION ON CONNECTION google_drive FROM GROUP `ops@corp`')).kind).toBe('changed')
  })

  test('GRANT then REVOKE gives back the original file byte for byte', async () => {
    for (const [name, conn] of [
      ['commented.yaml', 'internal_api'],
      ['flow-grants.yaml', 'a'],
      ['no-grants.yaml', 'billing'],
    ] as const) {
      const text = fixture(name)
      const granted = await changed(text, `GRANT USE CONNECTION ON CONNECTION ${conn} TO \`new-team\``)
      const revoked = apply(granted, `REVOKE USE CONNECTION ON CONNECTION ${conn} FROM \`new-team\``)
      if (revoked.kind !== 'changed') throw new Error(name)
      // no-grants.yaml gains `grants: []`: the only difference left, and a valid one.
      expect(revoked.text).toBe(name === 'no-grants.yaml' ? `${text}grants: []\n` : text)
    }
  })
})

describe('ALTER CONNECTION ... OWNER TO', () => {
  test('a flow-style owner changes in place, its comment kept', async () => {
    const out = await changed(COMMENTED, 'ALTER CONNECTION my_github_conn OWNER TO `platform`')
    expect(lineDiff(COMMENTED, out)).toEqual({
      at: lineNo(COMMENTED, '    owner: { user: admin@example.com }   # the owner always holds USE CONNECTION'),
      removed: ['    owner: { user: admin@example.com }   # the owner always holds USE CONNECTION'],
      added: ['    owner: { group: platform }   # the owner always holds USE CONNECTION'],
    })
  })

  test('a block-style owner changes in place', async () => {
    const out = await changed(COMMENTED, 'ALTER CONNECTION google_drive OWNER TO `dave@example.com`')
    expect(lineDiff(COMMENTED, out)).toEqual({
      at: lineNo(COMMENTED, '      group: data-engineering   # block-style owner'),
      removed: ['      group: data-engineering   # block-style owner'],
      added: ['      user: dave@example.com   # block-style owner'],
    })
  })

  test('reports the previous owner', () => {
    expect(apply(COMMENTED, 'ALTER CONNECTION internal_api OWNER TO USER `root`')).toMatchObject({ kind: 'changed', previousOwner: { group: 'platform' } })
  })

  test('the current owner again is a no-op; an unknown connection is refused', () => {
    expect(apply(COMMENTED, 'ALTER CONNECTION internal_api OWNER TO `platform`')).toEqual({ kind: 'unchanged', reason: 'already-owner' })
    expect(apply(COMMENTED, 'ALTER CONNECTION nope OWNER TO `platform`')).toEqual({ kind: 'refused', reason: 'unknown-connection' })
  })
})

describe('preconditions and safety net', () => {
  test('a file that does not match the schema is a precondition failure', () => {
    expect(() => apply('version: 2\n', 'GRANT USE CONNECTION ON CONNECTION c TO `x`')).toThrow('must load without problems')
    expect(() => apply('version: 1\nversion: 1\n', 'GRANT USE CONNECTION ON CONNECTION c TO `x`')).toThrow('must load without problems')
  })

  test('a layout it cannot edit is an error, never a wrong file', () => {
    const text =
      '{ version: 1, connections: { c: { host: "https://api.example.com", owner: { user: o }, auth: { type: bearer_token, token: { env: T } } } } }\n'
    expect(() => apply(text, 'GRANT USE CONNECTION ON CONNECTION c TO `x`')).toThrow('block mapping')
  })
})

describe('yamlString', () => {
  test.each([
    ['data-engineering', 'data-engineering'],
    ['alice@example.com', 'alice@example.com'],
    ['account users', 'account users'],
    ['123', '"123"'],
    ['true', '"true"'],
    ['null', '"null"'],
    ['1e3', '"1e3"'],
    ['-lead', '"-lead"'],
    ['@start', '"@start"'],
    ['a: b', '"a: b"'],
    ['x # y', '"x # y"'],
    ['two  spaces', '"two  spaces"'],
    ['tick`s', '"tick`s"'],
    ['quote"s', '"quote\\"s"'],
    ['ünïcode', '"ünïcode"'],
  ])('%s -> %s', (value, yaml) => {
    expect(yamlString(value)).toBe(yaml)
  })
})
