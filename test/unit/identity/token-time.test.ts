/**
 * Time rules beyond exp/nbf: iat not in the future, optional lifetime cap.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { CLOCK_TOLERANCE_S, tokenTimeProblem } from '../../../src/identity/token-time.js'

const NOW = 1_800_000_000

describe('tokenTimeProblem [identity:iat]', () => {
  test.each([
    ['iat now', { iat: NOW, exp: NOW + 600 }, undefined, undefined],
    ['iat within the clock tolerance ahead', { iat: NOW + CLOCK_TOLERANCE_S, exp: NOW + 600 }, undefined, undefined],
    ['iat beyond the tolerance ahead', { iat: NOW + CLOCK_TOLERANCE_S + 1, exp: NOW + 600 }, undefined, 'token "iat" is in the future'],
    ['iat not a number', { iat: '1800000000', exp: NOW + 600 }, undefined, 'token claim "iat" is not a number'],
    ['no iat, no cap', { exp: NOW + 10 ** 9 }, undefined, undefined],
    ['lifetime exactly the cap', { iat: NOW - 100, exp: NOW + 3500 }, 3600, undefined],
    ['lifetime above the cap', { iat: NOW - 100, exp: NOW + 3501 }, 3600, 'token lifetime is longer than maxTokenLifetimeSeconds'],
    ['no iat: exp - now above the cap', { exp: NOW + 3601 }, 3600, 'token lifetime is longer than maxTokenLifetimeSeconds'],
    ['no iat: exp - now within the cap', { exp: NOW + 3600 }, 3600, undefined],
  ])('%s', (_name, times, cap, expected) => {
    expect(tokenTimeProblem(times, NOW, cap)).toBe(expected)
  })
})
