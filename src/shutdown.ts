/**
 * The shutdown state of one running Keyway (README "Shutdown and readiness", design.md §4):
 * whether it is draining, which tool calls are in flight, and the one `AbortController` whose
 * signal stops every upstream request still running when the drain time is up. A call runs
 * through `race`, so that at that moment its caller gets `UPSTREAM_UNAVAILABLE: server shutting
 * down` at once, while the work it leaves behind (a refresh holding a lease, say) is kept and
 * waited for briefly by `settled` before the store closes. This module owns no timings of its own
 * (callers pass them) and does no I/O beyond timers; it never decides what a call does.
 * @module
 */
import { AppError } from './errors.js'

/** The message of every call stopped by a shutdown, after the code (`UPSTREAM_UNAVAILABLE`). */
export const SHUTTING_DOWN_MESSAGE = 'server shutting down'

/** How a call was stopped, as its audit line says (`stopped`). */
export type StopReason =
  /** It arrived while draining and was refused before anything was sent. */
  | 'draining'
  /** It was still running when the drain time was up; its upstream requests were aborted. */
  | 'shutdown'
  /** The client cancelled it (MCP cancellation, or the connection closed); its upstream requests were aborted. */
  | 'cancelled'

/** The failure a call stopped by shutdown or cancellation ends with; `stopped` tells which. */
export class CallStopped extends AppError {
  readonly stopped: StopReason
  constructor(stopped: StopReason) {
    super('UPSTREAM_UNAVAILABLE', stopped === 'cancelled' ? 'the call was cancelled by the client' : SHUTTING_DOWN_MESSAGE, {
      detail: { stopped },
    })
    this.stopped = stopped
  }
}

export interface Shutdown {
  /** True from `begin` on: `/readyz` answers 503 and new tool calls are refused. */
  readonly draining: boolean
  /** Aborted by `abort`, with a `CallStopped('shutdown')` reason; every upstream request follows it. */
  readonly signal: AbortSignal
  /** Tool calls in flight now. */
  readonly inFlight: number
  /**
   * Runs one call: resolves or rejects as `work` does, unless the shutdown aborts first (then it
   * rejects with `CallStopped('shutdown')`) or `callSignal` aborts first (`CallStopped('cancelled')`).
   * Work that loses the race is kept until it settles (see `settled`), and its failure is dropped.
   */
  race<T>(work: Promise<T>, callSignal?: AbortSignal): Promise<T>
  /** Starts draining; idempotent. */
  begin(): void
  /** Resolves true once no call is in flight, or false after `timeoutMs`. */
  idle(timeoutMs: number): Promise<boolean>
  /** Aborts `signal`: calls in flight end at once, their upstream requests are cut. Idempotent. */
  abort(): void
  /** Resolves true once all work left behind by stopped calls has settled, or false after `timeoutMs`. */
  settled(timeoutMs: number): Promise<boolean>
}

interface Running {
  readonly stop: (e: CallStopped) => void
  readonly work: Promise<unknown>
}

export function createShutdown(): Shutdown {
  const controller = new AbortController()
  const running = new Set<Running>()
  const leftBehind = new Set<Promise<unknown>>()
  const idleWaiters = new Set<() => void>()
  let draining = false

  const keep = (work: Promise<unknown>): void => {
    const settledWork = work.then(
      () => undefined,
      () => undefined,
    )
    leftBehind.add(settledWork)
    void settledWork.then(() => leftBehind.delete(settledWork))
  }
  const finished = (entry: Running): void => {
    running.delete(entry)
    if (running.size === 0) for (const w of [...idleWaiters]) w()
  }

  return {
    get draining() {
      return draining
    },
    signal: controller.signal,
    get inFlight() {
      return running.size
    },
    race<T>(work: Promise<T>, callSignal?: AbortSignal): Promise<T> {
      if (controller.signal.aborted) {
        keep(work)
        return Promise.reject(new CallStopped('shutdown'))
      }
      return new Promise<T>((resolve, reject) => {
        let done = false
        const onCancel = (): void => entry.stop(new CallStopped('cancelled'))
        const entry: Running = {
          work,
          stop: (e) => {
            if (done) return
            done = true
            callSignal?.removeEventListener('abort', onCancel)
            keep(work)
            finished(entry)
            reject(e)
          },
        }
        running.add(entry)
        if (callSignal?.aborted) return onCancel()
        callSignal?.addEventListener('abort', onCancel, { once: true })
        const settle = (f: () => void): void => {
          if (done) return
          done = true
          callSignal?.removeEventListener('abort', onCancel)
          finished(entry)
          f()
        }
        work.then(
          (v) => settle(() => resolve(v)),
          (e: unknown) => settle(() => reject(e)),
        )
      })
    },
    begin() {
      draining = true
    },
    idle(timeoutMs) {
      if (running.size === 0) return Promise.resolve(true)
      return new Promise<boolean>((resolve) => {
        const done = (v: boolean): void => {
          clearTimeout(timer)
          idleWaiters.delete(onIdle)
          resolve(v)
        }
        const onIdle = (): void => done(true)
        const timer = setTimeout(() => done(false), Math.max(0, timeoutMs))
        idleWaiters.add(onIdle)
      })
    },
    abort() {
      if (controller.signal.aborted) return
      draining = true
      controller.abort(new CallStopped('shutdown'))
      for (const entry of [...running]) entry.stop(new CallStopped('shutdown'))
    },
    async settled(timeoutMs) {
      if (leftBehind.size === 0) return true
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.max(0, timeoutMs))
      })
      const all = Promise.all([...leftBehind]).then(() => true as const)
      const r = await Promise.race([all, timeout])
      clearTimeout(timer)
      return r
    },
  }
}
