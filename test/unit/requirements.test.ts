import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, test } from 'vitest'

const AREAS = [
  'grant',
  'audit',
  'input',
  'redact',
  'http',
  'egress',
  'identity',
  'credential',
  'secret',
  'store',
  'refresh',
  'oauth',
  'consent',
  'flow',
  'config',
  'cli',
  'mcp',
  'type',
  'serve',
]
const ID = new RegExp(`\\[((?:${AREAS.join('|')}):[a-z0-9-]+)\\]`, 'g')

async function testFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true })
  const nested = await Promise.all(
    entries.map((e) =>
      e.isDirectory() ? testFiles(path.join(dir, e.name)) : Promise.resolve(/\.(test|contract)\.ts$/.test(e.name) ? [path.join(dir, e.name)] : []),
    ),
  )
  return nested.flat()
}

describe('security requirement ids', () => {
  test('every id a test title cites is listed in docs/architecture.md, and every listed id is tested', async () => {
    const root = new URL('../../', import.meta.url).pathname
    const cited = new Set<string>()
    for (const file of await testFiles(path.join(root, 'test'))) {
      for (const m of (await readFile(file, 'utf8')).matchAll(ID)) cited.add(m[1] as string)
    }
    const doc = await readFile(path.join(root, 'docs/architecture.md'), 'utf8')
    const listed = new Set([...doc.matchAll(/^\| `([a-z]+:[a-z0-9-]+)` \|/gm)].map((m) => m[1] as string))
    expect([...cited].filter((id) => !listed.has(id)).sort()).toEqual([])
    expect([...listed].filter((id) => !cited.has(id)).sort()).toEqual([])
  })
})
