import { readFile } from 'node:fs/promises'
import { describe, expect, test } from 'vitest'
import { AppError, ERROR_CODE_MEANINGS, TOOL_ERROR_CODES } from '../../src/errors.js'

describe('error codes', () => {
  test('the README tables list exactly the codes of the union, with the same meanings', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Error codes'), readme.indexOf('## Security model'))
    const rows = [...section.matchAll(/^\| `([A-Z_]+)` \| (.+) \|$/gm)].map((m) => [m[1], m[2]])
    expect(Object.fromEntries(rows)).toEqual(ERROR_CODE_MEANINGS)
  })

  test('tool codes are exposed to callers, internal ones are not', () => {
    for (const code of TOOL_ERROR_CODES) expect(new AppError(code, 'x').expose).toBe(true)
    expect(new AppError('INTERNAL', 'x').expose).toBe(false)
    expect(new AppError('CONFIG_INVALID', 'x').expose).toBe(false)
  })
})
