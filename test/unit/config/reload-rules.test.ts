/**
 * The reload rules table (`src/config/reload-rules.ts`) against the config schema it classifies
 * and the README that documents it, and the report of a reload that changes a restart-only setting.
 */
import { readFile } from 'node:fs/promises'
import { describe, expect, test } from 'vitest'
import { loadConfigText } from '../../../src/config/load.js'
import { liveSettings, RELOAD_RULES, restartOnlyChanges, restartSettings } from '../../../src/config/reload-rules.js'
import { ConfigSchema } from '../../../src/config/schema.js'

interface ZodLike {
  readonly _zod: { readonly def: { readonly type: string; readonly innerType?: ZodLike; readonly shape?: Record<string, ZodLike> } }
}

/** Setting paths of the schema: objects are walked into; anything else (value, array, record, union) is one setting. */
function schemaLeaves(schema: ZodLike, at: readonly string[] = []): string[] {
  const def = schema._zod.def
  if ((def.type === 'optional' || def.type === 'default' || def.type === 'prefault') && def.innerType) return schemaLeaves(def.innerType, at)
  if (def.type === 'object' && def.shape) return Object.entries(def.shape).flatMap(([key, inner]) => schemaLeaves(inner, [...at, key]))
  return [at.join('.')]
}

/** The settings in backticks of the README's list item that starts with `label`. */
async function readmeList(label: string): Promise<string[]> {
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8')
  const start = readme.indexOf(`- **${label}`)
  expect(start, `README has a "- **${label}" item`).toBeGreaterThan(0)
  const rest = readme.slice(start + 2)
  const end = rest.search(/\n(- |\n)/)
  const item = rest.slice(0, end < 0 ? undefined : end)
  return [...new Set([...item.matchAll(/`([A-Za-z][A-Za-z.]*)`/g)].map((m) => m[1] ?? '').filter((name) => name in RELOAD_RULES))]
}

const ENV = { T: 'token', K: Buffer.alloc(32, 1).toString('base64') }
const FILE = '/cfg/connections.yaml'

describe('reload rules [config:hot-reload]', () => {
  test('every leaf of the config schema is classified, and nothing else', () => {
    expect(Object.keys(RELOAD_RULES).sort()).toEqual(schemaLeaves(ConfigSchema as unknown as ZodLike).sort())
  })

  test('the README lists exactly the restart and live settings of the table', async () => {
    expect((await readmeList('Needs a restart')).sort()).toEqual(restartSettings().sort())
    expect((await readmeList('Applies live')).sort()).toEqual(liveSettings().sort())
  })

  test('a reload names the changed restart-only settings, never the live ones', async () => {
    const base = 'version: 1\nstore: { url: "memory://", encryptionKey: { env: K } }\n'
    const a = await loadConfigText(base, FILE, { env: ENV })
    const b = await loadConfigText(
      `${base}server: { port: 9999, publicUrl: https://keyway.example.com, allowedHosts: [keyway.example.com] }\naudit: { file: ./other.jsonl }\n`,
      FILE,
      { env: ENV },
    )
    if (!a.ok || !b.ok) throw new Error('fixture does not load')
    expect(restartOnlyChanges(a.snapshot, b.snapshot)).toEqual(['server.port', 'audit.file'])
    expect(restartOnlyChanges(a.snapshot, a.snapshot)).toEqual([])
  })

  test('a store secret that changes behind the same reference is reported by name', async () => {
    const text = 'version: 1\nstore: { url: "memory://", encryptionKey: { env: K } }\n'
    const a = await loadConfigText(text, FILE, { env: ENV })
    const b = await loadConfigText(text, FILE, { env: { ...ENV, K: Buffer.alloc(32, 2).toString('base64') } })
    if (!a.ok || !b.ok) throw new Error('fixture does not load')
    expect(restartOnlyChanges(a.snapshot, b.snapshot)).toEqual(['store.encryptionKey'])
  })
})
