/**
 * The verified-token cache: hashed keys, 60 s and `exp` bounds, LRU eviction.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { createHash } from 'node:crypto'
import { createRefusalCache, createTokenCache, hashToken } from '../../../src/identity/oidc-cache.js'
import type { VerifiedToken } from '../../../src/identity/oidc-claims.js'

const T0 = 1_800_000_000_000
const token = (expiresAt: number, user = 'alice'): VerifiedToken => ({ kind: 'user', user, groups: [], scopes: [], expiresAt })

describe('token cache', () => {
  test('keys are the SHA-256 of the token, never the token [secret:never-logged]', () => {
    expect(hashToken('abc')).toBe(createHash('sha256').update('abc').digest('base64url'))
    expect(hashToken('abc')).not.toContain('abc')
  })

  test('an entry lives 60 s at most', () => {
    const c = createTokenCache()
    const v = token(T0 / 1000 + 3600)
    c.set('k', v, T0)
    expect(c.get('k', T0 + 59_999)).toBe(v)
    expect(c.get('k', T0 + 60_000)).toBeUndefined()
  })

  test('an entry never outlives exp', () => {
    const c = createTokenCache()
    c.set('k', token(T0 / 1000 + 10), T0)
    expect(c.get('k', T0 + 9_999)).toBeDefined()
    expect(c.get('k', T0 + 10_000)).toBeUndefined()
    c.set('gone', token(T0 / 1000 - 1), T0)
    expect(c.size).toBe(0)
  })

  test('past the bound the least recently used entry goes', () => {
    const c = createTokenCache(2)
    const exp = T0 / 1000 + 3600
    c.set('a', token(exp, 'a'), T0)
    c.set('b', token(exp, 'b'), T0)
    c.get('a', T0) // a is now the most recent
    c.set('c', token(exp, 'c'), T0)
    expect(c.size).toBe(2)
    expect(c.get('b', T0)).toBeUndefined()
    expect(c.get('a', T0)).toMatchObject({ user: 'a' })
    expect(c.get('c', T0)).toMatchObject({ user: 'c' })
  })
})

describe('per-entry lifetime and refusals [identity:introspection-budget]', () => {
  test('set takes a shorter lifetime per entry (introspection cacheTtlSeconds); 0 keeps nothing', () => {
    const c = createTokenCache()
    const v = token(T0 / 1000 + 3600)
    c.set('short', v, T0, 5_000)
    expect(c.get('short', T0 + 4_999)).toBe(v)
    expect(c.get('short', T0 + 5_000)).toBeUndefined()
    c.set('none', v, T0, 0)
    expect(c.size).toBe(0)
  })

  test('a refusal is remembered as its reason for its lifetime, LRU-bounded', () => {
    const r = createRefusalCache(2)
    r.set('a', 'token is not active', T0, 60_000)
    expect(r.get('a', T0 + 59_999)).toBe('token is not active')
    expect(r.get('a', T0 + 60_000)).toBeUndefined()
    r.set('x', 'no', T0, 0)
    expect(r.size).toBe(0)
    for (const k of ['b', 'c', 'd']) r.set(k, 'token is not active', T0, 60_000)
    expect(r.size).toBe(2)
    expect(r.get('b', T0)).toBeUndefined()
    expect(r.get('d', T0)).toBe('token is not active')
  })
})
