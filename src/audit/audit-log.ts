/**
 * Appends audit events as JSON lines to `audit.file` (created 0600 with its folder). Writes are
 * buffered by one append stream so a tool call never waits on the disk; `close()` flushes.
 * Knows the event shapes only through `events.ts`; decides nothing.
 * @module
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs'
import path from 'node:path'
import type { AuditEvent } from './events.js'

export interface AuditLog {
  record(event: AuditEvent): void
  close(): Promise<void>
}

export function createAuditLog(file: string, opts: { now?: () => number; onError?: (e: Error) => void } = {}): AuditLog {
  const now = opts.now ?? Date.now
  mkdirSync(path.dirname(file), { recursive: true })
  const stream: WriteStream = createWriteStream(file, { flags: 'a', mode: 0o600 })
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
      pending.push(`${JSON.stringify({ time: new Date(now()).toISOString(), ...event })}\n`)
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
