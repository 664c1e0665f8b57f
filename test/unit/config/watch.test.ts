/**
 * Hot reload on a real file system: each way a config file gets replaced (in-place write,
 * rename-over, Kubernetes `..data` symlink flip, a symlink to a file elsewhere), the polling
 * fallback, debouncing, rejection of bad edits with the validate problem lines, and the seam for
 * removed connections.
 * @module
 */
import { afterEach, describe, expect, test, vi } from 'vitest'
import { mkdir, mkdtemp, readFile, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createMemoryAuditLog } from '../../../src/audit/audit-log.js'
import type { ConfigEvent } from '../../../src/audit/events.js'
import { loadConfigFile, loadConfigText, type ConfigSnapshot } from '../../../src/config/load.js'
import { createConfigReloader, hashConfigFile, watchConfig, type ConfigWatcher, type WatchOptions } from '../../../src/config/watch.js'
import { createMemoryLogger } from '../../../src/log.js'
import { until } from '../../helpers/wait.js'

const ENV = { T: 'token' }

function config(grants: readonly string[], extra = ''): string {
  return `version: 1
connections:
  alpha:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
  beta:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
${extra}grants:
${grants.map((g) => `  - { privilege: USE CONNECTION, on: ${g}, to: { user: alice@example.com } }`).join('\n') || '  []'}
`
}

const load = (text: string, file: string) => loadConfigText(text, file, { env: ENV })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Harness {
  readonly dir: string
  readonly file: string
  readonly loaded: ConfigSnapshot[]
  readonly rejected: (readonly string[])[]
  readonly removed: (readonly string[])[]
  readonly audit: ReturnType<typeof createMemoryAuditLog>
  readonly log: ReturnType<typeof createMemoryLogger>
  watcher: ConfigWatcher
}

const open: ConfigWatcher[] = []
afterEach(async () => {
  for (const w of open.splice(0)) await w.close()
})

async function start(setup: (dir: string) => Promise<string>, opts: Partial<WatchOptions> = {}): Promise<Harness> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-watch-'))
  const file = await setup(dir)
  const first = await loadConfigFile(file, { env: ENV })
  if (!first.ok) throw new Error(first.problems.join('\n'))
  const h: Omit<Harness, 'watcher'> = { dir, file, loaded: [], rejected: [], removed: [], audit: createMemoryAuditLog(), log: createMemoryLogger() }
  const initialHash = await hashConfigFile(file)
  const watcher = watchConfig(file, {
    load,
    onLoad: (s) => h.loaded.push(s),
    onReject: (p) => h.rejected.push(p),
    onConnectionsRemoved: (names) => void h.removed.push(names),
    initial: first.snapshot,
    ...(initialHash ? { initialHash } : {}),
    debounceMs: 20,
    pollMs: 100,
    log: h.log,
    audit: h.audit,
    ...opts,
  })
  open.push(watcher)
  await watcher.ready
  return Object.assign(h, { watcher })
}

const grantsOf = (s: ConfigSnapshot | undefined) => s?.grants.map((g) => g.on)
const configEvents = (h: Harness) => h.audit.events.filter((e): e is ConfigEvent => e.type.startsWith('config.'))

async function plainFile(dir: string): Promise<string> {
  const file = path.join(dir, 'connections.yaml')
  await writeFile(file, config(['alpha', 'beta']))
  return file
}

/** The layout kubelet writes for a ConfigMap volume: file -> ..data/file, ..data -> ..<timestamp>. */
async function configMapVolume(dir: string): Promise<string> {
  await mkdir(path.join(dir, '..2026_01_01_00_00_00.000000001'))
  await writeFile(path.join(dir, '..2026_01_01_00_00_00.000000001', 'connections.yaml'), config(['alpha', 'beta']))
  await symlink('..2026_01_01_00_00_00.000000001', path.join(dir, '..data'))
  await symlink('..data/connections.yaml', path.join(dir, 'connections.yaml'))
  return path.join(dir, 'connections.yaml')
}

/** What kubelet does on a ConfigMap update: new timestamped dir, `..data_tmp` symlink, rename over `..data`, remove the old dir. */
async function flipConfigMap(dir: string, content: string, stamp: string): Promise<void> {
  const fresh = `..${stamp}`
  await mkdir(path.join(dir, fresh))
  await writeFile(path.join(dir, fresh, 'connections.yaml'), content)
  await symlink(fresh, path.join(dir, '..data_tmp'))
  await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'))
  await rm(path.join(dir, '..2026_01_01_00_00_00.000000001'), { recursive: true, force: true })
}

describe('watchConfig [config:hot-reload]', () => {
  test('an in-place write is validated and handed over; config.reloaded is audited with counts', async () => {
    const h = await start(plainFile)
    await writeFile(h.file, config(['alpha']))
    await until('the watcher', () => h.loaded.length === 1)
    expect(grantsOf(h.loaded[0])).toEqual(['alpha'])
    expect(h.watcher.current()).toBe(h.loaded[0])
    expect(Object.isFrozen(h.loaded[0])).toBe(true)
    expect(configEvents(h)).toEqual([{ type: 'config.reloaded', file: h.file, connections: 2, grants: 1 }])
    expect(h.rejected).toEqual([])
  })

  test('an atomic rename-over (editors, keyway sql) is seen, and later edits still are (re-armed)', async () => {
    const h = await start(plainFile)
    for (const [i, grants] of [['alpha'], [], ['beta']].entries()) {
      const tmp = path.join(h.dir, `.connections.yaml.tmp-${i}`)
      await writeFile(tmp, config(grants))
      await rename(tmp, h.file)
      await until('the watcher', () => h.loaded.length === i + 1)
      expect(grantsOf(h.loaded[i])).toEqual(grants)
    }
  })

  test('a Kubernetes ConfigMap `..data` symlink flip is seen, twice', async () => {
    const h = await start(configMapVolume)
    await flipConfigMap(h.dir, config(['beta']), '2026_01_01_00_01_00.000000002')
    await until('the watcher', () => h.loaded.length === 1)
    expect(grantsOf(h.loaded[0])).toEqual(['beta'])
    // The second flip removes the directory the first one created.
    const fresh = '..2026_01_01_00_02_00.000000003'
    await mkdir(path.join(h.dir, fresh))
    await writeFile(path.join(h.dir, fresh, 'connections.yaml'), config([]))
    await symlink(fresh, path.join(h.dir, '..data_tmp'))
    await rename(path.join(h.dir, '..data_tmp'), path.join(h.dir, '..data'))
    await rm(path.join(h.dir, '..2026_01_01_00_01_00.000000002'), { recursive: true })
    await until('the watcher', () => h.loaded.length === 2)
    expect(grantsOf(h.loaded[1])).toEqual([])
  })

  test('a config file that is a symlink to a file elsewhere: edits of the target are seen', async () => {
    const h = await start(async (dir) => {
      await mkdir(path.join(dir, 'elsewhere'))
      await writeFile(path.join(dir, 'elsewhere', 'real.yaml'), config(['alpha', 'beta']))
      await mkdir(path.join(dir, 'etc'))
      await symlink(path.join(dir, 'elsewhere', 'real.yaml'), path.join(dir, 'etc', 'connections.yaml'))
      return path.join(dir, 'etc', 'connections.yaml')
    })
    await writeFile(path.join(h.dir, 'elsewhere', 'real.yaml'), config(['beta']))
    await until('the watcher', () => h.loaded.length === 1)
    expect(grantsOf(h.loaded[0])).toEqual(['beta'])
  })

  test('without file events, the poll still finds the change', async () => {
    const h = await start(plainFile, { fileEvents: false, pollMs: 50 })
    await writeFile(h.file, config([]))
    await until('the watcher', () => h.loaded.length === 1)
    expect(grantsOf(h.loaded[0])).toEqual([])
  })

  test('a burst of writes is debounced into one reload of the final content', async () => {
    const h = await start(plainFile, { debounceMs: 80 })
    for (const grants of [['alpha'], ['beta'], [], ['alpha', 'beta'], ['beta']]) await writeFile(h.file, config(grants))
    await until('the watcher', () => h.loaded.length === 1)
    await sleep(200)
    expect(h.loaded).toHaveLength(1)
    expect(grantsOf(h.loaded[0])).toEqual(['beta'])
  })

  test('the same content rewritten (touch, identical save) reloads nothing', async () => {
    const h = await start(plainFile)
    await writeFile(h.file, config(['alpha', 'beta']))
    await sleep(250)
    expect(h.loaded).toEqual([])
    expect(configEvents(h)).toEqual([])
  })

  test.each([
    ['invalid YAML', (g: string) => `${config([g])}\n  bad: [unclosed\n`],
    ['an unknown key', (g: string) => config([g], 'colour: blue\n')],
    ['a grant on an unknown connection', () => config(['gamma'])],
  ])('%s is rejected with the validate problem lines; the last good config stays [config:keep-last-good]', async (_name, bad) => {
    const h = await start(plainFile)
    await writeFile(h.file, bad('alpha'))
    await until('the watcher', () => h.rejected.length === 1)
    const expected = await loadConfigFile(h.file, { env: ENV })
    expect(expected.ok).toBe(false)
    if (expected.ok) return
    expect(h.rejected[0]).toEqual(expected.problems)
    expect(h.loaded).toEqual([])
    expect(grantsOf(h.watcher.current())).toEqual(['alpha', 'beta'])
    expect(configEvents(h)).toEqual([{ type: 'config.rejected', file: h.file, problems: expected.problems.length }])
    const warn = h.log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'warn')
    expect(warn).toMatchObject({ msg: 'config rejected; the last good config stays live', problemCount: expected.problems.length, problems: expected.problems })
    // The poll sees the same bad file again and again; it is reported once.
    await sleep(250)
    expect(h.rejected).toHaveLength(1)
    // Fixing the file applies it.
    await writeFile(h.file, config(['beta']))
    await until('the watcher', () => h.loaded.length === 1)
    expect(grantsOf(h.loaded[0])).toEqual(['beta'])
  })

  test('a deleted file is rejected as "file not found" and the last good config stays', async () => {
    const h = await start(plainFile)
    await unlink(h.file)
    await until('the watcher', () => h.rejected.length === 1)
    expect(h.rejected[0]).toEqual([`${h.file}:1 (file): file not found`])
    expect(grantsOf(h.watcher.current())).toEqual(['alpha', 'beta'])
    await writeFile(h.file, config([]))
    await until('the watcher', () => h.loaded.length === 1)
  })

  test('an edit made between the initial load and arming the watch is not missed', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-watch-'))
    const file = await plainFile(dir)
    const initialHash = await hashConfigFile(file)
    await writeFile(file, config(['beta']))
    const loaded: ConfigSnapshot[] = []
    const watcher = watchConfig(file, { load, onLoad: (s) => loaded.push(s), ...(initialHash ? { initialHash } : {}), pollMs: 60_000 })
    open.push(watcher)
    await watcher.ready
    expect(grantsOf(loaded[0])).toEqual(['beta'])
  })

  test('removing or renaming a connection reports the old names through onConnectionsRemoved', async () => {
    const h = await start(plainFile)
    await writeFile(h.file, config(['alpha']).replace(/ {2}beta:/, '  gamma:'))
    await until('the watcher', () => h.loaded.length === 1 && h.removed.length === 1)
    expect(h.removed[0]).toEqual(['beta'])
  })
})

describe('createConfigReloader', () => {
  test('reload() compares the content hash; force (SIGHUP) reloads unchanged content', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-reload-'))
    const file = await plainFile(dir)
    const loaded: ConfigSnapshot[] = []
    const initialHash = await hashConfigFile(file)
    const r = createConfigReloader(file, { load, onLoad: (s) => loaded.push(s), ...(initialHash ? { initialHash } : {}) })
    expect(await r.reload('test')).toEqual({ kind: 'unchanged' })
    const forced = await r.reload('SIGHUP', { force: true })
    expect(forced.kind).toBe('reloaded')
    expect(loaded).toHaveLength(1)
    await writeFile(file, config([]))
    // Concurrent calls are serialized; the second joins the first, which has not started yet.
    const [a, b] = await Promise.all([r.reload('x'), r.reload('y')])
    expect(a.kind).toBe('reloaded')
    expect(b).toBe(a)
    expect(loaded).toHaveLength(2)
    await r.close()
  })

  test('a snapshot the caller refuses to take is not treated as live', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-reload-'))
    const file = await plainFile(dir)
    const log = createMemoryLogger()
    const r = createConfigReloader(file, {
      load,
      log,
      onLoad: () => {
        throw new Error('boom')
      },
    })
    const out = await r.reload('test')
    expect(out.kind).toBe('rejected')
    expect(r.current()).toBeUndefined()
    expect(log.lines.some((l) => l.includes('config reload could not be applied'))).toBe(true)
  })

  test('a rejected file shows in state() and is warned about every interval until a good file loads, the good one is back, or close', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-reload-'))
    const file = await plainFile(dir)
    const good = await readFile(file, 'utf8')
    const log = createMemoryLogger()
    const reminders = (): number => log.lines.filter((l) => l.includes('config file on disk is still rejected')).length
    const initialHash = await hashConfigFile(file)
    // Only the interval timer is faked: file reads stay real.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    try {
      const r = createConfigReloader(file, {
        load,
        log,
        onLoad: () => undefined,
        now: () => 1_000,
        rejectedLogIntervalMs: 60_000,
        ...(initialHash ? { initialHash } : {}),
      })
      expect(r.state()).toEqual({ kind: 'ok' })
      await writeFile(file, `${good}bogus: 1\n`)
      expect((await r.reload('edit')).kind).toBe('rejected')
      expect(r.state()).toMatchObject({ kind: 'rejected', sinceMs: 1_000 })
      expect(r.state().kind === 'rejected' && r.state()).toMatchObject({ problems: [expect.stringContaining('bogus')] })
      vi.advanceTimersByTime(180_000)
      expect(reminders()).toBe(3)
      // A good file loads: no more warnings.
      await writeFile(file, config([]))
      expect((await r.reload('fix')).kind).toBe('reloaded')
      expect(r.state()).toEqual({ kind: 'ok' })
      vi.advanceTimersByTime(180_000)
      expect(reminders()).toBe(3)
      // Rejected again, then the good content is put back: unchanged, and not rejected any more.
      const goodAgain = await readFile(file, 'utf8')
      await writeFile(file, 'version: 2\n')
      expect((await r.reload('edit')).kind).toBe('rejected')
      vi.advanceTimersByTime(60_000)
      expect(reminders()).toBe(4)
      await writeFile(file, goodAgain)
      expect(await r.reload('revert')).toEqual({ kind: 'unchanged' })
      expect(r.state()).toEqual({ kind: 'ok' })
      vi.advanceTimersByTime(180_000)
      expect(reminders()).toBe(4)
      // Rejected, then closed: the warnings stop with it.
      await writeFile(file, 'version: 3\n')
      expect((await r.reload('edit')).kind).toBe('rejected')
      await r.close()
      vi.advanceTimersByTime(180_000)
      expect(reminders()).toBe(4)
    } finally {
      vi.useRealTimers()
    }
  })
})
