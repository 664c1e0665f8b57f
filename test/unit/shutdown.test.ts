/**
 * The shutdown state (`src/shutdown.ts`): calls in flight are counted, `idle` resolves when the
 * last one ends, `abort` ends every call at once with `CallStopped('shutdown')` and aborts the
 * shared signal, a call's own signal ends it as `cancelled`, and work left behind is waited for
 * by `settled` without an unhandled rejection.
 */
import { describe, expect, test } from 'vitest'
import { CallStopped, createShutdown, SHUTTING_DOWN_MESSAGE } from '../../src/shutdown.js'

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

describe('shutdown', () => {
  test('race passes results and failures through and counts calls in flight', async () => {
    const s = createShutdown()
    const a = deferred<number>()
    const b = deferred<number>()
    const ra = s.race(a.promise)
    const rb = s.race(b.promise)
    expect(s.inFlight).toBe(2)
    a.resolve(1)
    expect(await ra).toBe(1)
    b.reject(new Error('boom'))
    await expect(rb).rejects.toThrow('boom')
    expect(s.inFlight).toBe(0)
    expect(s.draining).toBe(false)
  })

  test('idle resolves true when the last call ends, false at its timeout', async () => {
    const s = createShutdown()
    expect(await s.idle(0)).toBe(true)
    const a = deferred<void>()
    const r = s.race(a.promise)
    expect(await s.idle(5)).toBe(false)
    const waiting = s.idle(10_000)
    a.resolve()
    await r
    expect(await waiting).toBe(true)
  })

  test('abort ends every call at once as stopped by shutdown, aborts the signal, and later races fail at once', async () => {
    const s = createShutdown()
    const hanging = deferred<void>()
    const r = s.race(hanging.promise)
    s.begin()
    expect(s.draining).toBe(true)
    s.abort()
    const e = await r.catch((x: unknown) => x)
    expect(e).toBeInstanceOf(CallStopped)
    expect(e).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', message: SHUTTING_DOWN_MESSAGE, stopped: 'shutdown' })
    expect(s.signal.aborted).toBe(true)
    expect(s.signal.reason).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', stopped: 'shutdown' })
    expect(s.inFlight).toBe(0)
    await expect(s.race(Promise.resolve(1))).rejects.toMatchObject({ stopped: 'shutdown' })
  })

  test("a call's own signal ends it as cancelled; the other calls go on", async () => {
    const s = createShutdown()
    const own = new AbortController()
    const cancelled = s.race(deferred<void>().promise, own.signal)
    const other = deferred<number>()
    const going = s.race(other.promise)
    own.abort()
    await expect(cancelled).rejects.toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', stopped: 'cancelled', message: 'the call was cancelled by the client' })
    expect(s.inFlight).toBe(1)
    other.resolve(2)
    expect(await going).toBe(2)
    const already = new AbortController()
    already.abort()
    await expect(s.race(Promise.resolve(3), already.signal)).rejects.toMatchObject({ stopped: 'cancelled' })
  })

  test('work left behind by a stopped call is awaited by settled, and its failure is not unhandled', async () => {
    const s = createShutdown()
    const work = deferred<void>()
    const r = s.race(work.promise)
    s.abort()
    await expect(r).rejects.toBeInstanceOf(CallStopped)
    expect(await s.settled(5)).toBe(false)
    const done = s.settled(10_000)
    work.reject(new Error('the refresh failed after all'))
    expect(await done).toBe(true)
    expect(await s.settled(0)).toBe(true)
  })
})
