/**
 * The node-redis connection under the Redis backend, for each topology `store.url` can name: one
 * server (`createClient`), a primary found through Sentinel (`createSentinel`, which follows a
 * failover by itself: it listens to the Sentinels' `+switch-master` and re-asks them whenever the
 * primary stops answering or answers READONLY), or a Cluster (`createCluster`, which routes each key
 * to its master and follows MOVED/ASK). Every data-node client is built the fail-fast way: no
 * offline queue (a command issued while disconnected is refused, not parked for ever), a connect
 * timeout and a capped-backoff reconnect that never gives up. This module connects, lists and counts
 * replicas; the backend on top adds command deadlines and error mapping. Passwords are handed to
 * node-redis and never logged or put in a message.
 * @module
 */
import { createClient, createCluster, createSentinel, type RedisClientConnectionType } from '@keyv/redis'
import { deadline } from '../deadline.js'
import type { Secret } from '../secret.js'
import type { RedisNodeAddress, RedisTopology } from './redis-url.js'

/** Reconnect backoff doubles from 50 ms up to this cap and never gives up, so a replica recovers by itself. */
export const REDIS_MAX_RECONNECT_DELAY_MS = 2_000
/** Detects half-open connections (a Redis that vanished without closing the socket). */
export const REDIS_PING_INTERVAL_MS = 10_000
/** How long a counted number of replicas is trusted before `INFO replication` is asked again. */
export const REPLICA_COUNT_TTL_MS = 30_000

export interface RedisConnectionOptions {
  readonly connectTimeoutMs: number
  /** AUTH at the data nodes (`store.password`, else the URL's password). */
  readonly password?: Secret | undefined
  /** AUTH at the Sentinels (`store.sentinelPassword`). */
  readonly sentinelPassword?: Secret | undefined
}

/** The commands the backend sends, with the argument shapes it uses; all three client kinds have them. */
export interface RedisCommands {
  set(key: string, value: string, opts: { condition: 'NX'; expiration?: { type: 'PX'; value: number } }): Promise<string | null>
  eval(script: string, opts: { keys: string[]; arguments?: string[] }): Promise<unknown>
}

/** One connection to the store, whatever its topology. */
export interface RedisConnection {
  readonly kind: RedisTopology['kind']
  /** The node-redis client of the moment (a single-server client stuck in its handshake is replaced). */
  readonly client: RedisClientConnectionType
  readonly commands: RedisCommands
  /** Resolves when commands can be sent; rejects (without waiting out a reconnect loop) when they cannot. */
  ensureReady(): Promise<void>
  /** Every key matching the SCAN pattern, on every primary. */
  scan(match: string, count: number): AsyncIterable<string>
  ping(): Promise<void>
  /** How many replicas the primary holding `key` has (cached for {@link REPLICA_COUNT_TTL_MS}). */
  replicaCount(key: string): Promise<number>
  /** `WAIT <replicas> <timeoutMs>` on the connection that wrote `key`: how many replicas acknowledged. */
  wait(key: string, replicas: number, timeoutMs: number): Promise<number>
  close(): Promise<void>
}

const reconnectStrategy = (retries: number): number => Math.min(50 * 2 ** Math.min(retries, 10), REDIS_MAX_RECONNECT_DELAY_MS) + Math.floor(Math.random() * 100)

/** The options every data-node client gets: fail fast instead of queueing or hanging. */
function nodeOptions(opts: RedisConnectionOptions, username: string | undefined) {
  return {
    ...(username === undefined ? {} : { username }),
    ...(opts.password === undefined ? {} : { password: opts.password.reveal() }),
    // Without this, commands issued while disconnected wait in a queue for ever.
    disableOfflineQueue: true,
    pingInterval: REDIS_PING_INTERVAL_MS,
    socket: { connectTimeout: opts.connectTimeoutMs, reconnectStrategy },
  }
}

/** `connected_slaves` of an `INFO replication` answer. */
export function connectedReplicas(info: string): number {
  const m = /^connected_slaves:(\d+)\s*$/m.exec(info)
  return m ? Number(m[1]) : 0
}

/** Opens (in the background) the connection `topology` names. */
export function createRedisConnection(topology: RedisTopology, opts: RedisConnectionOptions): RedisConnection {
  switch (topology.kind) {
    case 'single':
      return singleConnection(topology.url, opts)
    case 'sentinel':
      return sentinelConnection(topology, opts)
    case 'cluster':
      return clusterConnection(topology, opts)
    default: {
      const never: never = topology
      return never
    }
  }
}

/** Caches a replica count for {@link REPLICA_COUNT_TTL_MS}; `reset` forgets it (new primary). */
function replicaCache(count: () => Promise<number>): { get(): Promise<number>; reset(): void } {
  let cached: { n: number; at: number } | undefined
  return {
    async get() {
      if (cached !== undefined && Date.now() - cached.at < REPLICA_COUNT_TTL_MS) return cached.n
      const n = await count()
      cached = { n, at: Date.now() }
      return n
    },
    reset: () => (cached = undefined),
  }
}

/**
 * One server. A handshake that never completes (a host that accepts and stays silent) would leave
 * the client stuck for ever, and reconnecting a destroyed node-redis client revives its old connect
 * loop too, so a stuck client is destroyed and replaced; the next call connects the new one.
 */
function singleConnection(url: string, opts: RedisConnectionOptions): RedisConnection {
  const create = () => createClient({ url, ...nodeOptions(opts, undefined) })
  type Client = ReturnType<typeof create>
  let lastError: unknown
  let failing = false // an error was seen since the current client last became ready
  let client: Client
  const replicas = replicaCache(async () => connectedReplicas(await client.info('replication')))
  const newClient = (): Client => {
    const c = create()
    // node-redis emits 'error' on every failed (re)connect; an EventEmitter without a listener would
    // crash the process. Events of a client that has been replaced are ignored.
    c.on('error', (e: unknown) => {
      if (c !== client) return
      lastError = e
      failing = true
    })
    c.on('ready', () => {
      if (c !== client) return
      failing = false
      replicas.reset()
    })
    return c
  }
  client = newClient()
  const startConnect = (): void => {
    failing = false
    const c = client
    c.connect().catch((e: unknown) => {
      if (c !== client) return
      lastError = e
      failing = true
    })
  }
  const replaceStuckClient = (stuck: Client): void => {
    if (stuck !== client || stuck.isReady) return
    client = newClient()
    try {
      stuck.destroy()
    } catch {
      // already closed
    }
  }
  // One wait per client, shared by every caller that arrives while it connects (one listener pair, not one per caller).
  let pendingReady: { readonly client: Client; readonly promise: Promise<void> } | undefined
  const waitForReady = (): Promise<void> => {
    if (pendingReady?.client === client) return pendingReady.promise
    const promise = newReadyWait().finally(() => {
      if (pendingReady?.promise === promise) pendingReady = undefined
    })
    pendingReady = { client, promise }
    return promise
  }
  const newReadyWait = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const c = client
      const done = (e?: unknown): void => {
        clearTimeout(timer)
        c.off('ready', onReady)
        c.off('error', onError)
        if (e === undefined) resolve()
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- node-redis's own error, passed on unchanged
        else reject(e)
      }
      const onReady = (): void => done()
      const onError = (e: unknown): void => done(e ?? new Error('redis connection failed'))
      const timer = setTimeout(() => {
        replaceStuckClient(c)
        done(new Error(`redis did not connect within ${opts.connectTimeoutMs} ms`))
      }, opts.connectTimeoutMs)
      c.on('ready', onReady)
      c.on('error', onError)
    })
  startConnect()
  return {
    kind: 'single',
    get client() {
      return client
    },
    get commands() {
      return client as unknown as RedisCommands
    },
    async ensureReady() {
      if (client.isReady) return
      if (!client.isOpen) startConnect()
      // Already failing: answer now rather than make every caller wait out the reconnect loop.
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- node-redis's own error, passed on unchanged
      else if (failing) throw lastError ?? new Error('redis is not connected')
      await waitForReady()
    },
    scan: (match, count) => scanNode(client, match, count),
    async ping() {
      await client.ping()
    },
    replicaCount: () => replicas.get(),
    wait: (_key, n, timeoutMs) => client.wait(n, timeoutMs),
    async close() {
      if (!client.isOpen) return
      if (client.isReady) await client.close()
      else client.destroy()
    },
  }
}

/** Every key of one node matching `match`, page by page (SCAN's cursor until it comes back to 0). */
async function* scanNode(
  node: { scan(cursor: string, opts: { MATCH: string; COUNT: number }): Promise<{ cursor: string | number; keys: string[] }> },
  match: string,
  count: number,
): AsyncGenerator<string> {
  let cursor = '0'
  do {
    const page = await node.scan(cursor, { MATCH: match, COUNT: count })
    cursor = String(page.cursor)
    yield* page.keys
  } while (cursor !== '0')
}

/**
 * A Sentinel or Cluster connection: the client of the moment (replaced after a failed connect),
 * readiness and closing from `connectOnce`, the commands that differ by topology from `own`. The
 * first connect starts at once, so the store is connecting before its first command.
 */
function connected<C extends { connect(): Promise<unknown>; destroy(): unknown; close(): Promise<unknown> }>(
  kind: 'sentinel' | 'cluster',
  conn: ConnectOnce<C>,
  own: Pick<RedisConnection, 'scan' | 'ping' | 'replicaCount' | 'wait'>,
): RedisConnection {
  void conn.ensureReady().catch(() => undefined)
  return {
    kind,
    get client() {
      return conn.client as unknown as RedisClientConnectionType
    },
    get commands() {
      return conn.client as unknown as RedisCommands
    },
    ensureReady: () => conn.ensureReady(),
    ...own,
    async close() {
      if (conn.ready) await conn.client.close()
      else await conn.client.destroy()
    },
  }
}

type ConnectOnce<C> = { readonly client: C; readonly ready: boolean; ensureReady(): Promise<void> }

/**
 * Connects a Sentinel or Cluster client once, sharing the attempt between callers and bounding it
 * by the connect timeout. A failed or overdue attempt destroys that client and the next call starts
 * a fresh one (the libraries' own connect loops would otherwise keep a caller waiting).
 */
function connectOnce<C extends { connect(): Promise<unknown>; destroy(): unknown }>(create: () => C, connectTimeoutMs: number): ConnectOnce<C> {
  let client = create()
  let ready = false
  let connecting: Promise<void> | undefined
  let lastError: unknown // of the previous attempt, while the store has not connected yet
  return {
    get client() {
      return client
    },
    get ready() {
      return ready
    },
    ensureReady(): Promise<void> {
      if (ready) return Promise.resolve()
      // After a failed attempt, one caller waits for the next one and the others fail at once,
      // rather than every caller waiting out a connect to a store that is down.
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- node-redis's own error, passed on unchanged
      if (connecting !== undefined && lastError !== undefined) return Promise.reject(lastError)
      connecting ??= deadline(client.connect(), connectTimeoutMs, 'redis did not connect').then(
        () => {
          ready = true
          lastError = undefined
          connecting = undefined
        },
        (e: unknown) => {
          const failed = client
          client = create()
          lastError = e
          connecting = undefined
          void Promise.resolve()
            .then(() => failed.destroy())
            .catch(() => undefined)
          throw e
        },
      )
      return connecting
    },
  }
}

function sentinelConnection(t: Extract<RedisTopology, { kind: 'sentinel' }>, opts: RedisConnectionOptions): RedisConnection {
  const replicas = replicaCache(async () => connectedReplicas(await conn.client.info('replication')))
  const create = () => {
    const s = createSentinel({
      name: t.masterName,
      sentinelRootNodes: t.sentinels.map((n: RedisNodeAddress) => ({ host: n.host, port: n.port })),
      nodeClientOptions: { ...nodeOptions(opts, t.username), database: t.db },
      sentinelClientOptions: {
        ...(opts.sentinelPassword === undefined ? {} : { password: opts.sentinelPassword.reveal() }),
        socket: { connectTimeout: opts.connectTimeoutMs },
      },
      // Besides the Sentinels' announcements, re-check the primary now and then (a re-check holds
      // commands back for one round trip to a Sentinel, so not too often).
      scanInterval: 10_000,
      // 0: a first connect that finds no Sentinel or no primary fails at once (the library would
      // otherwise retry 16 times a second apart and print each error to stdout), and a command that
      // fails is not retried past our deadline. A primary that stops answering still makes the
      // client ask the Sentinels again before the next command (that path is not counted).
      maxCommandRediscovers: 0,
    })
    // Errors surface on the calls that meet them; an EventEmitter without a listener would crash.
    s.on('error', () => {})
    s.on('topology-change', (e: { type: string }) => {
      if (e.type === 'MASTER_CHANGE' || e.type === 'REPLICA_ADD' || e.type === 'REPLICA_REMOVE') replicas.reset()
    })
    return s
  }
  const conn = connectOnce(create, opts.connectTimeoutMs)
  return connected('sentinel', conn, {
    scan: (match, count) => scanNode(conn.client, match, count),
    async ping() {
      await conn.client.ping()
    },
    replicaCount: () => replicas.get(),
    wait: (_key, n, timeoutMs) => conn.client.wait(n, timeoutMs),
  })
}

function clusterConnection(t: Extract<RedisTopology, { kind: 'cluster' }>, opts: RedisConnectionOptions): RedisConnection {
  const create = () => {
    const c = createCluster({
      rootNodes: t.nodes.map((n) => ({ socket: { host: n.host, port: n.port } })),
      defaults: nodeOptions(opts, t.username),
    })
    c.on('error', () => {})
    return c
  }
  const conn = connectOnce(create, opts.connectTimeoutMs)
  return connected('cluster', conn, {
    // Each master holds its own slots: SCAN every one of them.
    async *scan(match, count) {
      for (const master of conn.client.masters) yield* scanNode(await conn.client.nodeClient(master), match, count)
    },
    async ping() {
      await Promise.all(conn.client.masters.map(async (m) => (await conn.client.nodeClient(m)).ping()))
    },
    // Token writes are rare (one per token lifetime), so the master of the key's slot is asked each time.
    replicaCount: async (key) => {
      const info = await conn.client.sendCommand(key, false, ['INFO', 'replication'])
      return connectedReplicas(typeof info === 'string' ? info : '')
    },
    wait: async (key, n, timeoutMs) => Number(await conn.client.sendCommand(key, false, ['WAIT', String(n), String(timeoutMs)])),
  })
}
