/**
 * `keyway mcp sync CONNECTION` against a real SQLite token store in a temporary folder: each run
 * writes a new sync generation that a catalog on the same store picks up; a connection that is
 * missing or speaks HTTP, and a memory store, are clear errors. Runs in-process through the CLI
 * I/O seam, in a shell without the connections' secrets (only the store key is set).
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { syncStateName } from '../../src/mcp-upstream/catalog.js'
import { openTokenStore } from '../../src/store/index.js'
import type { CliIo } from '../../tools/cli.js'
import { run as mcp } from '../../tools/mcp.js'
import { run as validate } from '../../tools/validate.js'

const ENV = { KEYWAY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }
const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

const configText = (store = '{ url: "sqlite://./data/keyway.sqlite", encryptionKey: { env: KEYWAY_ENCRYPTION_KEY } }') => `version: 1
store: ${store}
connections:
  api:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: API_TOKEN } }
  everything:
    host: https://mcp.example.com
    protocol: mcp
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: MCP_TOKEN } }
  linear:
    host: https://mcp.linear.app
    protocol: mcp
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: MCP_TOKEN } }
`

async function workspace(text = configText()): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-mcp-sync-'))
  dirs.push(dir)
  const file = path.join(dir, 'connections.yaml')
  await writeFile(file, text)
  return file
}

async function runMcp(argv: string[], env: Record<string, string> = ENV) {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env, cwd: process.cwd() }
  const code = await mcp(argv, io)
  return { code, out, err }
}

async function generation(file: string, connection: string): Promise<unknown> {
  const r = await loadConfigFile(file, { env: { ...ENV, API_TOKEN: 'x', MCP_TOKEN: 'x' } })
  if (!r.ok) throw new Error(r.problems.join('\n'))
  const store = await openTokenStore(r.snapshot.store, { warn: () => {} })
  try {
    return (await store.getState(syncStateName(connection)))?.id
  } finally {
    await store.close()
  }
}

describe('keyway mcp sync', () => {
  test('writes a new generation on every run, in a shell without the connections secrets', async () => {
    const file = await workspace()
    expect(await runMcp(['sync', 'everything', '--config', file])).toEqual({
      code: 0,
      out: ['synced "everything": every replica refetches its tool list within 5 s'],
      err: [],
    })
    const first = await generation(file, 'everything')
    expect(typeof first).toBe('string')
    expect((await runMcp(['sync', 'everything', '--config', file])).code).toBe(0)
    const second = await generation(file, 'everything')
    expect(second).not.toBe(first)
    // Syncing a connection that is not exposed is allowed (it may be exposed later); others are untouched.
    expect((await runMcp(['sync', 'linear', '--config', file])).code).toBe(0)
    expect(await generation(file, 'everything')).toBe(second)
  })

  test('an unknown or HTTP connection is refused, listing the mcp connections; bad usage exits 2', async () => {
    const file = await workspace()
    expect(await runMcp(['sync', 'nope', '--config', file])).toEqual({
      code: 1,
      out: [],
      err: [`keyway: no connection "nope" in ${file}; connections with protocol: mcp: everything, linear`],
    })
    expect((await runMcp(['sync', 'api', '--config', file])).err).toEqual([
      'keyway: connection "api" is protocol: http; connections with protocol: mcp: everything, linear',
    ])
    expect(await runMcp(['sync', '--config', file])).toEqual({ code: 2, out: [], err: ['usage: keyway mcp sync CONNECTION [--config F]'] })
    expect((await runMcp(['list', 'everything', '--config', file])).code).toBe(2)
  })

  test('a memory store or a store without its key cannot carry a sync', async () => {
    const memory = await workspace(configText('{ url: "memory://" }'))
    const r = await runMcp(['sync', 'everything', '--config', memory])
    expect(r.code).toBe(1)
    expect(r.err[0]).toMatch(/^keyway: cannot sync: store\.url is memory:\/\//)
    const file = await workspace()
    const keyless = await runMcp(['sync', 'everything', '--config', file], {})
    expect(keyless.code).toBe(1)
    expect(keyless.err[0]).toContain('KEYWAY_ENCRYPTION_KEY')
  })

  test('keyway validate counts the MCP upstreams', async () => {
    const file = await workspace()
    const out: string[] = []
    const code = await validate(['--config', file], {
      out: (l) => out.push(l),
      err: () => {},
      env: { ...ENV, API_TOKEN: 'x', MCP_TOKEN: 'x' },
      cwd: process.cwd(),
    })
    expect(code).toBe(0)
    expect(out[0]).toBe(`${file}: ok (3 connections, 1 tool, 1 MCP upstream, 0 grants)`)
  })
})
