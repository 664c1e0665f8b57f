/**
 * The key schema: shapes from docs/storage-schema.md, hashing of user ids, flow ids and lock
 * names, and refusal of refs that could make two pairs share a key.
 * @module
 */
import { createHash } from 'node:crypto'
import { describe, expect, test } from 'vitest'
import { ticketKey, lockKey, tokenKey, tokenLockName, tokenPrefix } from '../../../src/store/keys.js'

const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex')

describe('key schema', () => {
  test('token keys: connection in clear, user hashed, shared as its own segment', () => {
    expect(tokenKey('keyway', { connection: 'github', user: null })).toBe('keyway:tok:github:shared')
    expect(tokenKey('keyway', { connection: 'drive', user: 'alice@example.com' })).toBe(`keyway:tok:drive:u${sha('alice@example.com')}`)
    expect(tokenKey('keyway', { connection: 'drive', user: 'alice@example.com' }).startsWith(tokenPrefix('keyway', 'drive'))).toBe(true)
  })

  test('flow ids and lock names never appear in keys', () => {
    expect(ticketKey('keyway', 'abc')).toBe(`keyway:flow:${sha('abc')}`)
    expect(lockKey('keyway', 'refresh:x')).toBe(`keyway:lock:${sha('refresh:x')}`)
    expect(tokenLockName({ connection: 'c', user: 'bob' })).toBe(`refresh:c:u${sha('bob')}`)
  })

  test.each([
    [{ connection: 'a:b', user: 'c' }],
    [{ connection: '', user: 'c' }],
    [{ connection: 'a'.repeat(65), user: null }],
    [{ connection: 'a/b', user: null }],
    [{ connection: 'a', user: '' }],
  ])('refuses %j', (ref) => {
    expect(() => tokenKey('keyway', ref)).toThrow(expect.objectContaining({ code: 'INTERNAL' }))
  })

  test('case and Unicode normalisation are not folded', () => {
    const keys = ['Alice', 'alice', 'caf\u00e9', 'cafe\u0301'].map((user) => tokenKey('keyway', { connection: 'c', user }))
    expect(new Set(keys).size).toBe(4)
  })
})
