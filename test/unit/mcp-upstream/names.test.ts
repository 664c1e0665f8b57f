/**
 * Exposed names of upstream MCP tools (design.md §12): sanitising, the stable shortening of long
 * names, the include/exclude filter, and the index with HTTP tools winning and later tools left out.
 */
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import type { Connection } from '../../../src/config/load.js'
import { buildToolIndex, exposedToolName, toolFilter } from '../../../src/mcp-upstream/names.js'

const NAME = /^[A-Za-z0-9_-]{1,64}$/

const conn = (name: string, prefix = name): Connection => ({ name, mcp: { prefix } }) as unknown as Connection

describe('exposedToolName', () => {
  test('prefix__tool, other characters become _', () => {
    expect(exposedToolName('github', 'get_issue')).toBe('github__get_issue')
    expect(exposedToolName('gh', 'repo.list/all é')).toBe('gh__repo_list_all__')
  })

  test('a 70-character name keeps 57 characters, _ and 6 hex of SHA-256 of the unsanitized name', () => {
    const upstream = `${'a'.repeat(60)}.tool`
    const raw = `srv__${upstream}`
    const name = exposedToolName('srv', upstream)
    expect(raw.length).toBe(70)
    expect(name).toBe(`${raw.replace('.', '_').slice(0, 57)}_${createHash('sha256').update(raw).digest('hex').slice(0, 6)}`)
    expect(name).toHaveLength(64)
    // Two names alike after sanitising still differ: the hash is of the original.
    expect(exposedToolName('srv', `${'a'.repeat(60)}/tool`)).not.toBe(name)
  })

  test('a name of exactly 64 characters is kept as it is', () => {
    const upstream = 'b'.repeat(64 - 'p__'.length)
    expect(exposedToolName('p', upstream)).toBe(`p__${upstream}`)
  })

  test('property: always a valid tool name, deterministic, and distinct short names stay distinct', () => {
    const prefix = fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/)
    fc.assert(
      fc.property(prefix, fc.string({ maxLength: 200, unit: 'binary' }), (p, tool) => {
        const name = exposedToolName(p, tool)
        expect(name).toMatch(NAME)
        expect(exposedToolName(p, tool)).toBe(name)
      }),
    )
    const safe = fc.stringMatching(/^[A-Za-z0-9_-]{0,30}$/)
    fc.assert(
      fc.property(prefix, safe, safe, (p, a, b) => {
        fc.pre(a !== b && `${p}__${a}`.length <= 64 && `${p}__${b}`.length <= 64)
        expect(exposedToolName(p, a)).not.toBe(exposedToolName(p, b))
      }),
    )
    const long = fc.string({ minLength: 70, maxLength: 120, unit: 'binary' })
    fc.assert(
      fc.property(long, long, (a, b) => {
        fc.pre(a !== b)
        // Different long names differ unless their first characters and 24 bits of hash agree.
        const [x, y] = [exposedToolName('p', a), exposedToolName('p', b)]
        if (x === y) expect(x.slice(0, 57)).toBe(y.slice(0, 57))
      }),
    )
  })
})

describe('toolFilter', () => {
  test('include: exact names and PREFIX*; absent: all; exclude wins', () => {
    const all = toolFilter(undefined, [])
    expect(['a', 'get_x'].map(all)).toEqual([true, true])
    const f = toolFilter(['get_*', 'search'], ['get_secret*'])
    expect(['get_issue', 'search', 'search_more', 'get_secret_key', 'delete_repo', 'get'].map(f)).toEqual([true, true, false, false, false, false])
    expect(toolFilter([], [])('a')).toBe(false)
    expect(toolFilter(undefined, ['*'])('anything')).toBe(false)
  })
})

describe('buildToolIndex', () => {
  test('HTTP tools win, the first source wins, definitions pass unchanged but for the name', () => {
    const a = conn('a', 'srv')
    const b = conn('b', 'srv')
    const echo = { name: 'echo', description: 'Echo', inputSchema: { type: 'object' }, annotations: { readOnlyHint: true } }
    const r = buildToolIndex(new Set(['srv__taken']), [
      { connection: a, tools: [echo, { name: 'taken' }, { name: '' }, { name: 3 }, { description: 'no name' }] },
      { connection: b, tools: [{ name: 'echo', description: 'other' }, { name: 'add' }] },
    ])
    expect(r.tools).toEqual([{ ...echo, name: 'srv__echo' }, { name: 'srv__add' }])
    expect([...r.index.entries()].map(([k, v]) => [k, v.connection.name, v.upstreamName])).toEqual([
      ['srv__echo', 'a', 'echo'],
      ['srv__add', 'b', 'add'],
    ])
    expect(r.collisions).toEqual([
      { exposedName: 'srv__taken', connection: 'a', upstreamName: 'taken', takenBy: 'srv__taken' },
      { exposedName: 'srv__echo', connection: 'b', upstreamName: 'echo', takenBy: 'a' },
    ])
    // The upstream's definition object is not modified.
    expect(echo.name).toBe('echo')
  })

  test('two upstream names that sanitise alike: the later one is a collision, never renamed', () => {
    const c = conn('c')
    const r = buildToolIndex(new Set(), [{ connection: c, tools: [{ name: 'a.b' }, { name: 'a/b' }] }])
    expect(r.tools).toEqual([{ name: 'c__a_b' }])
    expect(r.index.get('c__a_b')?.upstreamName).toBe('a.b')
    expect(r.collisions).toEqual([{ exposedName: 'c__a_b', connection: 'c', upstreamName: 'a/b', takenBy: 'c' }])
  })
})
