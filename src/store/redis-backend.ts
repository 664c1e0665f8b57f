/**
 * The shared backend for replicas: `redis://…` / `rediss://…` (one server), `redis+sentinel://…`
 * (a primary found through Sentinel) and `redis+cluster://…` (Redis Cluster); the connection for
 * each is built in `redis-connection.ts`. keyv over @keyv/redis does plain reads, writes and
 * deletes, and the same node-redis client runs the atomic operations (`SET NX PX` for put-if-absent
 * and locks, Lua for compare-and-swap, compare-and-delete and get-and-delete; a script runs without
 * interleaving and touches one key, so each is atomic across replicas and fits one Cluster slot).
 * Redis keeps values as they are (no keyv JSON wrapper) and expires them itself with `PX`.
 * By default keyv swallows store errors and node-redis queues commands while disconnected, which
 * turns an outage into misses or hangs. Here no client queues offline, keyv runs with
 * `throwOnErrors`, and every command has a deadline: an unreachable Redis (or a primary that is
 * being replaced by a Sentinel failover) fails fast as `STORE_UNAVAILABLE`. After a token write,
 * {@link StoreBackend.replicate} waits (`WAIT 1`) for a replica to acknowledge it when the primary
 * has replicas, so a failover does not roll a rotated refresh token back. The URL may carry a
 * password; it is never logged or put in an error message.
 * @module
 */
import { deadline } from '../deadline.js'
import type { Secret } from '../secret.js'
import KeyvRedis from '@keyv/redis'
import { Keyv, type DeserializedData } from 'keyv'
import { acquireLockWithCas, assertTtl, closedFailure, storeFailure, type StoreBackend } from './backend.js'
import { createRedisConnection } from './redis-connection.js'
import { parseRedisUrl } from './redis-url.js'

export { REDIS_MAX_RECONNECT_DELAY_MS, REDIS_PING_INTERVAL_MS } from './redis-connection.js'

/** First connection budget; a closed port fails at once, an unroutable host after this. */
export const REDIS_CONNECT_TIMEOUT_MS = 2_000
/** Redis answers in well under a millisecond; two seconds means it is not answering. */
export const REDIS_COMMAND_TIMEOUT_MS = 2_000
/** How long a token write waits for a replica's acknowledgement (`WAIT 1 <ms>`), at most half the command deadline. */
export const REDIS_WAIT_TIMEOUT_MS = 1_000
/** SCAN batch hint for listing by prefix. */
const SCAN_COUNT = 500

export interface RedisBackendOptions {
  /** The AUTH password of the data nodes (`store.password`); wins over a password in the URL. */
  readonly password?: Secret
  /** The AUTH password of the Sentinels (`store.sentinelPassword`). */
  readonly sentinelPassword?: Secret
  readonly connectTimeoutMs?: number
  readonly commandTimeoutMs?: number
  /** Receives the warning when a token write was not acknowledged by a replica in time. */
  readonly warn?: (message: string) => void
}

// Compare-and-swap. ARGV: hasExpected, expected, hasNext, next, ttlMs ('' = none).
// GET of a missing key is false in Lua, which never equals a string.
const CAS_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[3] == '1' then
  if ARGV[5] ~= '' then
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[4])
  end
else
  redis.call('DEL', KEYS[1])
end
return 1
`

// Get-and-delete (GETDEL needs Redis 6.2; this runs on any Redis with scripting).
const TAKE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
`

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`)
}

/**
 * Creates the Redis backend and starts connecting in the background. Resolves at once: a Redis
 * that is down makes calls (and `ping`) fail with `STORE_UNAVAILABLE`, and they work again once it
 * is back.
 */
export async function createRedisBackend(url: string, opts: RedisBackendOptions = {}): Promise<StoreBackend> {
  const connectTimeoutMs = opts.connectTimeoutMs ?? REDIS_CONNECT_TIMEOUT_MS
  const commandTimeoutMs = opts.commandTimeoutMs ?? REDIS_COMMAND_TIMEOUT_MS
  const waitTimeoutMs = Math.max(1, Math.min(REDIS_WAIT_TIMEOUT_MS, Math.floor(commandTimeoutMs / 2)))
  const topology = parseRedisUrl(url)
  const conn = createRedisConnection(topology, {
    connectTimeoutMs,
    ...(opts.password === undefined ? {} : { password: opts.password }),
    ...(opts.sentinelPassword === undefined ? {} : { sentinelPassword: opts.sentinelPassword }),
  })

  const adapter = new KeyvRedis(conn.client, { throwOnErrors: true, throwOnConnectError: true, connectionTimeout: connectTimeoutMs })
  const keyv = new Keyv({
    store: adapter,
    useKeyPrefix: false,
    throwOnErrors: true,
    // Store the sealed string itself: Redis expires keys (PX), so keyv's JSON wrapper adds nothing,
    // and the Lua scripts can compare values byte for byte.
    serialize: (data: DeserializedData<unknown>) => {
      if (typeof data.value !== 'string') throw new TypeError('redis backend stores strings only')
      return data.value
    },
    deserialize: <V>(raw: string) => ({ value: raw as V }),
  })
  // keyv defaults to the namespace "keyv", which @keyv/redis would prepend as "keyv::"; keys here are ours as given.
  keyv.namespace = undefined
  keyv.on('error', () => {
    // Calls reject with the same error (throwOnErrors); the event needs no second report.
  })

  let closed = false
  const ensureReady = async (): Promise<void> => {
    await conn.ensureReady()
    // The connection replaces a client that never got ready; keyv must talk to the current one.
    if (adapter.client !== conn.client) adapter.client = conn.client
  }
  const withDeadline = <T>(p: Promise<T>): Promise<T> => deadline(p, commandTimeoutMs, 'redis did not answer')
  const guard = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    if (closed) throw closedFailure('redis', op)
    try {
      await ensureReady()
      return await withDeadline(fn())
    } catch (e) {
      throw storeFailure('redis', op, e)
    }
  }

  const compareAndSwap: StoreBackend['compareAndSwap'] = (key, expected, next, ttlMs) =>
    guard('compareAndSwap', async () => {
      assertTtl(ttlMs, 'ttlMs')
      if (expected === undefined && next !== undefined) {
        const reply = await conn.commands.set(
          key,
          next,
          ttlMs === undefined ? { condition: 'NX' } : { condition: 'NX', expiration: { type: 'PX', value: ttlMs } },
        )
        return reply === 'OK'
      }
      const reply = await conn.commands.eval(CAS_SCRIPT, {
        keys: [key],
        arguments: [expected === undefined ? '0' : '1', expected ?? '', next === undefined ? '0' : '1', next ?? '', ttlMs === undefined ? '' : String(ttlMs)],
      })
      return reply === 1
    })

  return {
    kind: 'redis',
    get: (key) =>
      guard('get', async () => {
        const value: unknown = await keyv.get(key)
        if (value !== undefined && typeof value !== 'string') throw new TypeError('redis value is not a string')
        return value
      }),
    set: (key, value, ttlMs) =>
      guard('set', async () => {
        assertTtl(ttlMs, 'ttlMs')
        // keyv answers false instead of throwing for some failures; never accept that silently.
        if (!(await keyv.set(key, value, ttlMs))) throw new Error('keyv set reported failure')
      }),
    delete: (key) => guard('delete', () => keyv.delete(key)),
    compareAndSwap,
    takeOnce: (key) =>
      guard('takeOnce', async () => {
        const reply = await conn.commands.eval(TAKE_SCRIPT, { keys: [key] })
        if (reply === null) return undefined
        if (typeof reply !== 'string') throw new TypeError('redis take did not return a string')
        return reply
      }),
    acquireLock: (key, ttlMs) => acquireLockWithCas(compareAndSwap, key, ttlMs),
    async *keys(prefix) {
      const pages = conn.scan(`${escapeGlob(prefix)}*`, SCAN_COUNT)[Symbol.asyncIterator]()
      try {
        for (;;) {
          const next = await guard('keys', () => pages.next())
          if (next.done === true) return
          if (next.value.startsWith(prefix)) yield next.value
        }
      } finally {
        // Not awaited: after a deadline the generator may still be waiting on its page.
        void pages.return?.(undefined).catch(() => undefined)
      }
    },
    ping: () => guard('ping', () => conn.ping()),
    async replicate(key) {
      // Never throws: the write itself succeeded on the primary; only its copy is in doubt.
      if (closed) return
      try {
        await ensureReady()
        if ((await withDeadline(conn.replicaCount(key))) === 0) return
        const acked = await withDeadline(conn.wait(key, 1, waitTimeoutMs))
        if (acked < 1)
          opts.warn?.(
            `token store (redis): no replica acknowledged a token write within ${waitTimeoutMs} ms; it is on the primary, and a failover before it replicates would lose it`,
          )
      } catch (e) {
        opts.warn?.(
          `token store (redis): could not confirm that a token write reached a replica (${e instanceof Error ? e.message : 'unknown error'}); it is on the primary`,
        )
      }
    },
    async close() {
      if (closed) return
      closed = true
      try {
        await conn.close()
      } catch {
        // Closing a connection that is already gone has nothing left to release.
      }
    },
  }
}
