import { describe, expect, test } from 'vitest'
import { AppError } from '../../../src/errors.js'
import { confineToIssuerOrigin, isOnIssuerOrigin } from '../../../src/egress/same-origin.js'

const ISSUER = 'https://as.example.com/tenant'

describe('isOnIssuerOrigin [egress:issuer-origin]', () => {
  test.each([
    ['https://as.example.com/token', true],
    ['https://as.example.com:443/token', true],
    ['https://AS.example.com/other/path', true],
    ['https://as.example.com:8443/token', false],
    ['http://as.example.com/token', false],
    ['https://oauth2.example.com/token', false],
    ['https://as.example.com.evil.com/token', false],
    ['not a url', false],
    ['data:text/plain,x', false],
  ])('%s → %s', (endpoint, expected) => {
    expect(isOnIssuerOrigin(endpoint, ISSUER)).toBe(expected)
  })
})

describe('confineToIssuerOrigin [egress:issuer-origin]', () => {
  const base = {
    issuer: ISSUER,
    token_endpoint: 'https://as.example.com/token',
    authorization_endpoint: 'https://as.example.com/auth',
    scopes_supported: ['a'],
  }
  const opts = {
    used: new Set(['token_endpoint', 'authorization_endpoint'] as const),
    code: 'EGRESS_BLOCKED' as const,
    who: 'connection "crm"',
    settingFor: (f: string) => (f === 'token_endpoint' ? 'auth.tokenEndpoint' : undefined),
  }

  test('metadata on the issuer origin comes back as it is', () => {
    expect(confineToIssuerOrigin(base, ISSUER, opts)).toBe(base)
  })

  test('a used endpoint elsewhere throws, naming the field, both origins and the setting', () => {
    let e: unknown
    try {
      confineToIssuerOrigin({ ...base, token_endpoint: 'https://as.example.com:9999/token?x=secret' }, ISSUER, opts)
    } catch (err) {
      e = err
    }
    expect(e).toBeInstanceOf(AppError)
    expect((e as AppError).code).toBe('EGRESS_BLOCKED')
    expect((e as AppError).message).toBe(
      'connection "crm": the provider metadata puts token_endpoint on https://as.example.com:9999, not on the issuer\'s origin https://as.example.com; nothing was sent there. If the provider really serves it there, set auth.tokenEndpoint explicitly',
    )
    expect((e as AppError).message).not.toContain('secret')
    expect((e as AppError).detail).toEqual({ reason: 'endpoint-off-issuer-origin', field: 'token_endpoint', transient: false })
  })

  test('a non-string endpoint is off every origin', () => {
    expect(() => confineToIssuerOrigin({ ...base, authorization_endpoint: 42 }, ISSUER, opts)).toThrow('puts authorization_endpoint on an invalid url')
  })

  test('an explicit or unused endpoint elsewhere is dropped, not thrown; other fields stay', () => {
    const out = confineToIssuerOrigin(
      {
        ...base,
        token_endpoint: 'https://oauth2.example.com/token',
        jwks_uri: 'https://keys.example.com/jwks',
        userinfo_endpoint: 'https://as.example.com/me',
      },
      ISSUER,
      { ...opts, explicit: new Set(['token_endpoint'] as const) },
    )
    expect(out).toEqual({
      issuer: ISSUER,
      authorization_endpoint: 'https://as.example.com/auth',
      scopes_supported: ['a'],
      userinfo_endpoint: 'https://as.example.com/me',
    })
  })
})
