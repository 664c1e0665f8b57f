/**
 * Attack suite, comparing secrets: a presented API key must not be compared in a way whose time
 * depends on how much of it matched. Keyway hashes the key (SHA-256) and compares the digest with
 * every configured entry through `crypto.timingSafeEqual`, without stopping at the first match,
 * so neither the comparison nor an early exit tells which entry almost matched. The real
 * `timingSafeEqual` runs; the test only counts its calls.
 * @module
 */
import { createHash } from 'node:crypto'
import { beforeEach, describe, expect, test, vi } from 'vitest'
import type { ApiKeyEntry } from '../../src/config/load.js'
import { sha256Hex } from '../../src/encoding.js'
import { matchApiKey } from '../../src/identity/api-keys.js'

const compared = vi.hoisted(() => ({ calls: [] as [Buffer, Buffer][] }))

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>()
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compared.calls.push([Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)])
      return real.timingSafeEqual(a, b)
    },
  }
})

const KEYS = ['kw_first_key_0123456789abcdefghij', 'kw_second_key_0123456789abcdefghi', 'kw_third_key_0123456789abcdefghij']
const entries = new Map<string, ApiKeyEntry>(KEYS.map((k, i) => [sha256Hex(k), { user: `user${i}@example.com`, groups: [] }]))

beforeEach(() => {
  compared.calls.length = 0
})

describe('API keys are compared in constant time', () => {
  const rows: readonly [string, string, string | undefined][] = [
    ['the first entry matches', KEYS[0] ?? '', 'user0@example.com'],
    ['the last entry matches', KEYS[2] ?? '', 'user2@example.com'],
    ['a key differing only in its last character', `${(KEYS[1] ?? '').slice(0, -1)}X`, undefined],
    ['an empty key', '', undefined],
  ]
  for (const [what, presented, user] of rows) {
    test(`${what}: one timingSafeEqual of 32-byte SHA-256 digests per entry, never the key itself`, () => {
      expect(matchApiKey(presented, entries)?.user).toBe(user)
      expect(compared.calls).toHaveLength(KEYS.length)
      const digest = createHash('sha256').update(presented, 'utf8').digest()
      for (const [a, b] of compared.calls) {
        expect(a.length).toBe(32)
        expect(b.length).toBe(32)
        expect(a.equals(digest)).toBe(true)
      }
      expect(compared.calls.map(([, b]) => b.toString('hex'))).toEqual([...entries.keys()])
    })
  }
})
