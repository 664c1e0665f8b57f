/**
 * One circuit breaker per connection for upstream MCP servers: after `failures` failures in a row
 * the connection's calls are refused with `UPSTREAM_UNAVAILABLE` for `openMs`, then one trial call
 * goes through (half-open); its success closes the breaker, its failure opens it again. Own code
 * rather than a library (opossum): some 40 lines, no timers, our AppError, while libraries wrap
 * the call with their own timeouts and events. It decides nothing about what counts as a failure.
 * @module
 */
import { AppError } from '../errors.js'

/** Failures in a row that open a breaker: a flaky upstream trips it, a single error does not. */
const DEFAULT_FAILURES = 5
/** How long an open breaker refuses before one trial: short enough to notice a restarted upstream soon. */
const DEFAULT_OPEN_MS = 30_000

export interface Breakers {
  /** Throws `UPSTREAM_UNAVAILABLE` while the connection's breaker is open; lets the one trial through when half-open. */
  check(connectionName: string): void
  succeeded(connectionName: string): void
  failed(connectionName: string): void
}

interface State {
  failures: number
  /** While open: when the trial may go; undefined while closed. */
  openUntil: number | undefined
  /** Half-open: a trial went through; its failure reopens at once. */
  trial: boolean
}

export function createBreakers(opts: { failures?: number; openMs?: number; now?: () => number } = {}): Breakers {
  const limit = opts.failures ?? DEFAULT_FAILURES
  const openMs = opts.openMs ?? DEFAULT_OPEN_MS
  const now = opts.now ?? Date.now
  const states = new Map<string, State>()
  const refuse = (name: string, s: State): never => {
    const seconds = Math.ceil(((s.openUntil ?? now()) - now()) / 1000)
    throw new AppError('UPSTREAM_UNAVAILABLE', `upstream MCP server of "${name}" failed ${s.failures} times in a row; calls are refused for ${seconds} s more`)
  }
  return {
    check(name) {
      const s = states.get(name)
      if (s?.openUntil === undefined) return
      if (now() < s.openUntil) refuse(name, s)
      // The trial: others are refused until it reports, or for another openMs if it never does.
      s.openUntil = now() + openMs
      s.trial = true
    },
    succeeded(name) {
      states.delete(name)
    },
    failed(name) {
      const s = states.get(name) ?? { failures: 0, openUntil: undefined, trial: false }
      s.failures += 1
      if (s.trial || s.failures >= limit) {
        s.openUntil = now() + openMs
        s.trial = false
      }
      states.set(name, s)
    },
  }
}
