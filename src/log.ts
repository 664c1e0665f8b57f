/**
 * The operational log: one JSON object per line on stderr (stdout carries MCP in stdio mode).
 * Callers pass facts, never secrets; `Secret` values print as `[redacted]` if one slips in, and
 * every line is redacted of the secrets the process holds (`redact.ts`) in case an error quoted one.
 * @module
 */
import { redactRemembered } from './redact.js'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Readonly<Record<string, unknown>>

export interface Logger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
}

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 }

export function createLogger(opts: { level?: LogLevel; write?: (line: string) => void; now?: () => number } = {}): Logger {
  const min = ORDER[opts.level ?? 'info']
  const write = opts.write ?? ((line: string) => process.stderr.write(line))
  const now = opts.now ?? Date.now
  const emit = (level: LogLevel) => (msg: string, fields?: LogFields) => {
    if (ORDER[level] < min) return
    write(`${redactRemembered(JSON.stringify({ time: new Date(now()).toISOString(), level, msg, ...fields }))}\n`)
  }
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') }
}

/** For tests and library use: a logger that keeps lines in memory. */
export function createMemoryLogger(): Logger & { readonly lines: string[] } {
  const lines: string[] = []
  return Object.assign(createLogger({ level: 'debug', write: (l) => lines.push(l) }), { lines })
}

/** The message of an unknown thrown value, for logs and CLI reason lines (never for the wire). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
