/**
 * The embedded backend (`sqlite://<absolute path>`, the default): keyv over @keyv/sqlite, in the
 * table keyv creates (`keyv(key PRIMARY KEY, value TEXT)`, values `{"value":…,"expires":ms}`).
 * Unconditional writes go through keyv with `throwOnErrors`; reads and the atomic operations are single
 * SQL statements on keyv's own connection (`UPDATE … WHERE value = expected RETURNING`,
 * `INSERT … ON CONFLICT DO UPDATE WHERE expired RETURNING`, `DELETE … RETURNING`). A single
 * statement is one implicit transaction under SQLite's file lock, so these are atomic between
 * concurrent calls in one process and between processes sharing the file; a busy timeout makes
 * contenders wait instead of failing. The file is created 0600 in a directory created 0700, and
 * an existing file is tightened to 0600. This module does not know what the values mean.
 * @module
 */
import { chmod, mkdir, open } from 'node:fs/promises'
import path from 'node:path'
import KeyvSqlite from '@keyv/sqlite'
import { Keyv, type DeserializedData } from 'keyv'
import { AppError } from '../errors.js'
import { acquireLockWithCas, assertTtl, closedFailure, storeFailure, type StoreBackend } from './backend.js'

/** Long enough to ride out another process's write (a few ms), short enough to surface a stuck one. */
export const SQLITE_BUSY_TIMEOUT_MS = 5_000
/** Expired rows (abandoned flows, dead locks) are deleted at open and this often. */
export const SQLITE_SWEEP_INTERVAL_MS = 10 * 60_000

export interface SqliteBackendOptions {
  readonly busyTimeoutMs?: number
}

type Row = Readonly<Record<string, unknown>>

// keyv's own table name and JSON shape; the atomic statements below must agree with them.
const TABLE = 'keyv'
// Expired means `now > expires`, exactly as keyv decides it, so every path agrees on the boundary.
const NOT_EXPIRED = `(json_extract(value, '$.expires') IS NULL OR json_extract(value, '$.expires') >= ?)`

/**
 * Opens (creating if needed) the SQLite file at the absolute path `file`.
 * @throws AppError `CONFIG_INVALID` for a relative path
 * @throws AppError `STORE_UNAVAILABLE` when the file cannot be created, secured or opened
 */
export async function createSqliteBackend(file: string, opts: SqliteBackendOptions = {}): Promise<StoreBackend> {
  if (!path.isAbsolute(file)) {
    throw new AppError('CONFIG_INVALID', 'store.url sqlite path must be absolute', { detail: { setting: 'store.url' } })
  }
  try {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
    // Create it ourselves so it is never world-readable, not even between creation and a chmod.
    const handle = await open(file, 'a', 0o600)
    await handle.close()
    await chmod(file, 0o600)
  } catch (e) {
    throw storeFailure('sqlite', 'open', e)
  }

  const adapter = new KeyvSqlite({ uri: `sqlite://${file}`, busyTimeout: opts.busyTimeoutMs ?? SQLITE_BUSY_TIMEOUT_MS })
  // Attach the first query in the same tick: a failed open then rejects it instead of going unhandled.
  const ready = adapter.query(`PRAGMA journal_mode=WAL`).then(
    () => undefined,
    async (e: unknown) => {
      // WAL is an optimisation; a database that is readable but refuses the switch still works.
      await adapter.query('SELECT 1').catch((again: unknown) => {
        throw storeFailure('sqlite', 'open', again ?? e)
      })
    },
  )
  const keyv = new Keyv({
    store: adapter,
    useKeyPrefix: false,
    throwOnErrors: true,
    emitErrors: true,
    // Plain JSON: @keyv/serialize's escaping of leading ':' would make the SQL atomics below lie.
    serialize: (data: DeserializedData<unknown>) => JSON.stringify(data),
    deserialize: <V>(raw: string) => JSON.parse(raw) as DeserializedData<V>,
  })
  // keyv defaults to the namespace "keyv", which @keyv/redis would prepend as "keyv::"; keys here are ours as given.
  keyv.namespace = undefined
  // keyv re-emits adapter errors; calls already reject, so the event needs no handler beyond this.
  keyv.on('error', () => {})

  let closed = false
  const guard = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    if (closed) throw closedFailure('sqlite', op)
    try {
      await ready
      return await fn()
    } catch (e) {
      throw storeFailure('sqlite', op, e)
    }
  }
  const query = async (sql: string, ...params: readonly unknown[]): Promise<readonly Row[]> => {
    const rows: unknown = await adapter.query(sql, ...params)
    if (!Array.isArray(rows)) throw new TypeError('sqlite query did not return rows')
    return rows as readonly Row[]
  }
  const wrap = (value: string, ttlMs: number | undefined): string => JSON.stringify(ttlMs === undefined ? { value } : { value, expires: Date.now() + ttlMs })
  const unwrap = (raw: unknown): string | undefined => {
    if (typeof raw !== 'string') throw new TypeError('sqlite row value is not text')
    const data: unknown = JSON.parse(raw)
    if (typeof data !== 'object' || data === null) throw new TypeError('sqlite row is not a keyv record')
    const { value, expires } = data as { value?: unknown; expires?: unknown }
    if (typeof expires === 'number' && Date.now() > expires) return undefined
    if (typeof value !== 'string') throw new TypeError('sqlite row value is not a string')
    return value
  }
  const unwrapMaybe = (rows: readonly Row[]): string | undefined => (rows[0] === undefined ? undefined : unwrap(rows[0]['value']))
  const sweep = async (): Promise<void> => {
    await query(
      `DELETE FROM ${TABLE} WHERE json_valid(value) AND json_extract(value, '$.expires') IS NOT NULL AND json_extract(value, '$.expires') < ?`,
      Date.now(),
    )
  }

  const compareAndSwap: StoreBackend['compareAndSwap'] = (key, expected, next, ttlMs) =>
    guard('compareAndSwap', async () => {
      assertTtl(ttlMs, 'ttlMs')
      const now = Date.now()
      if (expected === undefined && next === undefined) return unwrapMaybe(await query(`SELECT value FROM ${TABLE} WHERE key = ?`, key)) === undefined
      if (expected === undefined && next !== undefined) {
        // Insert, or overwrite a row that has expired but not yet been swept; otherwise no row comes back.
        const rows = await query(
          `INSERT INTO ${TABLE} (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value
           WHERE json_extract(${TABLE}.value, '$.expires') IS NOT NULL AND json_extract(${TABLE}.value, '$.expires') < ? RETURNING key`,
          key,
          wrap(next, ttlMs),
          now,
        )
        return rows.length === 1
      }
      if (next === undefined) {
        const rows = await query(
          `DELETE FROM ${TABLE} WHERE key = ? AND json_extract(value, '$.value') = ? AND ${NOT_EXPIRED} RETURNING key`,
          key,
          expected,
          now,
        )
        return rows.length === 1
      }
      const rows = await query(
        `UPDATE ${TABLE} SET value = ? WHERE key = ? AND json_extract(value, '$.value') = ? AND ${NOT_EXPIRED} RETURNING key`,
        wrap(next, ttlMs),
        key,
        expected,
        now,
      )
      return rows.length === 1
    })

  await guard('open', sweep)
  const sweeper = setInterval(() => {
    sweep().catch(() => {
      // A failed sweep is retried next time; reads ignore expired rows regardless.
    })
  }, SQLITE_SWEEP_INTERVAL_MS)
  sweeper.unref()

  return {
    kind: 'sqlite',
    // Not keyv.get: its lazy delete of an expired row can race a concurrent compareAndSwap that just
    // replaced that row (a re-taken lock) and delete the new value. Expired rows are left to the sweep.
    get: (key) => guard('get', async () => unwrapMaybe(await query(`SELECT value FROM ${TABLE} WHERE key = ?`, key))),
    set: (key, value, ttlMs) =>
      guard('set', async () => {
        assertTtl(ttlMs, 'ttlMs')
        // keyv returns false instead of throwing for some adapter failures: never accept that silently.
        if (!(await keyv.set(key, value, ttlMs))) throw new Error('keyv set reported failure')
      }),
    delete: (key) =>
      guard('delete', async () => {
        const rows = await query(`DELETE FROM ${TABLE} WHERE key = ? RETURNING value`, key)
        return rows[0] !== undefined && unwrap(rows[0]['value']) !== undefined
      }),
    compareAndSwap,
    takeOnce: (key) => guard('takeOnce', async () => unwrapMaybe(await query(`DELETE FROM ${TABLE} WHERE key = ? RETURNING value`, key))),
    acquireLock: (key, ttlMs) => acquireLockWithCas(compareAndSwap, key, ttlMs),
    async *keys(prefix) {
      const rows = await guard('keys', () =>
        query(`SELECT key FROM ${TABLE} WHERE substr(key, 1, ?) = ? AND json_valid(value) AND ${NOT_EXPIRED}`, prefix.length, prefix, Date.now()),
      )
      for (const row of rows) {
        const key = row['key']
        if (typeof key === 'string' && key.startsWith(prefix)) yield key
      }
    },
    ping: () =>
      guard('ping', async () => {
        await query('SELECT 1')
      }),
    async close() {
      if (closed) return
      closed = true
      clearInterval(sweeper)
      try {
        await keyv.disconnect()
      } catch (e) {
        throw storeFailure('sqlite', 'close', e)
      }
    },
  }
}
