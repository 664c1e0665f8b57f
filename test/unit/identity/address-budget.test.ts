/**
 * The per-address introspection budget: a token bucket per address, refilled evenly, IPv6
 * counted per /64, bounded memory.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { budgetKey, createAddressBudget } from '../../../src/identity/address-budget.js'

const T0 = 1_800_000_000_000

describe('address budget [identity:introspection-budget]', () => {
  test('an address gets perMinute calls at once, then one more per 60/perMinute seconds', () => {
    const b = createAddressBudget(10)
    const taken = Array.from({ length: 15 }, () => b.take('203.0.113.7', T0))
    expect(taken.filter(Boolean)).toHaveLength(10)
    expect(taken.slice(10)).toEqual([false, false, false, false, false])
    expect(b.take('203.0.113.7', T0 + 5_999)).toBe(false)
    expect(b.take('203.0.113.7', T0 + 6_000)).toBe(true)
    expect(b.take('203.0.113.7', T0 + 6_000)).toBe(false)
    // A full minute refills to the cap, never beyond it.
    const later = T0 + 10 * 60_000
    expect(Array.from({ length: 12 }, () => b.take('203.0.113.7', later)).filter(Boolean)).toHaveLength(10)
  })

  test('addresses do not share a budget; one /64 does, as does an IPv4 and its mapped form', () => {
    const b = createAddressBudget(1)
    expect(b.take('198.51.100.1', T0)).toBe(true)
    expect(b.take('198.51.100.2', T0)).toBe(true)
    expect(b.take('::ffff:198.51.100.1', T0)).toBe(false)
    expect(b.take('2001:db8:1:2::1', T0)).toBe(true)
    expect(b.take('2001:db8:1:2:ffff:ffff:ffff:ffff', T0)).toBe(false)
    expect(b.take('2001:db8:1:3::1', T0)).toBe(true)
  })

  test.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['2001:DB8::1', '2001:db8:0:0::/64'],
    ['2001:db8:0:0:1:2:3:4', '2001:db8:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['(unknown)', '(unknown)'],
  ])('budgetKey(%s) = %s', (address, key) => {
    expect(budgetKey(address)).toBe(key)
  })

  test('memory is bounded: the address unused longest is forgotten', () => {
    const b = createAddressBudget(1, 2)
    b.take('192.0.2.1', T0)
    b.take('192.0.2.2', T0)
    b.take('192.0.2.3', T0)
    expect(b.size).toBe(2)
  })
})
