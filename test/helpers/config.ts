/**
 * Config files for tests: writes YAML into a fresh temporary folder and loads it exactly as
 * `keyway serve` would, failing loudly with the problem report when it does not load.
 * @module
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { loadConfigFile, type ConfigSnapshot, type Env } from '../../src/config/load.js'
import { sha256Hex } from '../../src/encoding.js'

export async function writeTempConfig(yaml: string, files: Readonly<Record<string, string>> = {}): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-test-'))
  const file = path.join(dir, 'connections.yaml')
  await writeFile(file, yaml)
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content)
  return { dir, file }
}

export async function loadTestConfig(
  yaml: string,
  env: Env = {},
  files: Readonly<Record<string, string>> = {},
): Promise<{ snapshot: ConfigSnapshot; dir: string; file: string }> {
  const { dir, file } = await writeTempConfig(yaml, files)
  const r = await loadConfigFile(file, { env })
  if (!r.ok) throw new Error(`test config does not load:\n${r.problems.join('\n')}`)
  return { snapshot: r.snapshot, dir, file }
}

/** Fixed API keys of the test users, and their config lines. */
export const TEST_KEYS = {
  alice: 'kw_test_alice_key_aaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  bob: 'kw_test_bob_key_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',
  carol: 'kw_test_carol_key_cccccccccccccccccccccccccccc',
} as const

export function apiKeyLines(groups: Partial<Record<keyof typeof TEST_KEYS, string[]>> = {}): string {
  return (Object.keys(TEST_KEYS) as (keyof typeof TEST_KEYS)[])
    .map((u) => `    - { user: ${u}@example.com, groups: [${(groups[u] ?? []).join(', ')}], sha256: ${sha256Hex(TEST_KEYS[u])} }`)
    .join('\n')
}
