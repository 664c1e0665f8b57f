/**
 * The per-connection circuit breaker of upstream MCP servers: opens after N failures in a row,
 * refuses with UPSTREAM_UNAVAILABLE, lets one trial through after openMs, closes or reopens on it.
 */
import { describe, expect, test } from 'vitest'
import { isAppError } from '../../../src/errors.js'
import { createBreakers } from '../../../src/mcp-upstream/breaker.js'

function refusal(fn: () => void): string | undefined {
  try {
    fn()
    return undefined
  } catch (e) {
    expect(isAppError(e, 'UPSTREAM_UNAVAILABLE')).toBe(true)
    return (e as Error).message
  }
}

describe('createBreakers', () => {
  test('opens after the failures in a row, per connection; a success in between resets the count', () => {
    let t = 0
    const b = createBreakers({ failures: 3, openMs: 10_000, now: () => t })
    b.failed('a')
    b.failed('a')
    b.succeeded('a')
    b.failed('a')
    b.failed('a')
    expect(refusal(() => b.check('a'))).toBeUndefined()
    b.failed('a')
    expect(refusal(() => b.check('a'))).toBe('upstream MCP server of "a" failed 3 times in a row; calls are refused for 10 s more')
    expect(refusal(() => b.check('other'))).toBeUndefined()
    t = 4_500
    expect(refusal(() => b.check('a'))).toContain('refused for 6 s more')
  })

  test('half-open: one trial after openMs, others refused; its success closes, its failure reopens', () => {
    let t = 0
    const b = createBreakers({ failures: 1, openMs: 1_000, now: () => t })
    b.failed('a')
    expect(refusal(() => b.check('a'))).toBeDefined()
    t = 1_000
    expect(refusal(() => b.check('a'))).toBeUndefined() // the trial
    expect(refusal(() => b.check('a'))).toBeDefined() // everyone else while it runs
    b.failed('a')
    expect(refusal(() => b.check('a'))).toContain('failed 2 times')
    t = 2_000
    expect(refusal(() => b.check('a'))).toBeUndefined()
    b.succeeded('a')
    expect(refusal(() => b.check('a'))).toBeUndefined()
    expect(refusal(() => b.check('a'))).toBeUndefined()
  })

  test('a trial that never reports does not keep the breaker shut: another goes after openMs', () => {
    let t = 0
    const b = createBreakers({ failures: 1, openMs: 1_000, now: () => t })
    b.failed('a')
    t = 1_000
    b.check('a')
    t = 1_999
    expect(refusal(() => b.check('a'))).toBeDefined()
    t = 2_000
    expect(refusal(() => b.check('a'))).toBeUndefined()
  })

  test('defaults: 5 failures, 30 s', () => {
    let t = 0
    const b = createBreakers({ now: () => t })
    for (let i = 0; i < 4; i++) b.failed('a')
    expect(refusal(() => b.check('a'))).toBeUndefined()
    b.failed('a')
    expect(refusal(() => b.check('a'))).toContain('refused for 30 s more')
    t = 30_000
    expect(refusal(() => b.check('a'))).toBeUndefined()
  })
})
