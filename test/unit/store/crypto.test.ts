/**
 * Keyring and envelope: key parsing errors name the setting and never the value, key ids, the
 * ephemeral-key warning, AES-GCM with the store key as associated data, and every way an envelope
 * can fail to open being `STORE_UNAVAILABLE`.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { describe, expect, test, vi } from 'vitest'
import { AppError } from '../../../src/errors.js'
import { Secret } from '../../../src/secret.js'
import { createKeyring, keyIdOf, parseStoreKey, type KeyringOptions } from '../../../src/store/crypto.js'
import { openJson, sealedKeyId, sealJson } from '../../../src/store/sealed.js'

const rawA = randomBytes(32)
const rawB = randomBytes(32)
const A = new Secret(rawA.toString('base64'))
const B = new Secret(rawB.toString('base64'))

function opts(over: Partial<KeyringOptions> = {}): KeyringOptions {
  return { current: A, previous: [], dangerouslyUseEphemeralKey: false, warn: () => {}, ...over }
}

function thrown(fn: () => unknown): AppError {
  try {
    fn()
  } catch (e) {
    expect(e).toBeInstanceOf(AppError)
    return e as AppError
  }
  throw new Error('expected a throw')
}

describe('parseStoreKey', () => {
  test.each([
    ['31 bytes', randomBytes(31).toString('base64'), 'decodes to 31 bytes'],
    ['33 bytes', randomBytes(33).toString('base64'), 'decodes to 33 bytes'],
    ['hex instead of base64 (64 chars = 48 bytes)', randomBytes(32).toString('hex'), 'decodes to 48 bytes'],
    ['not base64', 'this is not base64 at all!', 'is not base64'],
    ['mixed alphabets', `${randomBytes(30).toString('base64').slice(0, 40)}+-_/`, 'is not base64'],
  ])('refuses %s, naming the setting and not the value', (_name, value, reason) => {
    const err = thrown(() => parseStoreKey(new Secret(value), 'store.encryptionKey'))
    expect(err.code).toBe('CONFIG_INVALID')
    expect(err.message).toContain('store.encryptionKey')
    expect(err.message).toContain('32 bytes')
    expect(err.message).toContain('openssl rand -base64 32')
    expect(err.message).toContain(reason)
    expect(err.message).not.toContain(value)
    expect(inspect(err)).not.toContain(value)
  })

  test('accepts standard and url-safe base64, with or without padding and a trailing newline', () => {
    const raw = Buffer.from('fb'.repeat(32), 'hex') // has + and / in standard base64
    for (const text of [raw.toString('base64'), raw.toString('base64').replace(/=+$/, ''), raw.toString('base64url'), `${raw.toString('base64')}\n`]) {
      expect(parseStoreKey(new Secret(text), 'k').equals(raw)).toBe(true)
    }
  })
})

describe('createKeyring', () => {
  test('key id is the first 16 hex chars of SHA-256 of the raw key', () => {
    const expected = createHash('sha256').update(rawA).digest('hex').slice(0, 16)
    expect(keyIdOf(rawA)).toBe(expected)
    expect(createKeyring(opts()).currentKeyId).toBe(expected)
    expect(createKeyring(opts({ previous: [B] })).keyIds).toEqual([expected, keyIdOf(rawB)])
  })

  test('no key is CONFIG_INVALID with the command that makes one', () => {
    const err = thrown(() => createKeyring(opts({ current: undefined })))
    expect(err.code).toBe('CONFIG_INVALID')
    expect(err.message).toMatch(/^store\.encryptionKey is not set: /)
    expect(err.message).toContain('openssl rand -base64 32')
    expect(thrown(() => createKeyring(opts({ current: undefined, previous: [A] }))).code).toBe('CONFIG_INVALID')
  })

  test('a bad previous key names its index', () => {
    const err = thrown(() => createKeyring(opts({ previous: [B, new Secret('short')] })))
    expect(err.message).toContain('store.encryptionKeys[1]')
  })

  test('the ephemeral flag makes a random key and warns once, loudly', () => {
    const warn = vi.fn()
    const a = createKeyring(opts({ current: undefined, dangerouslyUseEphemeralKey: true, warn }))
    const b = createKeyring(opts({ current: undefined, dangerouslyUseEphemeralKey: true, warn: () => {} }))
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]?.[0])).toContain('store.dangerouslyUseEphemeralKey')
    expect(a.currentKeyId).not.toBe(b.currentKeyId)
    // A configured key wins over the flag and nothing is announced.
    const quiet = vi.fn()
    expect(createKeyring(opts({ dangerouslyUseEphemeralKey: true, warn: quiet })).currentKeyId).toBe(keyIdOf(rawA))
    expect(quiet).not.toHaveBeenCalled()
  })

  test('never shows key bytes', () => {
    const ring = createKeyring(opts({ previous: [B] }))
    const shown = `${inspect(ring, { showHidden: true, depth: 5 })} ${JSON.stringify(ring)}`
    for (const raw of [rawA, rawB]) {
      expect(shown).not.toContain(raw.toString('base64'))
      expect(shown).not.toContain(raw.toString('hex'))
    }
  })

  test('encrypts with a fresh 96-bit IV each time and a 16-byte tag', () => {
    const ring = createKeyring(opts())
    const aad = Buffer.from('aad')
    const one = ring.encrypt(Buffer.from('hello'), aad)
    const two = ring.encrypt(Buffer.from('hello'), aad)
    expect(one.iv).toHaveLength(12)
    expect(one.ciphertext).toHaveLength(5 + 16)
    expect(one.iv.equals(two.iv)).toBe(false)
    const ok = ring.decrypt(one.keyId, one.iv, one.ciphertext, aad)
    expect(ok.ok && ok.plaintext.toString()).toBe('hello')
  })

  test('associated data is bound: another AAD, a short tag or an unknown key id fail', () => {
    const ring = createKeyring(opts())
    const { keyId, iv, ciphertext } = ring.encrypt(Buffer.from('secret'), Buffer.from('keyway:tok:a:shared'))
    expect(ring.decrypt(keyId, iv, ciphertext, Buffer.from('keyway:tok:b:shared'))).toEqual({ ok: false, reason: 'authentication-failed' })
    expect(ring.decrypt(keyId, iv, ciphertext.subarray(0, ciphertext.length - 4), Buffer.from('keyway:tok:a:shared'))).toEqual({
      ok: false,
      reason: 'authentication-failed',
    })
    expect(ring.decrypt('0000000000000000', iv, ciphertext, Buffer.from('keyway:tok:a:shared'))).toEqual({ ok: false, reason: 'unknown-key-id' })
  })
})

describe('sealed envelope', () => {
  const ring = createKeyring(opts())
  const ringBA = createKeyring(opts({ current: B, previous: [A] }))
  const value = { accessToken: 'canary-at-9f3', n: 1 }

  test('format is kw1.<keyId>.<iv>.<body> and round-trips', () => {
    const sealed = sealJson(ring, 'k1', value)
    expect(sealed).toMatch(/^kw1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/)
    expect(sealedKeyId(sealed)).toBe(ring.currentKeyId)
    expect(sealed).not.toContain('canary')
    expect(openJson(ring, 'k1', sealed, 'token record')).toEqual(value)
  })

  test('opening under another key fails with authentication-failed [store:aad-binds-key]', () => {
    const sealed = sealJson(ring, 'keyway:tok:c:ua', value)
    const err = thrown(() => openJson(ring, 'keyway:tok:c:ub', sealed, 'token record'))
    expect(err.code).toBe('STORE_UNAVAILABLE')
    expect(err.detail).toMatchObject({ reason: 'authentication-failed' })
    expect(err.message).not.toContain('canary')
  })

  test('rotation: a previous key opens, writes use the current key', () => {
    const old = sealJson(ring, 'k', value)
    expect(openJson(ringBA, 'k', old, 'r')).toEqual(value)
    expect(sealedKeyId(sealJson(ringBA, 'k', value))).toBe(keyIdOf(rawB))
    const err = thrown(() => openJson(createKeyring(opts({ current: B })), 'k', old, 'r'))
    expect(err.detail).toMatchObject({ reason: 'unknown-key-id' })
  })

  test.each([
    ['empty', ''],
    ['wrong version', 'kw0.0123456789abcdef.AAAAAAAAAAAAAAAA.AAAA'],
    ['too few parts', 'kw1.0123456789abcdef.AAAA'],
    ['too many parts', 'kw1.0123456789abcdef.AAAA.AAAA.AAAA'],
    ['bad key id', 'kw1.XYZ.AAAAAAAAAAAAAAAA.AAAA'],
    ['non-base64url body', 'kw1.0123456789abcdef.AAAAAAAAAAAAAAAA.AA+/'],
  ])('%s is malformed', (_n, sealed) => {
    const err = thrown(() => openJson(ring, 'k', sealed, 'token record'))
    expect(err.code).toBe('STORE_UNAVAILABLE')
    expect(err.detail).toMatchObject({ reason: 'malformed' })
  })

  test('sealedKeyId reads the header only', () => {
    expect(sealedKeyId('kw1.0123456789abcdef.x.y')).toBe('0123456789abcdef')
    expect(sealedKeyId('kw0.0123456789abcdef.x.y')).toBeUndefined()
    expect(sealedKeyId('kw1.XYZ.x.y')).toBeUndefined()
  })

  test('every single-character change of the body or IV fails', () => {
    const sealed = sealJson(ring, 'k', value)
    const [v, kid, iv, body] = sealed.split('.') as [string, string, string, string]
    for (const [i, part] of [iv, body].entries()) {
      for (let at = 0; at < part.length - 1; at += 3) {
        const changed = part.slice(0, at) + (part[at] === 'A' ? 'B' : 'A') + part.slice(at + 1)
        const candidate = i === 0 ? [v, kid, changed, body] : [v, kid, iv, changed]
        expect(thrown(() => openJson(ring, 'k', candidate.join('.'), 'r')).code).toBe('STORE_UNAVAILABLE')
      }
    }
  })
})
