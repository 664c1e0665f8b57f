/**
 * docs/architecture.md's module map is what a newcomer reads first: every folder of `src/` and
 * every file at its top level must be named there, so a new module cannot land unexplained.
 */
import { readdir, readFile } from 'node:fs/promises'
import { expect, test } from 'vitest'

test('the module map names every folder and top-level file of src/', async () => {
  const root = new URL('../../', import.meta.url).pathname
  const doc = await readFile(`${root}docs/architecture.md`, 'utf8')
  const map = doc.slice(doc.indexOf('## Module map'), doc.indexOf('\n## ', doc.indexOf('## Module map') + 1))
  const entries = await readdir(`${root}src`, { withFileTypes: true })
  const names = entries.map((e) => (e.isDirectory() ? `${e.name}/` : e.name)).filter((n) => n.endsWith('/') || n.endsWith('.ts'))
  expect(names.length).toBeGreaterThan(10)
  expect(names.filter((n) => !map.includes(n))).toEqual([])
})
