/**
 * REVOKE is instant: a spawned `keyway serve` (the built bin), real MCP clients of both eras over
 * HTTP and a 2026-07-28 client listening on `subscriptions/listen`, and the config file edited
 * the three ways operators and platforms do it (in-place write, atomic rename-over, Kubernetes
 * `..data` symlink flip). After a grant is removed, the next call is PERMISSION_DENIED, the tool
 * leaves tools/list and the listener hears `notifications/tools/list_changed`. Bad edits keep the
 * last good config; SIGHUP reloads. The time from the write to the first denied call is printed.
 * Stdio too: `keyway serve --stdio` sends list_changed to its client after a grant edit.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { request } from 'node:http'
import { performance } from 'node:perf_hooks'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport, type McpSubscription } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { apiKeyLines, TEST_KEYS } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { connectClient, ERAS, textOf, type TestClient, type ToolCallResult } from '../helpers/mcp-clients.js'
import { KEYWAY_BIN, runKeyway, spawnKeyway, type SpawnedKeyway } from '../helpers/spawn-keyway.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'
import { until } from '../helpers/wait.js'

const TOKEN = 'sk-CANARY-reload-token-0123456789'
const POLL_MS = 10

type EditMode = 'in-place write' | 'rename-over' | 'symlink swap'

let upstream: Upstream
beforeAll(async () => {
  upstream = await startUpstream()
})
afterAll(async () => {
  await upstream?.close()
})

/** carol keeps her grant throughout: a control that reloads never disturb other grants. */
function configText(port: number, grantBob: boolean, extra = ''): string {
  return `version: 1
server: { publicUrl: http://127.0.0.1:${port}, host: 127.0.0.1, port: ${port} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./data/audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
${extra}connections:
  issues:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { file: ./token.txt } }
grants:
${grantBob ? '  - { privilege: USE CONNECTION, on: issues, to: { user: bob@example.com } }\n' : ''}  - { privilege: USE CONNECTION, on: issues, to: { user: carol@example.com } }
`
}

/** A config folder laid out for the edit mode; `edit` replaces the file's content that way. */
async function configFolder(mode: EditMode, initial: string): Promise<{ dir: string; file: string; edit: (text: string) => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-reload-'))
  const file = path.join(dir, 'connections.yaml')
  await writeFile(path.join(dir, 'token.txt'), `${TOKEN}\n`)
  if (mode === 'in-place write') {
    await writeFile(file, initial)
    return { dir, file, edit: (text) => writeFile(file, text) }
  }
  if (mode === 'rename-over') {
    await writeFile(file, initial)
    let n = 0
    return {
      dir,
      file,
      edit: async (text) => {
        const tmp = path.join(dir, `.connections.yaml.${++n}.tmp`)
        await writeFile(tmp, text)
        await rename(tmp, file)
      },
    }
  }
  // A Kubernetes ConfigMap volume: connections.yaml -> ..data/connections.yaml, ..data -> ..<stamp>.
  // The token file sits next to the config as a plain file (relative paths resolve against the link's folder).
  let stamp = 0
  let live = `..stamp_${stamp}`
  await mkdir(path.join(dir, live))
  await writeFile(path.join(dir, live, 'connections.yaml'), initial)
  await symlink(live, path.join(dir, '..data'))
  await symlink('..data/connections.yaml', file)
  return {
    dir,
    file,
    edit: async (text) => {
      const next = `..stamp_${++stamp}`
      await mkdir(path.join(dir, next))
      await writeFile(path.join(dir, next, 'connections.yaml'), text)
      await symlink(next, path.join(dir, '..data_tmp'))
      await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'))
      await rm(path.join(dir, live), { recursive: true })
      live = next
    },
  }
}

interface Listener {
  readonly client: ModernClient
  readonly subscription: McpSubscription
  changes: number
}

/** A 2026-07-28 client that opens `subscriptions/listen` for tool list changes. */
async function listenForToolChanges(mcpUrl: string, bearer: string): Promise<Listener> {
  const client = new ModernClient({ name: 'keyway-test-listener', version: '1.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await client.connect(new ModernTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${bearer}` } } }))
  const listener = { client, changes: 0 } as { client: ModernClient; subscription: McpSubscription; changes: number }
  client.setNotificationHandler('notifications/tools/list_changed', () => {
    listener.changes++
  })
  listener.subscription = await client.listen({ toolsListChanged: true })
  return listener
}

const call = (c: TestClient): Promise<ToolCallResult> => c.callTool('issues', { method: 'GET', path: '/items' })
const isDenied = (r: ToolCallResult): boolean => r.isError === true && textOf(r).startsWith('PERMISSION_DENIED')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Calls every 10 ms until `done(result)`; returns ms from `t0` to that result. */
async function pollUntil(c: TestClient, t0: number, done: (r: ToolCallResult) => boolean, timeoutMs = 10_000): Promise<number> {
  for (;;) {
    const r = await call(c)
    const now = performance.now()
    if (done(r)) return now - t0
    if (now - t0 > timeoutMs) throw new Error(`no change within ${timeoutMs} ms; last result: ${textOf(r)}`)
    await sleep(POLL_MS)
  }
}

/** The problem lines `keyway validate` prints for a file (stderr lines starting with two spaces). */
async function validateProblems(file: string): Promise<string[]> {
  const r = await runKeyway(['validate', '--config', file])
  expect(r.code).toBe(1)
  return r.stderr
    .split('\n')
    .filter((l) => l.startsWith('  '))
    .map((l) => l.slice(2))
}

const latencies: { mode: string; change: string; ms: number }[] = []
afterAll(() => {
  if (latencies.length === 0) return
  console.log(
    [
      'REVOKE/GRANT latency, file write -> first call with the new outcome (calls polled every 10 ms):',
      ...latencies.map((l) => `  ${l.mode.padEnd(15)} ${l.change.padEnd(12)} ${l.ms.toFixed(1)} ms`),
    ].join('\n'),
  )
})

describe.each<EditMode>(['in-place write', 'rename-over', 'symlink swap'])('REVOKE by %s [grant:revoke-instant]', (mode) => {
  let keyway: SpawnedKeyway
  let port: number
  let folder: Awaited<ReturnType<typeof configFolder>>
  const bob: TestClient[] = []
  let carol: TestClient
  let listener: Listener

  beforeAll(async () => {
    port = await freePort()
    folder = await configFolder(mode, configText(port, true))
    keyway = await spawnKeyway(['serve', '--config', folder.file])
    expect(keyway.mcpUrl).toBe(`http://127.0.0.1:${port}/mcp`)
    const url = keyway.mcpUrl ?? ''
    for (const era of ERAS) bob.push(await connectClient(era, url, { bearer: TEST_KEYS.bob }))
    carol = await connectClient('legacy-v1', url, { bearer: TEST_KEYS.carol })
    listener = await listenForToolChanges(url, TEST_KEYS.bob)
  })

  afterAll(async () => {
    await listener?.subscription.close()
    await listener?.client.close()
    for (const c of bob) await c.close()
    await carol?.close()
    await keyway?.stop()
  })

  test('removing the grant denies the next call on every client era, drops the tool from tools/list, and notifies the listener', async () => {
    expect(listener.subscription.honoredFilter.toolsListChanged).toBe(true)
    for (const c of bob) {
      expect(await c.listToolNames()).toEqual(['issues'])
      expect((await call(c)).isError).toBeFalsy()
    }
    const poller = bob[0]
    if (!poller) throw new Error('no client')

    const t0 = performance.now()
    await folder.edit(configText(port, false))
    const ms = await pollUntil(poller, t0, isDenied)
    latencies.push({ mode, change: 'REVOKE', ms })

    const upstreamBefore = upstream.requests.length
    for (const c of bob) {
      const r = await call(c)
      expect(isDenied(r), `${c.era}: ${textOf(r)}`).toBe(true)
      expect(textOf(r)).toMatch(/^PERMISSION_DENIED: user bob@example\.com does not hold USE CONNECTION on connection "issues"/)
      expect(await c.listToolNames()).toEqual([])
    }
    expect(upstream.requests.length).toBe(upstreamBefore)
    await until('notifications/tools/list_changed', () => listener.changes >= 1, 5_000)
    // Other grants are untouched by the reload.
    expect((await call(carol)).isError).toBeFalsy()
    expect(keyway.logs().some((l) => l.msg === 'config reloaded' && l.grants === 1)).toBe(true)
  })

  test('granting again is just as quick, and notifies again', async () => {
    const poller = bob[1]
    if (!poller) throw new Error('no client')
    const changesBefore = listener.changes
    const t0 = performance.now()
    await folder.edit(configText(port, true))
    const ms = await pollUntil(poller, t0, (r) => !r.isError)
    latencies.push({ mode, change: 'GRANT', ms })
    for (const c of bob) expect(await c.listToolNames()).toEqual(['issues'])
    await until('a second notifications/tools/list_changed', () => listener.changes > changesBefore, 5_000)
  })
})

describe('bad edits keep the last good config [config:keep-last-good]', () => {
  let keyway: SpawnedKeyway
  let port: number
  let folder: Awaited<ReturnType<typeof configFolder>>
  let bob: TestClient

  beforeAll(async () => {
    port = await freePort()
    folder = await configFolder('rename-over', configText(port, true))
    keyway = await spawnKeyway(['serve', '--config', folder.file])
    bob = await connectClient('legacy-v1', keyway.mcpUrl ?? '', { bearer: TEST_KEYS.bob })
  })
  afterAll(async () => {
    await bob?.close()
    await keyway?.stop()
  })

  test.each([
    ['invalid YAML', () => `${configText(port, false)}grants: [unclosed\n`],
    ['an unknown key', () => configText(port, false, 'colour: blue\n')],
    ['a grant on an unknown connection', () => configText(port, false).replace('on: issues, to: { user: carol', 'on: nope, to: { user: carol')],
  ])('%s is rejected with the problem lines keyway validate prints; calls are still allowed', async (_name, bad) => {
    const rejectionsBefore = keyway.logs().filter((l) => l.msg === 'config rejected; the last good config stays live').length
    await folder.edit(bad())
    await until(
      'a config rejected log line',
      () => keyway.logs().filter((l) => l.msg === 'config rejected; the last good config stays live').length > rejectionsBefore,
      5_000,
    )
    const logged = keyway
      .logs()
      .filter((l) => l.msg === 'config rejected; the last good config stays live')
      .at(-1)
    const expected = await validateProblems(folder.file)
    expect(expected.length).toBeGreaterThan(0)
    expect(logged).toMatchObject({ level: 'warn', file: folder.file, problemCount: expected.length, problems: expected })
    // The revoke inside the bad file did not happen: the last good config is live.
    const r = await call(bob)
    expect(r.isError, textOf(r)).toBeFalsy()
    expect(await bob.listToolNames()).toEqual(['issues'])
  })

  test('the next good edit applies', async () => {
    await folder.edit(configText(port, false))
    await until('denied after the good edit', async () => isDenied(await call(bob)), 5_000)
  })
})

/** Status of a bare POST /mcp sent with this Host header (node:http sets it as given). */
function statusWithHost(mcpUrl: string, host: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const req = request(mcpUrl, { method: 'POST', headers: { host, 'content-type': 'application/json' } }, (res) => {
      res.resume()
      resolve(res.statusCode)
    })
    req.on('error', reject)
    req.end('{}')
  })
}

describe('reload rules [config:hot-reload]', () => {
  test('server.allowedHosts applies to the next request; a restart-only change is reported by name, a live one is not', async () => {
    const port = await freePort()
    const folder = await configFolder('in-place write', configText(port, true))
    await using keyway = await spawnKeyway(['serve', '--config', folder.file])
    const url = keyway.mcpUrl ?? ''
    // Refused by the Host check (403) before authentication is asked for (401).
    expect(await statusWithHost(url, 'keyway.example.test')).toBe(403)
    await folder.edit(
      configText(port, true)
        .replace(`port: ${port} }`, `port: ${port}, allowedHosts: [keyway.example.test] }`)
        .replace('./data/audit.jsonl', './data/audit-2.jsonl'),
    )
    const reloaded = await keyway.waitForLog((l) => l.msg === 'config changes that take effect only after a restart')
    expect(reloaded).toMatchObject({ level: 'warn', fields: ['audit.file'] })
    expect(await statusWithHost(url, 'keyway.example.test')).toBe(401)
    expect(await statusWithHost(url, 'other.example.test')).toBe(403)
  })
})

describe('SIGHUP [config:sighup]', () => {
  test('with --no-watch, edits wait for SIGHUP, which reloads at once', async () => {
    const port = await freePort()
    const folder = await configFolder('in-place write', configText(port, true))
    await using keyway = await spawnKeyway(['serve', '--no-watch', '--config', folder.file])
    const bob = await connectClient('modern', keyway.mcpUrl ?? '', { bearer: TEST_KEYS.bob })
    try {
      await folder.edit(configText(port, false))
      // Longer than the watcher's poll interval: nothing may reload without the signal.
      await sleep(2_500)
      expect((await call(bob)).isError).toBeFalsy()
      expect(keyway.logs().some((l) => l.msg === 'config reloaded')).toBe(false)
      const t0 = performance.now()
      keyway.signal('SIGHUP')
      const ms = await pollUntil(bob, t0, isDenied)
      latencies.push({ mode: '--no-watch', change: 'SIGHUP', ms })
      expect(ms).toBeLessThan(2_000)
      expect(keyway.logs().find((l) => l.msg === 'config reloaded')).toMatchObject({ reason: 'SIGHUP', grants: 1 })
    } finally {
      await bob.close()
    }
  })

  test('SIGHUP with unchanged content still reloads (secret files may have changed) and the process keeps serving', async () => {
    const port = await freePort()
    const folder = await configFolder('in-place write', configText(port, true))
    await using keyway = await spawnKeyway(['serve', '--config', folder.file])
    keyway.signal('SIGHUP')
    await keyway.waitForLog((l) => l.msg === 'config reloaded' && l.reason === 'SIGHUP')
    const bob = await connectClient('legacy-v2', keyway.mcpUrl ?? '', { bearer: TEST_KEYS.bob })
    try {
      expect((await call(bob)).isError).toBeFalsy()
    } finally {
      await bob.close()
    }
  })
})

describe('stdio [config:hot-reload]', () => {
  test('keyway serve --stdio sends notifications/tools/list_changed after a grant edit, and tools/list changes', async () => {
    const folder = await configFolder('in-place write', configText(0, true).replace(/server: \{[^}]*\}/, 'server: { port: 0 }'))
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [KEYWAY_BIN, 'serve', '--stdio', '--user', 'bob@example.com', '--config', folder.file],
      stderr: 'pipe',
    })
    let stderr = ''
    transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    const client = new LegacyClient({ name: 'keyway-test-stdio', version: '1.0.0' }, { capabilities: {} })
    let changes = 0
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      changes++
    })
    await client.connect(transport)
    try {
      await until('the ready line', () => stderr.includes('serving MCP on stdio as bob@example.com'), 10_000)
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['issues'])
      const t0 = performance.now()
      await folder.edit(configText(0, false).replace(/server: \{[^}]*\}/, 'server: { port: 0 }'))
      await until('notifications/tools/list_changed on stdio', () => changes >= 1, 5_000)
      latencies.push({ mode: 'stdio', change: 'list_changed', ms: performance.now() - t0 })
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual([])
      const r = (await client.callTool({ name: 'issues', arguments: { path: '/x' } })) as ToolCallResult
      expect(isDenied(r)).toBe(true)
    } finally {
      await client.close()
    }
  })
})
