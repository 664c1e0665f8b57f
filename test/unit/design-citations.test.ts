/**
 * Code comments cite the design as `design.md §N`; every such citation in `src/` and `tools/`
 * must name a section that `docs/design.md` has (`## N. Title`), and no file in `src/`, `tools/`,
 * `test/` or `docs/` may point outside the repository (to the workspace's sibling `shared` folder).
 */
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, test } from 'vitest'

const ROOT = new URL('../../', import.meta.url).pathname

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true })
  const nested = await Promise.all(
    entries.map((e) => (e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : Promise.resolve(/\.(ts|md)$/.test(e.name) ? [path.join(dir, e.name)] : []))),
  )
  return nested.flat()
}

async function sources(dirs: readonly string[] = ['src', 'tools']): Promise<{ file: string; text: string }[]> {
  const files = (await Promise.all(dirs.map((d) => sourceFiles(path.join(ROOT, d))))).flat()
  return Promise.all(files.map(async (file) => ({ file: path.relative(ROOT, file), text: await readFile(file, 'utf8') })))
}

describe('design citations', () => {
  test('every `design.md §N` in src/ and tools/ names a section of docs/design.md', async () => {
    const design = await readFile(path.join(ROOT, 'docs/design.md'), 'utf8')
    const sections = new Set([...design.matchAll(/^## (\d+)\. /gm)].map((m) => m[1]))
    expect(sections.size).toBeGreaterThan(5)
    const cited: string[] = []
    const missing: string[] = []
    for (const { file, text } of await sources())
      for (const m of text.matchAll(/design\.md\s*(?:\*\s*)?§\s*(\d+)/g)) {
        cited.push(m[1] ?? '')
        if (!sections.has(m[1])) missing.push(`${file}: design.md §${m[1]}`)
      }
    expect(cited.length).toBeGreaterThan(10)
    expect(missing).toEqual([])
  })

  test('nothing in src/, tools/, test/ or docs/ points outside the repository', async () => {
    const all = await sources(['src', 'tools', 'test', 'docs'])
    expect(all.length).toBeGreaterThan(100)
    const outside = all.filter(({ text }) => /\.\.\/shared|\bshared\/(design|notes|style)/.test(text)).map(({ file }) => file)
    expect(outside).toEqual([])
  })
})
