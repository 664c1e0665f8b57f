/**
 * The in-process backend (`memory://`): a Map with expiry measured against an injectable clock,
 * for tests and single-process development. Every operation completes without yielding between
 * its read and its write, which is what makes compare-and-swap and take atomic here. It is not
 * shared between processes or replicas and loses everything on exit. `simulateOutage` lets
 * other modules' tests exercise the `STORE_UNAVAILABLE` path without a real backend failing.
 * @module
 */
import { AppError } from '../errors.js'
import { acquireLockWithCas, assertTtl, closedFailure, type StoreBackend } from './backend.js'

export interface MemoryBackendOptions {
  /** Epoch milliseconds; tests pass a fake clock to expire entries without sleeping. */
  readonly now?: () => number
}

/** The memory backend plus a test seam. */
export interface MemoryBackend extends StoreBackend {
  readonly kind: 'memory'
  /** While `true`, every call throws `STORE_UNAVAILABLE` as a failed real backend would. */
  simulateOutage(down: boolean): void
}

interface Entry {
  readonly value: string
  readonly expiresAt: number | undefined
}

/** Creates an empty memory backend. */
export function createMemoryBackend(opts: MemoryBackendOptions = {}): MemoryBackend {
  const now = opts.now ?? Date.now
  const entries = new Map<string, Entry>()
  let closed = false
  let down = false

  const check = (op: string): void => {
    if (closed) throw closedFailure('memory', op)
    if (down) {
      throw new AppError('STORE_UNAVAILABLE', `token store (memory) failed during ${op}`, {
        cause: new Error('simulated outage'),
        detail: { backend: 'memory', op },
      })
    }
  }
  const live = (key: string): string | undefined => {
    const entry = entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt !== undefined && now() >= entry.expiresAt) {
      entries.delete(key)
      return undefined
    }
    return entry.value
  }
  const write = (key: string, value: string, ttlMs: number | undefined): void => {
    entries.set(key, { value, expiresAt: ttlMs === undefined ? undefined : now() + ttlMs })
  }

  const compareAndSwap: StoreBackend['compareAndSwap'] = async (key, expected, next, ttlMs) => {
    check('compareAndSwap')
    assertTtl(ttlMs, 'ttlMs')
    if (live(key) !== expected) return false
    if (next === undefined) entries.delete(key)
    else write(key, next, ttlMs)
    return true
  }

  return {
    kind: 'memory',
    simulateOutage(value) {
      down = value
    },
    async get(key) {
      check('get')
      return live(key)
    },
    async set(key, value, ttlMs) {
      check('set')
      assertTtl(ttlMs, 'ttlMs')
      write(key, value, ttlMs)
    },
    async delete(key) {
      check('delete')
      const had = live(key) !== undefined
      entries.delete(key)
      return had
    },
    compareAndSwap,
    async takeOnce(key) {
      check('takeOnce')
      const value = live(key)
      entries.delete(key)
      return value
    },
    async acquireLock(key, ttlMs) {
      check('acquireLock')
      return acquireLockWithCas(compareAndSwap, key, ttlMs)
    },
    async *keys(prefix) {
      check('keys')
      for (const key of [...entries.keys()]) {
        if (key.startsWith(prefix) && live(key) !== undefined) yield key
      }
    },
    async ping() {
      check('ping')
    },
    async close() {
      closed = true
      entries.clear()
    },
  }
}
