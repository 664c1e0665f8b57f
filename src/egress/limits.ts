/**
 * Concurrency limits of upstream calls: how many requests may be in flight on one connection
 * (`maxConcurrentRequests`) and for one caller on one connection
 * (`maxConcurrentRequestsPerCaller`). Over a limit the call fails at once with `UPSTREAM_BUSY`
 * (retryable); nothing ever waits in a queue here, so one caller's slow calls cannot grow
 * Keyway's memory or hold everyone else (README "Security model"). Counters live in two Maps
 * and an entry is deleted when it returns to zero. This module counts; it must not send,
 * sleep or decide who may call what.
 * @module
 */
import { AppError } from '../errors.js'

/** The limits of one connection, as resolved from the config (connection value or `egress` default). */
export interface ConcurrencyLimits {
  readonly name: string
  readonly maxConcurrentRequests: number
  readonly maxConcurrentRequestsPerCaller: number
}

export interface ConcurrencyLimiter {
  /**
   * Takes one slot for the caller `who` (as `describeCaller` writes it: `user alice@example.com`,
   * `service principal etl-bot`, so the two kinds never share a count) on `connection`, or throws `UPSTREAM_BUSY` when the connection or
   * the caller is at its limit (nothing is taken then). The returned function gives the slot
   * back; call it exactly once, in a `finally`.
   */
  acquire(connection: ConcurrencyLimits, who: string): () => void
  /** Requests in flight on a connection (0 when none), for tests and diagnostics. */
  inFlight(connection: string, user?: string): number
}

// Connection names match ^[A-Za-z0-9_-]{1,64}$, so NUL cannot occur in them: the pair key is unambiguous.
const SEPARATOR = '\u0000'

export function createConcurrencyLimiter(): ConcurrencyLimiter {
  const perConnection = new Map<string, number>()
  const perCaller = new Map<string, number>()

  const decrement = (map: Map<string, number>, key: string): void => {
    const n = map.get(key) ?? 0
    if (n <= 1) map.delete(key)
    else map.set(key, n - 1)
  }

  return {
    acquire(connection, who) {
      const name = connection.name
      const pair = name + SEPARATOR + who
      const onConnection = perConnection.get(name) ?? 0
      if (onConnection >= connection.maxConcurrentRequests)
        throw new AppError(
          'UPSTREAM_BUSY',
          `connection "${name}" already has ${onConnection} requests in flight, its limit (maxConcurrentRequests); retry after a moment`,
          { detail: { connection: name, scope: 'connection', limit: connection.maxConcurrentRequests, transient: true } },
        )
      const ofCaller = perCaller.get(pair) ?? 0
      if (ofCaller >= connection.maxConcurrentRequestsPerCaller)
        throw new AppError(
          'UPSTREAM_BUSY',
          `${who} already has ${ofCaller} requests in flight on connection "${name}", the per-caller limit (maxConcurrentRequestsPerCaller); retry after a moment`,
          { detail: { connection: name, scope: 'caller', limit: connection.maxConcurrentRequestsPerCaller, transient: true } },
        )
      perConnection.set(name, onConnection + 1)
      perCaller.set(pair, ofCaller + 1)
      let released = false
      return () => {
        if (released) return
        released = true
        decrement(perConnection, name)
        decrement(perCaller, pair)
      }
    },
    inFlight(connection, user) {
      return (user === undefined ? perConnection.get(connection) : perCaller.get(connection + SEPARATOR + user)) ?? 0
    },
  }
}
