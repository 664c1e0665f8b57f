/**
 * Appends audit events as JSON lines to `audit.file` (created 0600 with its folder; an existing
 * file with looser permissions is tightened to 0600, or the log refuses to open). Writes are
 * buffered by one append stream so a tool call never waits on the disk; `close()` flushes.
 * Knows the event shapes only through `events.ts`; decides nothing.
 * @module
 */
import { closeSync, createWriteStream, fchmodSync, fstatSync, mkdirSync, openSync, type WriteStream } from 'node:fs'
import path from 'node:path'
import { AppError } from '../errors.js'
import { toSafeJsonLine } from '../safe-text.js'
import type { AuditEvent } from './events.js'

export interface AuditLog {
  record(event: AuditEvent): void
  close(): Promise<void>
}

export function createAuditLog(file: string, opts: { now?: () => number; onError?: (e: Error) => void } = {}): AuditLog {
  const now = opts.now ?? Date.now
  mkdirSync(path.dirname(file), { recursive: true })
  const stream: WriteStream = createWriteStream(file, { fd: openPrivate(file), flags: 'a' })
  stream.on('error', (e) => opts.onError?.(e))
  // Lines of one event-loop turn go to the file in one write: under load that is one syscall
  // for many calls instead of one each.
  let pending: string[] = []
  const flush = (): void => {
    if (pending.length === 0) return
    stream.write(pending.join(''))
    pending = []
  }
  return {
    record(event) {
      if (pending.length === 0) setImmediate(flush)
      pending.push(`${toSafeJsonLine({ time: new Date(now()).toISOString(), ...event })}\n`)
    },
    close: () =>
      new Promise<void>((resolve) => {
        flush()
        stream.end(resolve)
      }),
  }
}

/** An audit log kept in memory, for tests and for commands that only need to collect events. */
export function createMemoryAuditLog(): AuditLog & { readonly events: AuditEvent[] } {
  const events: AuditEvent[] = []
  return { events, record: (e) => void events.push(e), close: async () => {} }
}

/**
 * Opens `file` for appending, readable by its owner only. The log names users, connections and
 * paths: a file left 0644 by an earlier tool or a restore is tightened, and one that cannot be
 * tightened (another owner, a read-only mount) stops start-up with the reason.
 */
function openPrivate(file: string): number {
  let fd: number
  try {
    fd = openSync(file, 'a', 0o600)
  } catch (e) {
    throw new AppError('CONFIG_INVALID', `audit.file ${file} cannot be opened for writing (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { cause: e })
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new AppError('CONFIG_INVALID', `audit.file ${file} is not a regular file`)
    if ((stat.mode & 0o077) !== 0) fchmodSync(fd, 0o600)
  } catch (e) {
    closeSync(fd)
    if (e instanceof AppError) throw e
    throw new AppError(
      'CONFIG_INVALID',
      `audit.file ${file} is readable by others and cannot be made 0600 (${(e as NodeJS.ErrnoException).code ?? 'error'}); fix its owner or mode`,
      { cause: e },
    )
  }
  return fd
}
