/**
 * Throw-away Redis topologies for the high-availability tests, from Debian's `redis-server` and
 * `redis-sentinel`, on free loopback ports in a temp dir: a primary with one replica watched by
 * three Sentinels (quorum 2, down after 1 s, so a SIGKILLed primary is replaced in a few seconds),
 * and a three-master Cluster built with `redis-cli --cluster create`. Each test file starts its
 * own and tears it down; nothing here touches the shared Redis on 6379. Admin commands go through
 * `redis-cli`. Also the fail-fast check every unreachable topology must pass. Tests only; 127.0.0.1 only.
 * @module
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { performance } from 'node:perf_hooks'
import { expect } from 'vitest'
import type { StoreBackend } from '../../src/store/backend.js'
import { freePort } from './free-port.js'

const run = promisify(execFile)

/** The Sentinel name of the monitored primary. */
export const MASTER_NAME = 'kwmaster'

/** One `redis-server` / `redis-sentinel` child. */
export interface RedisProcess {
  readonly port: number
  readonly child: ChildProcess
  /** SIGKILL, and resolves when the process is gone. */
  kill(): Promise<void>
}

/** Runs `redis-cli -p <port> <args…>` and returns its trimmed output. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5_000 })
  return stdout.trim()
}

/** Polls `check` every 50 ms until it returns true (errors count as false), or throws after `ms`. */
export async function waitUntil(what: string, check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}

function startProcess(bin: string, args: readonly string[], port: number, cwd: string): RedisProcess {
  const child = spawn(bin, [...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  child.on('error', (e) => {
    stderr += String(e)
  })
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const proc: RedisProcess = {
    port,
    child,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await gone
    },
  }
  void gone.then(() => {
    if (stderr.trim() !== '' && child.signalCode === null) console.warn(`${bin} :${port} exited: ${stderr.trim().slice(0, 500)}`)
  })
  return proc
}

async function startServer(dir: string, extra: readonly string[] = []): Promise<RedisProcess> {
  const port = await freePort()
  const p = startProcess('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], port, dir)
  await waitUntil(`redis-server on ${port}`, async () => (await redisCli(port, 'PING')) === 'PONG', 10_000)
  return p
}

/** `INFO replication` as a field map. */
export async function replicationInfo(port: number): Promise<Map<string, string>> {
  const text = await redisCli(port, 'INFO', 'replication')
  return new Map(
    text
      .split(/\r?\n/)
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  )
}

export interface SentinelTopology extends AsyncDisposable {
  readonly primary: RedisProcess
  readonly replica: RedisProcess
  readonly sentinels: readonly RedisProcess[]
  /** `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/<MASTER_NAME>` */
  readonly url: string
  /** The port the Sentinels currently name as primary. */
  currentPrimaryPort(): Promise<number>
  close(): Promise<void>
}

/**
 * Starts a primary, a replica of it and three Sentinels, and resolves once the replica is in sync
 * and every Sentinel knows the replica and the two other Sentinels (so a failover can be voted).
 */
export async function startSentinelTopology(): Promise<SentinelTopology> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kw-sentinel-'))
  const procs: RedisProcess[] = []
  const close = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.kill()))
    await rm(dir, { recursive: true, force: true })
  }
  try {
    const primary = await startServer(dir)
    procs.push(primary)
    const replica = await startServer(dir, ['--replicaof', '127.0.0.1', String(primary.port)])
    procs.push(replica)
    await waitUntil('replica in sync', async () => (await replicationInfo(replica.port)).get('master_link_status') === 'up')
    const sentinels: RedisProcess[] = []
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const conf = path.join(dir, `sentinel-${port}.conf`)
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${primary.port} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 3000`,
          `sentinel parallel-syncs ${MASTER_NAME} 1`,
          '',
        ].join('\n'),
      )
      const s = startProcess('redis-sentinel', [conf], port, dir)
      procs.push(s)
      sentinels.push(s)
    }
    for (const s of sentinels) {
      await waitUntil(`sentinel ${s.port} up`, async () => (await redisCli(s.port, 'PING')) === 'PONG', 10_000)
    }
    // Sentinels find replicas through INFO and each other through hello messages (every 2 s).
    for (const s of sentinels) {
      await waitUntil(
        `sentinel ${s.port} sees the replica and 2 peers`,
        async () => {
          const replicas = await redisCli(s.port, 'SENTINEL', 'REPLICAS', MASTER_NAME)
          const peers = await redisCli(s.port, 'SENTINEL', 'SENTINELS', MASTER_NAME)
          const peerPorts = sentinels.filter((o) => o !== s).map((o) => String(o.port))
          return replicas.includes(String(replica.port)) && peerPorts.every((p) => peers.split('\n').includes(p))
        },
        20_000,
      )
    }
    const url = `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${MASTER_NAME}`
    return {
      primary,
      replica,
      sentinels,
      url,
      async currentPrimaryPort() {
        for (const s of sentinels) {
          if (s.child.exitCode !== null) continue
          const out = await redisCli(s.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME).catch(() => '')
          const port = Number(out.split('\n')[1])
          if (Number.isInteger(port) && port > 0) return port
        }
        throw new Error('no sentinel answered')
      },
      close,
      [Symbol.asyncDispose]: close,
    }
  } catch (e) {
    await close()
    throw e
  }
}

export interface ClusterTopology extends AsyncDisposable {
  readonly masters: readonly RedisProcess[]
  /** `redis+cluster://127.0.0.1:<m1>,127.0.0.1:<m2>,127.0.0.1:<m3>` */
  readonly url: string
  close(): Promise<void>
}

/** Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, waits for `cluster_state:ok`. */
export async function startCluster(): Promise<ClusterTopology> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kw-cluster-'))
  const masters: RedisProcess[] = []
  const close = async (): Promise<void> => {
    await Promise.all(masters.map((p) => p.kill()))
    await rm(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < 3; i++) {
      // The bus port is chosen too: port + 10000 could be taken or beyond 65535.
      const bus = await freePort()
      masters.push(
        await startServer(dir, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${bus}.conf`,
          '--cluster-port',
          String(bus),
          '--cluster-node-timeout',
          '2000',
        ]),
      )
    }
    const addrs = masters.map((m) => `127.0.0.1:${m.port}`)
    await run('redis-cli', ['--cluster', 'create', ...addrs, '--cluster-yes'], { timeout: 20_000 })
    for (const m of masters) {
      await waitUntil(`cluster node ${m.port} ok`, async () => (await redisCli(m.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 20_000)
    }
    return { masters, url: `redis+cluster://${addrs.join(',')}`, close, [Symbol.asyncDispose]: close }
  } catch (e) {
    await close()
    throw e
  }
}

/** Every kind of backend call must reject with STORE_UNAVAILABLE within `withinMs`. */
export async function expectEveryCallFailsFast(backend: StoreBackend, withinMs: number): Promise<void> {
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['get', () => backend.get('k')],
    ['set', () => backend.set('k', 'v', 1000)],
    ['compareAndSwap', () => backend.compareAndSwap('k', 'a', 'b')],
    ['acquireLock', () => backend.acquireLock('k', 1000)],
    [
      'keys',
      async () => {
        for await (const k of backend.keys('x')) void k
      },
    ],
    ['ping', () => backend.ping()],
  ]
  for (const [name, call] of calls) {
    const started = performance.now()
    await expect(call(), name).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
    expect(performance.now() - started, name).toBeLessThan(withinMs)
  }
}
