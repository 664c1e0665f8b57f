import { describe, expect, test } from 'vitest'
import { AppError } from '../../../src/errors.js'
import { createConcurrencyLimiter } from '../../../src/egress/limits.js'

const conn = { name: 'crm', maxConcurrentRequests: 3, maxConcurrentRequestsPerCaller: 2 }

function busy(fn: () => unknown): AppError {
  try {
    fn()
  } catch (e) {
    if (e instanceof AppError) return e
    throw e
  }
  throw new Error('expected UPSTREAM_BUSY')
}

describe('createConcurrencyLimiter [egress:busy]', () => {
  test('the caller limit refuses the caller at its limit, not the others', () => {
    const limits = createConcurrencyLimiter()
    limits.acquire(conn, 'user alice')
    limits.acquire(conn, 'user alice')
    const e = busy(() => limits.acquire(conn, 'user alice'))
    expect(e.code).toBe('UPSTREAM_BUSY')
    expect(e.message).toBe(
      'user alice already has 2 requests in flight on connection "crm", the per-caller limit (maxConcurrentRequestsPerCaller); retry after a moment',
    )
    expect(e.detail).toEqual({ connection: 'crm', scope: 'caller', limit: 2, transient: true })
    expect(limits.inFlight('crm')).toBe(2)
    limits.acquire(conn, 'user bob')
    expect(limits.inFlight('crm')).toBe(3)
  })

  test('the connection limit refuses everyone once the connection is full; a refusal takes nothing', () => {
    const limits = createConcurrencyLimiter()
    limits.acquire(conn, 'user alice')
    limits.acquire(conn, 'user bob')
    limits.acquire(conn, 'user carol')
    const e = busy(() => limits.acquire(conn, 'user dave'))
    expect(e.message).toBe('connection "crm" already has 3 requests in flight, its limit (maxConcurrentRequests); retry after a moment')
    expect(e.detail).toMatchObject({ scope: 'connection', limit: 3 })
    expect(limits.inFlight('crm')).toBe(3)
    expect(limits.inFlight('crm', 'user dave')).toBe(0)
    // Other connections have their own counters.
    limits.acquire({ ...conn, name: 'other' }, 'user dave')
    expect(limits.inFlight('other')).toBe(1)
  })

  test('release gives the slot back once, however often it is called, and entries at zero are gone', () => {
    const limits = createConcurrencyLimiter()
    const r1 = limits.acquire(conn, 'user alice')
    const r2 = limits.acquire(conn, 'user alice')
    r1()
    r1()
    expect(limits.inFlight('crm', 'user alice')).toBe(1)
    r2()
    expect(limits.inFlight('crm')).toBe(0)
    expect(limits.inFlight('crm', 'user alice')).toBe(0)
    // Back to the full allowance.
    limits.acquire(conn, 'user alice')
    limits.acquire(conn, 'user alice')
    expect(limits.inFlight('crm', 'user alice')).toBe(2)
  })

  test('a limit lowered by a reload applies to the next acquire, counting the calls already in flight', () => {
    const limits = createConcurrencyLimiter()
    limits.acquire(conn, 'user alice')
    limits.acquire(conn, 'user bob')
    expect(busy(() => limits.acquire({ ...conn, maxConcurrentRequests: 2 }, 'carol')).detail).toMatchObject({ scope: 'connection', limit: 2 })
  })
})
