/**
 * Hot reload of the config file: notices every way a file gets replaced (in-place writes, an
 * editor's or `keyway sql`'s atomic rename-over, a Kubernetes ConfigMap's `..data` symlink flip),
 * debounces, validates the whole file exactly as `keyway serve` loads it, and only then hands the
 * new immutable snapshot to the caller, which swaps one reference (calls already running keep
 * theirs). A bad edit never replaces a good snapshot: it is logged with the same problem lines
 * `keyway validate` prints, audited as `config.rejected`, and the last good config stays live;
 * while the file on disk stays rejected, `state()` says so (for `/readyz`) and a warning is logged
 * again every minute, until a good file is loaded (or the good one is back) or the reloader closes.
 * This module reads the file system and timers only; it decides no policy and never touches the
 * token store (removed connections are reported through `onConnectionsRemoved`).
 * @module
 */
import { watch, type FSWatcher } from 'node:fs'
import { readFile, realpath, stat } from 'node:fs/promises'
import path from 'node:path'
import type { AuditLog } from '../audit/audit-log.js'
import { sha256Hex } from '../encoding.js'
import { errorMessage, type Logger } from '../log.js'
import type { ReloadState } from '../readiness.js'
import type { ConfigSnapshot, LoadResult } from './load.js'
import { restartOnlyChanges } from './reload-rules.js'

/**
 * Quiet time after the last file event before the file is read. Editors and `kubectl` produce
 * bursts of events (truncate + write, create temp + rename, symlink + rename); one reload per
 * burst, and never a read of a half-written file in the common cases.
 */
export const RELOAD_DEBOUNCE_MS = 150

/**
 * Fallback poll of the file's identity (realpath, inode, size, mtime). File events can be lost
 * (network file systems, a watched directory that was itself replaced, inotify limits); the poll
 * makes sure a change is seen within this time anyway.
 */
export const CONFIG_POLL_INTERVAL_MS = 2_000

/**
 * How often the warning about a rejected file on disk is repeated. A rejected edit is easy to
 * miss (the old config keeps serving); once a minute keeps it in view without flooding the log.
 */
export const REJECTED_LOG_INTERVAL_MS = 60_000

/** Loads config text as if read from `file` (relative paths resolve against its folder). */
export type ConfigLoader = (text: string, file: string) => Promise<LoadResult>

/** What one reload attempt came to. */
export type ReloadOutcome =
  | { readonly kind: 'reloaded'; readonly snapshot: ConfigSnapshot; readonly removedConnections: readonly string[] }
  | { readonly kind: 'unchanged' }
  | { readonly kind: 'rejected'; readonly problems: readonly string[]; readonly repeated: boolean }

export interface ReloaderOptions {
  /** Validates the text fully; pass `loadConfigText` with the same options `keyway serve` uses. */
  readonly load: ConfigLoader
  /** Receives each new good snapshot; the caller swaps it in (`runtime.swap`). */
  readonly onLoad: (snapshot: ConfigSnapshot) => void
  /** Receives the problem lines of a rejected edit (the last good config stays live). */
  readonly onReject?: (problems: readonly string[]) => void
  /**
   * Connections present in the previous snapshot and missing from the new one (removed or
   * renamed; a name is a connection's identity). The seam for the token store: credentials
   * stored under these names are orphaned, and the operator should be told.
   */
  readonly onConnectionsRemoved?: (names: readonly string[]) => void | Promise<void>
  /** The snapshot that is live now, to compute removed connections on the first reload. */
  readonly initial?: ConfigSnapshot
  /** Content hash of the text `initial` was loaded from (see `hashConfigFile`); the same content is not reloaded. */
  readonly initialHash?: string
  readonly log?: Logger
  readonly audit?: AuditLog
  /** Repeat of the rejected-file warning (default {@link REJECTED_LOG_INTERVAL_MS}). */
  readonly rejectedLogIntervalMs?: number
  /** Clock for `state().sinceMs` (epoch ms). */
  readonly now?: () => number
}

export interface ConfigReloader {
  /**
   * Reads, hashes and (when the content changed, or always with `force`) validates and applies the
   * file. Calls are serialized; a call made while one is waiting joins it.
   */
  reload(reason: string, opts?: { readonly force?: boolean }): Promise<ReloadOutcome>
  /** The last good snapshot this reloader knows of. */
  current(): ConfigSnapshot | undefined
  /** Whether the file on disk is the live config (`ok`) or was rejected, since when and why. */
  state(): ReloadState
  /** Waits for a reload in progress; later calls to `reload` still work. */
  close(): Promise<void>
}

export interface WatchOptions extends ReloaderOptions {
  readonly debounceMs?: number
  readonly pollMs?: number
  /** Default true. False polls only (file systems without change events; tests of the fallback). */
  readonly fileEvents?: boolean
}

export interface ConfigWatcher extends ConfigReloader {
  /**
   * Settles once the watches are armed and the file has been checked against `initialHash`
   * once (so an edit made while starting is not missed).
   */
  readonly ready: Promise<void>
  /** Stops watching and polling, then waits for a reload in progress. */
  close(): Promise<void>
}

/** SHA-256 hex of the file's bytes, or undefined when it cannot be read. */
export async function hashConfigFile(file: string): Promise<string | undefined> {
  try {
    return sha256Hex(await readFile(path.resolve(file), 'utf8'))
  } catch {
    return undefined
  }
}

/**
 * A reloader without file watching: `keyway serve --no-watch` still reloads on SIGHUP through it,
 * and `watchConfig` drives it from file events.
 */
export function createConfigReloader(file: string, opts: ReloaderOptions): ConfigReloader {
  const abs = path.resolve(file)
  const log = opts.log
  let current = opts.initial
  let goodHash = opts.initialHash
  const now = opts.now ?? Date.now
  const remindEveryMs = opts.rejectedLogIntervalMs ?? REJECTED_LOG_INTERVAL_MS
  let rejected: { hash: string; problems: readonly string[]; sinceMs: number } | undefined
  let reminder: NodeJS.Timeout | undefined
  let closed = false
  let tail: Promise<unknown> = Promise.resolve()
  let waiting: { promise: Promise<ReloadOutcome>; force: boolean } | undefined

  const attempt = async (reason: string, force: boolean): Promise<ReloadOutcome> => {
    let text: string
    let hash: string
    try {
      text = await readFile(abs, 'utf8')
      hash = sha256Hex(text)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      // Same wording as loadConfigFile, so the line matches what `keyway validate` prints.
      const problems = [`${abs}:1 (file): ${code === 'ENOENT' ? 'file not found' : `cannot read file (${errorMessage(e)})`}`]
      return reject(`unreadable:${code ?? 'unknown'}`, problems, reason, force)
    }
    if (!force && hash === goodHash) {
      // The good content is back on disk: nothing to load, and nothing rejected any more.
      if (rejected) clearRejected('the config file on disk is the live config again')
      return { kind: 'unchanged' }
    }
    if (!force && rejected?.hash === hash) return { kind: 'rejected', problems: rejected.problems, repeated: true }
    const result = await opts.load(text, abs)
    if (!result.ok) return reject(hash, result.problems, reason, force)
    return apply(result.snapshot, result.warnings, hash, reason)
  }

  const reject = (hash: string, problems: readonly string[], reason: string, force: boolean): ReloadOutcome => {
    if (!force && rejected?.hash === hash) return { kind: 'rejected', problems, repeated: true }
    rejected = { hash, problems, sinceMs: rejected?.hash === hash ? rejected.sinceMs : now() }
    startReminder()
    log?.warn('config rejected; the last good config stays live', { file: abs, reason, problemCount: problems.length, problems })
    opts.audit?.record({ type: 'config.rejected', file: abs, problems: problems.length })
    try {
      opts.onReject?.(problems)
    } catch (e) {
      log?.error('config rejection handler failed', { error: errorMessage(e) })
    }
    return { kind: 'rejected', problems, repeated: false }
  }

  const apply = (next: ConfigSnapshot, warnings: readonly string[], hash: string, reason: string): ReloadOutcome => {
    const previous = current
    for (const w of warnings) log?.warn(`config warning: ${w}`, { file: abs })
    try {
      opts.onLoad(next)
    } catch (e) {
      // The caller did not take the snapshot; keep treating the old one as live.
      log?.error('config reload could not be applied', { file: abs, error: errorMessage(e) })
      return { kind: 'rejected', problems: [`${abs}:1 (file): reload could not be applied (${errorMessage(e)})`], repeated: false }
    }
    current = next
    goodHash = hash
    if (rejected) clearRejected()
    const removed = previous ? removedConnections(previous, next) : []
    log?.info('config reloaded', {
      file: abs,
      reason,
      connections: next.connections.size,
      tools: next.tools.length,
      grants: next.grants.length,
      ...(removed.length > 0 ? { removedConnections: removed } : {}),
    })
    opts.audit?.record({ type: 'config.reloaded', file: abs, connections: next.connections.size, grants: next.grants.length })
    // Which settings apply live and which need a restart: reload-rules.ts, one table.
    const restart = previous ? restartOnlyChanges(previous, next) : []
    if (restart.length > 0) log?.warn('config changes that take effect only after a restart', { file: abs, fields: restart })
    if (removed.length > 0 && opts.onConnectionsRemoved) {
      Promise.resolve()
        .then(() => opts.onConnectionsRemoved?.(removed))
        .catch((e: unknown) => log?.error('removed-connections handler failed', { error: errorMessage(e) }))
    }
    return { kind: 'reloaded', snapshot: next, removedConnections: removed }
  }

  // One warning a minute while the file on disk stays rejected; unref'd, so it never keeps the process alive.
  const startReminder = (): void => {
    if (reminder || closed) return
    reminder = setInterval(() => {
      if (!rejected) return
      log?.warn('config file on disk is still rejected; the last good config stays live', {
        file: abs,
        rejectedSince: new Date(rejected.sinceMs).toISOString(),
        problemCount: rejected.problems.length,
        problems: rejected.problems,
      })
    }, remindEveryMs)
    reminder.unref()
  }
  const clearRejected = (message?: string): void => {
    rejected = undefined
    if (reminder) clearInterval(reminder)
    reminder = undefined
    if (message) log?.info(message, { file: abs })
  }

  const reload = (reason: string, o: { readonly force?: boolean } = {}): Promise<ReloadOutcome> => {
    const force = o.force ?? false
    // A request made while another waits to start joins it (the file is read when it starts).
    if (waiting && (waiting.force || !force)) return waiting.promise
    const entry = { force, promise: undefined as unknown as Promise<ReloadOutcome> }
    entry.promise = tail.then(() => {
      if (waiting === entry) waiting = undefined
      return attempt(reason, force)
    })
    waiting = entry
    tail = entry.promise.catch((e: unknown) => log?.error('config reload failed', { file: abs, error: errorMessage(e) }))
    return entry.promise
  }

  return {
    reload,
    current: () => current,
    state: () => (rejected ? { kind: 'rejected', problems: rejected.problems, sinceMs: rejected.sinceMs } : { kind: 'ok' }),
    close: async () => {
      closed = true
      if (reminder) clearInterval(reminder)
      reminder = undefined
      await tail
    },
  }
}

/**
 * Watches the config file and reloads it on change. The file's DIRECTORY is watched (an atomic
 * rename-over replaces the inode a file watch would hold), filtered to the file's name and to
 * Kubernetes' `..data`-style entries; when the file is a symlink, the directory of its target is
 * watched too and re-armed when the target moves. A poll every `pollMs` compares the resolved
 * path, inode, size and mtime as a fallback. The content hash decides whether anything changed.
 */
export function watchConfig(file: string, opts: WatchOptions): ConfigWatcher {
  const abs = path.resolve(file)
  const debounceMs = opts.debounceMs ?? RELOAD_DEBOUNCE_MS
  const pollMs = opts.pollMs ?? CONFIG_POLL_INTERVAL_MS
  const log = opts.log
  const reloader = createConfigReloader(abs, opts)
  const watchers = new Map<string, { watcher: FSWatcher; names: ReadonlySet<string> }>()
  let timer: NodeJS.Timeout | undefined
  let closed = false
  let seen: string | undefined

  const schedule = (): void => {
    if (closed) return
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => {
      timer = undefined
      void fire()
    }, debounceMs)
    timer.unref()
  }

  const fire = async (): Promise<void> => {
    if (closed) return
    seen = await fileIdentity(abs)
    await reloader.reload('file changed').catch(() => undefined)
    await arm()
  }

  // Which directories to watch, and which entry names in each matter.
  const targets = async (): Promise<Map<string, Set<string>>> => {
    const want = new Map<string, Set<string>>([[path.dirname(abs), new Set([path.basename(abs)])]])
    const real = await realpath(abs).catch(() => undefined)
    if (real && real !== abs) {
      const names = want.get(path.dirname(real)) ?? new Set<string>()
      names.add(path.basename(real))
      want.set(path.dirname(real), names)
    }
    return want
  }

  const relevant = (names: ReadonlySet<string>, name: string | null): boolean =>
    // No name (some platforms), the file itself, or a `..data`/`..data_tmp`/`..2024_…` entry of a ConfigMap volume.
    name === null || names.has(name) || name.startsWith('..')

  const arm = async (): Promise<void> => {
    if (closed || opts.fileEvents === false) return
    const want = await targets()
    for (const [dir, w] of watchers) {
      const names = want.get(dir)
      if (!names || !sameSet(names, w.names)) {
        w.watcher.close()
        watchers.delete(dir)
      }
    }
    for (const [dir, names] of want) {
      if (watchers.has(dir) || closed) continue
      try {
        const watcher = watch(dir, { persistent: false }, (_event, name) => {
          if (relevant(names, typeof name === 'string' ? name : null)) schedule()
        })
        watcher.on('error', (e) => {
          // The directory went away or was replaced; the poll re-arms it.
          log?.debug('config watcher stopped', { dir, error: e.message })
          watcher.close()
          if (watchers.get(dir)?.watcher === watcher) watchers.delete(dir)
          schedule()
        })
        watchers.set(dir, { watcher, names })
      } catch (e) {
        log?.debug('cannot watch config directory; relying on polling', { dir, error: errorMessage(e) })
      }
    }
  }

  const poll = setInterval(() => {
    void (async () => {
      const id = await fileIdentity(abs)
      if (closed) return
      if (id !== seen) {
        seen = id
        schedule()
      }
      await arm()
    })().catch((e: unknown) => log?.debug('config poll failed', { error: errorMessage(e) }))
  }, pollMs)
  poll.unref()

  const ready = (async () => {
    seen = await fileIdentity(abs)
    await arm()
    // An edit between the caller's initial load and arming would otherwise go unnoticed.
    await reloader.reload('watch started')
  })().then(
    () => undefined,
    (e: unknown) => log?.warn('config watch could not start; relying on polling', { file: abs, error: errorMessage(e) }),
  )

  return {
    ready,
    reload: (reason, opts) => reloader.reload(reason, opts),
    current: () => reloader.current(),
    state: () => reloader.state(),
    async close() {
      closed = true
      await ready
      clearInterval(poll)
      if (timer) clearTimeout(timer)
      for (const w of watchers.values()) w.watcher.close()
      watchers.clear()
      await reloader.close()
    },
  }
}

/** Names of connections in `previous` that `next` no longer has (removed, or renamed away). */
export function removedConnections(previous: ConfigSnapshot, next: ConfigSnapshot): string[] {
  return [...previous.connections.keys()].filter((name) => !next.connections.has(name)).sort()
}

/** Resolved path, device, inode, size and mtime as one comparable string (or the error code). */
async function fileIdentity(file: string): Promise<string> {
  try {
    const [real, st] = await Promise.all([realpath(file), stat(file, { bigint: true })])
    return `${real}\u0000${st.dev}\u0000${st.ino}\u0000${st.size}\u0000${st.mtimeNs}\u0000${st.ctimeNs}`
  } catch (e) {
    return `error:${(e as NodeJS.ErrnoException).code ?? 'unknown'}`
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x))
}
