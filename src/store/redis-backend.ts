/**
 * The shared backend for replicas (`redis://…`, `rediss://…`): keyv over @keyv/redis for plain
 * reads, writes and deletes, and the same node-redis client for the atomic operations
 * (`SET NX PX` for put-if-absent and locks, Lua for compare-and-swap, compare-and-delete and
 * get-and-delete; a script runs without interleaving, so each is atomic across replicas).
 * Redis keeps values as they are (no keyv JSON wrapper) and expires them itself with `PX`.
 * By default keyv swallows store errors and node-redis queues commands while disconnected, which
 * turns an outage into misses or hangs. Here the client is built with `disableOfflineQueue`, a
 * connect timeout and a capped-backoff reconnect strategy, keyv runs with `throwOnErrors`, and
 * every command has a deadline: an unreachable Redis fails fast as `STORE_UNAVAILABLE`. The URL
 * may carry a password; it is never logged or put in an error message.
 * @module
 */
import type { Secret } from '../secret.js'
import KeyvRedis, { createClient } from '@keyv/redis'
import { Keyv, type DeserializedData } from 'keyv'
import { acquireLockWithCas, assertTtl, closedFailure, storeFailure, type StoreBackend } from './backend.js'

/** First connection budget; a closed port fails at once, an unroutable host after this. */
export const REDIS_CONNECT_TIMEOUT_MS = 2_000
/** Redis answers in well under a millisecond; two seconds means it is not answering. */
export const REDIS_COMMAND_TIMEOUT_MS = 2_000
/** Reconnect backoff doubles from 50 ms up to this cap and never gives up, so a replica recovers by itself. */
export const REDIS_MAX_RECONNECT_DELAY_MS = 2_000
/** Detects half-open connections (a Redis that vanished without closing the socket). */
export const REDIS_PING_INTERVAL_MS = 10_000
/** SCAN batch hint for listing by prefix. */
const SCAN_COUNT = 500

/** The node-redis client as this backend configures it: fail fast instead of queueing or hanging. */
function createRawClient(url: string, connectTimeoutMs: number, password: Secret | undefined) {
  return createClient({
    url,
    ...(password === undefined ? {} : { password: password.reveal() }),
    // Without this, commands issued while disconnected wait in a queue for ever.
    disableOfflineQueue: true,
    pingInterval: REDIS_PING_INTERVAL_MS,
    socket: {
      connectTimeout: connectTimeoutMs,
      reconnectStrategy: (retries: number) =>
        Math.min(50 * 2 ** Math.min(retries, 10), REDIS_MAX_RECONNECT_DELAY_MS) + Math.floor(Math.random() * 100),
    },
  })
}
type RedisClient = ReturnType<typeof createRawClient>

export interface RedisBackendOptions {
  /** The AUTH password (`store.password`). */
  readonly password?: Secret
  readonly connectTimeoutMs?: number
  readonly commandTimeoutMs?: number
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
  let lastError: unknown
  let failing = false // an error was seen since the current client last became ready
  const newClient = (): RedisClient => {
    const c = createRawClient(url, connectTimeoutMs, opts.password)
    // node-redis emits 'error' on every failed (re)connect; an EventEmitter without a listener would
    // crash the process. Events of a client that has been replaced are ignored.
    c.on('error', (e: unknown) => {
      if (c !== client) return
      lastError = e
      failing = true
    })
    c.on('ready', () => {
      if (c === client) failing = false
    })
    return c
  }
  let client = newClient()
  const startConnect = (): void => {
    failing = false
    const c = client
    c.connect().catch((e: unknown) => {
      if (c !== client) return
      lastError = e
      failing = true
    })
  }

  const adapter = new KeyvRedis(client, { throwOnErrors: true, throwOnConnectError: true, connectionTimeout: connectTimeoutMs })
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

  /**
   * A handshake that never completes (a host that accepts and stays silent) would leave the client
   * stuck for ever, and reconnecting a destroyed node-redis client revives its old connect loop
   * too. So a stuck client is destroyed and replaced; the next call connects the new one.
   */
  const replaceStuckClient = (stuck: RedisClient): void => {
    if (stuck !== client || stuck.isReady) return
    client = newClient()
    adapter.client = client
    try {
      stuck.destroy()
    } catch {
      // already closed
    }
  }

  let closed = false
  const waitForReady = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const c = client
      const done = (e?: unknown): void => {
        clearTimeout(timer)
        c.off('ready', onReady)
        c.off('error', onError)
        if (e === undefined) resolve()
        else reject(e)
      }
      const onReady = (): void => done()
      const onError = (e: unknown): void => done(e ?? new Error('redis connection failed'))
      const timer = setTimeout(() => {
        replaceStuckClient(c)
        done(new Error(`redis did not connect within ${connectTimeoutMs} ms`))
      }, connectTimeoutMs)
      c.on('ready', onReady)
      c.on('error', onError)
    })
  const ensureReady = async (): Promise<void> => {
    if (client.isReady) return
    if (!client.isOpen) startConnect()
    // Already failing: answer now rather than make every caller wait out the reconnect loop.
    else if (failing) throw lastError ?? new Error('redis is not connected')
    await waitForReady()
  }
  const withDeadline = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis did not answer within ${commandTimeoutMs} ms`)), commandTimeoutMs)
      p.then(
        (v) => {
          clearTimeout(timer)
          resolve(v)
        },
        (e: unknown) => {
          clearTimeout(timer)
          reject(e)
        },
      )
    })
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
        const reply = await client.set(key, next, ttlMs === undefined ? { condition: 'NX' } : { condition: 'NX', expiration: { type: 'PX', value: ttlMs } })
        return reply === 'OK'
      }
      const reply = await client.eval(CAS_SCRIPT, {
        keys: [key],
        arguments: [expected === undefined ? '0' : '1', expected ?? '', next === undefined ? '0' : '1', next ?? '', ttlMs === undefined ? '' : String(ttlMs)],
      })
      return reply === 1
    })

  startConnect()

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
        const reply = await client.eval(TAKE_SCRIPT, { keys: [key] })
        if (reply === null) return undefined
        if (typeof reply !== 'string') throw new TypeError('redis take did not return a string')
        return reply
      }),
    acquireLock: (key, ttlMs) => acquireLockWithCas(compareAndSwap, key, ttlMs),
    async *keys(prefix) {
      const match = `${escapeGlob(prefix)}*`
      let cursor = '0'
      do {
        const page = await guard('keys', () => client.scan(cursor, { MATCH: match, COUNT: SCAN_COUNT }))
        cursor = String(page.cursor)
        for (const key of page.keys) {
          if (key.startsWith(prefix)) yield key
        }
      } while (cursor !== '0')
    },
    ping: () =>
      guard('ping', async () => {
        await client.ping()
      }),
    async close() {
      if (closed) return
      closed = true
      if (!client.isOpen) return
      try {
        if (client.isReady) await client.close()
        else client.destroy()
      } catch {
        // Closing a connection that is already gone has nothing left to release.
      }
    },
  }
}
