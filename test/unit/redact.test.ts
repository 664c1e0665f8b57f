import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { REDACTED, formsOf, redactBytes, redactJsonValue, redactRemembered, redactText, rememberSecret, secretForms } from '../../src/redact.js'
import { findCanaries } from '../helpers/canary.js'

const SECRET = 'p@ss:w0rd/with+odd=chars'

describe('secretForms', () => {
  test('short values are not secrets (they would match ordinary text)', () => {
    expect(secretForms('abc').text).toEqual([])
  })

  test('raw, percent-, form- and JSON-encoded forms, longest first', () => {
    const { text } = secretForms(SECRET)
    expect(text).toEqual(
      expect.arrayContaining([SECRET, encodeURIComponent(SECRET), new URLSearchParams({ v: SECRET }).toString().slice(2), SECRET.replaceAll('/', '\\/')]),
    )
    expect([...text].sort((a, b) => b.length - a.length)).toEqual(text)
  })
})

describe('redactBytes', () => {
  test('every occurrence is replaced and counted; a clean body is returned as it is', () => {
    const body = Buffer.from(`a ${SECRET} b ${SECRET}`)
    const r = redactBytes(body, formsOf([SECRET]))
    expect(r.value.toString()).toBe(`a ${REDACTED} b ${REDACTED}`)
    expect(r.count).toBe(2)
    const clean = Buffer.from('nothing here')
    expect(redactBytes(clean, formsOf([SECRET])).value).toBe(clean)
  })

  test('Basic credentials of client_id:secret are caught at any alignment', () => {
    for (const id of ['a', 'ab', 'abc', 'client-1']) {
      const basic = Buffer.from(`${id}:${SECRET}`).toString('base64')
      const r = redactBytes(Buffer.from(`Authorization: Basic ${basic}`), formsOf([SECRET]))
      expect(findCanaries(r.value.toString(), { SECRET })).toEqual([])
      expect(r.count).toBeGreaterThan(0)
    }
  })

  test('a truncated body ending in the start of a secret loses that tail', () => {
    const r = redactBytes(Buffer.from(`xx ${SECRET.slice(0, 10)}`), formsOf([SECRET]), true)
    expect(r.value.toString()).toBe(`xx ${REDACTED}`)
    expect(redactBytes(Buffer.from(`xx ${SECRET.slice(0, 10)}`), formsOf([SECRET]), false).count).toBe(0)
  })

  test('property: any secret embedded in any text, raw, encoded or inside a base64 blob, does not survive', () => {
    const secret = fc.string({ minLength: 8, maxLength: 40, unit: fc.constantFrom(...'abcXYZ019-_.~+/=@:%& ') })
    // Surrounding text from another alphabet, so only the secret itself can spell the secret.
    const text = fc.string({ maxLength: 30, unit: fc.constantFrom(...'QRSTqrst <>{}"\n') })
    const place = fc.constantFrom<(s: string, before: string, after: string) => string>(
      (s, b, a) => `${b}${s}${a}`,
      (s, b, a) => `${b}${encodeURIComponent(s)}${a}`,
      (s, b, a) => `${b}${new URLSearchParams({ v: s }).toString().slice(2)}${a}`,
      (s, b, a) => `${b}${JSON.stringify(s).slice(1, -1).replaceAll('/', '\\/')}${a}`,
      (s, b, a) => `${b}${Buffer.from(s).toString('base64url')}${a}`,
      (s, b, a) => Buffer.from(`${b}${s}${a}`).toString('base64'),
      (s, b, a) => Buffer.from(`${b}:${s}${a}`).toString('base64url'),
    )
    fc.assert(
      fc.property(secret, text, text, place, (s, before, after, build) => {
        const out = redactBytes(Buffer.from(build(s, before, after)), formsOf([s])).value.toString()
        expect(findCanaries(out, { s })).toEqual([])
      }),
      { numRuns: 500 },
    )
  })
})

describe('text and JSON values', () => {
  test('redactText counts and replaces', () => {
    expect(redactText(`x ${encodeURIComponent(SECRET)} y`, formsOf([SECRET]))).toEqual({ value: `x ${REDACTED} y`, count: 1 })
  })

  test('redactJsonValue walks keys and values', () => {
    expect(redactJsonValue({ [SECRET]: [1, `a${SECRET}`], ok: true }, formsOf([SECRET]))).toEqual({
      value: { [REDACTED]: [1, `a${REDACTED}`], ok: true },
      count: 2,
    })
  })

  test('remembered secrets are redacted from any text, e.g. a log line', () => {
    const token = 'remembered-token-0f9e8d'
    rememberSecret(token)
    expect(redactRemembered(JSON.stringify({ msg: `failed with ${token}` }))).not.toContain(token)
  })
})
