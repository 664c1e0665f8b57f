/**
 * The six per-user prerequisites and the advisories, judged from metadata objects: each pass,
 * fail and unknown path, RFC 8414 defaults for absent fields, and the credentialExchange ↔
 * token_endpoint_auth_methods_supported table.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { checkProvider, type PrerequisiteId, type ProviderCheckInput } from '../../../src/admin/check-provider.js'

const ISSUER = 'https://as.example.com'
const REDIRECT = 'https://keyway.example.com/login/oauth/http.html'

/** Metadata that meets everything. */
const GOOD = {
  issuer: ISSUER,
  authorization_endpoint: `${ISSUER}/authorize`,
  token_endpoint: `${ISSUER}/token`,
  response_types_supported: ['code'],
  grant_types_supported: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
  scopes_supported: ['openid', 'offline_access'],
  code_challenge_methods_supported: ['S256'],
}

function check(metadata: Record<string, unknown> | undefined, extra: Partial<ProviderCheckInput> = {}) {
  return checkProvider({ metadata, issuer: ISSUER, redirectUri: REDIRECT, ...extra })
}
const status = (r: ReturnType<typeof check>, id: PrerequisiteId) => r.prerequisites.find((p) => p.id === id)
const without = (key: keyof typeof GOOD) => Object.fromEntries(Object.entries(GOOD).filter(([k]) => k !== key))

describe('checkProvider', () => {
  test('complete metadata: five pass, the redirect URI is unknown with the exact URI to register, ok', () => {
    const r = check(GOOD)
    expect(r.prerequisites.map((p) => [p.id, p.status])).toEqual([
      ['authorization_code', 'pass'],
      ['refresh_token', 'pass'],
      ['redirect_uri', 'unknown'],
      ['client_auth', 'pass'],
      ['token_endpoint', 'pass'],
      ['https', 'pass'],
    ])
    expect(status(r, 'redirect_uri')?.fix).toBe(`register exactly ${REDIRECT} for the client at the provider`)
    expect(status(r, 'client_auth')?.detail).toMatch(/Keyway will use header_only \(client_secret_basic\)$/)
    expect(r.advisories.map((a) => [a.id, a.status])).toEqual([
      ['offline_access', 'pass'],
      ['pkce_s256', 'pass'],
      ['issuer', 'pass'],
    ])
    expect(r.ok).toBe(true)
  })

  describe('1. authorization code grant', () => {
    test('grant_types_supported without authorization_code fails with a fix', () => {
      const r = check({ ...GOOD, grant_types_supported: ['client_credentials', 'refresh_token'] })
      expect(status(r, 'authorization_code')).toMatchObject({
        status: 'fail',
        detail: 'grant_types_supported is [client_credentials, refresh_token], without authorization_code',
      })
      expect(status(r, 'authorization_code')?.fix).toMatch(/enable the authorization_code grant/)
      expect(r.ok).toBe(false)
    })
    test('absent grant_types_supported passes with the RFC 8414 default named', () => {
      expect(status(check(without('grant_types_supported')), 'authorization_code')).toMatchObject({
        status: 'pass',
        detail: 'grant_types_supported is not published; the RFC 8414 default is [authorization_code, implicit]',
      })
    })
    test('response_types_supported without code fails', () => {
      expect(status(check({ ...GOOD, response_types_supported: ['token', 'id_token'] }), 'authorization_code')?.status).toBe('fail')
      expect(status(check({ ...GOOD, response_types_supported: ['code id_token'] }), 'authorization_code')?.status).toBe('pass')
    })
    test('no authorization endpoint anywhere fails; an explicit one is enough', () => {
      expect(status(check(without('authorization_endpoint')), 'authorization_code')?.status).toBe('fail')
      expect(status(check(without('authorization_endpoint'), { authorizationEndpoint: `${ISSUER}/oauth/authorize` }), 'authorization_code')?.status).toBe(
        'pass',
      )
    })
  })

  describe('2. refresh tokens', () => {
    test('listed grant types without refresh_token fail', () => {
      expect(status(check({ ...GOOD, grant_types_supported: ['authorization_code'] }), 'refresh_token')).toMatchObject({ status: 'fail' })
    })
    test('absent grant_types_supported is unknown, not a failure', () => {
      const r = check(without('grant_types_supported'))
      expect(status(r, 'refresh_token')).toMatchObject({ status: 'unknown', detail: 'grant_types_supported is not published' })
      expect(r.ok).toBe(true)
    })
  })

  describe('3. custom redirect URI', () => {
    test('without a config the fix says how to get the URI', () => {
      const r = checkProvider({ metadata: GOOD, issuer: ISSUER })
      expect(status(r, 'redirect_uri')).toMatchObject({
        status: 'unknown',
        fix: 'register <server.publicUrl>/login/oauth/http.html exactly; `keyway redirect-uri --config F` prints it',
      })
    })
  })

  describe('4. confidential client authentication (credentialExchange)', () => {
    const BASIC = ['client_secret_basic']
    const POST = ['client_secret_post']
    const BOTH = ['client_secret_basic', 'client_secret_post']
    const NEITHER = ['private_key_jwt', 'none']
    test.each([
      // [credentialExchange, published methods (undefined = absent), expected status]
      [undefined, BASIC, 'pass'],
      [undefined, POST, 'pass'],
      [undefined, NEITHER, 'fail'],
      [undefined, undefined, 'unknown'],
      ['header_only', BASIC, 'pass'],
      ['header_only', POST, 'fail'],
      ['header_only', undefined, 'pass'],
      ['body_only', POST, 'pass'],
      ['body_only', BASIC, 'fail'],
      ['body_only', undefined, 'unknown'],
      ['header_and_body', BOTH, 'pass'],
      ['header_and_body', BASIC, 'fail'],
      ['header_and_body', undefined, 'unknown'],
    ] as const)('%s with %j: %s', (exchange, methods, expected) => {
      const metadata = methods ? { ...GOOD, token_endpoint_auth_methods_supported: methods } : without('token_endpoint_auth_methods_supported')
      const r = check(metadata, { credentialExchange: exchange })
      expect(status(r, 'client_auth')?.status).toBe(expected)
      if (expected !== 'pass') expect(status(r, 'client_auth')?.fix).toBeTruthy()
    })
    test('body_only against a basic-only provider points to header_only', () => {
      expect(
        status(check({ ...GOOD, token_endpoint_auth_methods_supported: ['client_secret_basic'] }, { credentialExchange: 'body_only' }), 'client_auth')?.fix,
      ).toBe('set auth.credentialExchange: header_only')
    })
    test('header_and_body passes where both are listed, with the RFC 6749 §2.3.1 warning', () => {
      const p = status(check(GOOD, { credentialExchange: 'header_and_body' }), 'client_auth')
      expect(p?.detail).toMatch(/strict servers refuse credentials in both the header and the body \(RFC 6749 §2\.3\.1\)/)
      expect(p?.fix).toBe('prefer auth.credentialExchange: header_only')
    })
    test('absent methods and no credentialExchange: Keyway would send both, so set header_only', () => {
      expect(status(check(without('token_endpoint_auth_methods_supported')), 'client_auth')?.fix).toBe(
        'set auth.credentialExchange: header_only (client_secret_basic)',
      )
    })
  })

  describe('5. standard token endpoint', () => {
    test('missing fails; relative fails; an explicit endpoint wins over the metadata', () => {
      expect(status(check(without('token_endpoint')), 'token_endpoint')).toMatchObject({ status: 'fail', detail: 'no token_endpoint in the metadata' })
      expect(status(check({ ...GOOD, token_endpoint: '/token' }), 'token_endpoint')?.status).toBe('fail')
      expect(status(check(without('token_endpoint'), { tokenEndpoint: 'https://other.example.com/oauth/token' }), 'token_endpoint')).toMatchObject({
        status: 'pass',
        detail: 'auth.tokenEndpoint is https://other.example.com/oauth/token',
      })
    })
  })

  describe('endpoints off the issuer origin (Google-style) [egress:issuer-origin]', () => {
    const google = { ...GOOD, token_endpoint: 'https://oauth2.example.com/token', revocation_endpoint: 'https://oauth2.example.com/revoke' }

    test('a metadata token or revocation endpoint on another host fails with the explicit settings to add', () => {
      expect(status(check(google), 'token_endpoint')).toEqual({
        id: 'token_endpoint',
        title: 'standard token endpoint',
        status: 'fail',
        detail:
          "token_endpoint https://oauth2.example.com/token and revocation_endpoint https://oauth2.example.com/revoke are not on the issuer's origin https://as.example.com; Keyway uses metadata endpoints on the issuer's origin only",
        fix: 'set auth.tokenEndpoint: https://oauth2.example.com/token and auth.revocationEndpoint: https://oauth2.example.com/revoke explicitly on the connection',
      })
      expect(check(google).ok).toBe(false)
    })

    test('another port of the issuer host is another origin too; the authorization endpoint is checked the same way', () => {
      expect(status(check({ ...GOOD, token_endpoint: 'https://as.example.com:8443/token' }), 'token_endpoint')?.fix).toBe(
        'set auth.tokenEndpoint: https://as.example.com:8443/token explicitly on the connection',
      )
      expect(status(check({ ...GOOD, authorization_endpoint: 'https://login.example.com/authorize' }), 'authorization_code')).toMatchObject({
        status: 'fail',
        fix: 'set auth.authorizationEndpoint: https://login.example.com/authorize explicitly on the connection',
      })
    })

    test('explicit endpoints pass, and without an issuer to compare with nothing is judged', () => {
      expect(
        status(check(google, { tokenEndpoint: 'https://oauth2.example.com/token', revocationEndpoint: 'https://oauth2.example.com/revoke' }), 'token_endpoint')
          ?.status,
      ).toBe('pass')
      expect(status(check(google, { issuer: undefined }), 'token_endpoint')?.status).toBe('pass')
    })
  })

  describe('6. HTTPS endpoints', () => {
    test('http on a public host fails; on loopback it passes with a note', () => {
      expect(status(check({ ...GOOD, token_endpoint: 'http://as.example.com/token' }), 'https')).toMatchObject({
        status: 'fail',
        detail: 'not https: token endpoint http://as.example.com/token',
      })
      expect(
        status(check({ ...GOOD, authorization_endpoint: 'http://127.0.0.1:4000/auth', token_endpoint: 'http://localhost:4000/token' }), 'https'),
      ).toMatchObject({
        status: 'pass',
        detail: 'authorization endpoint and token endpoint on loopback http://, allowed for development only',
      })
    })
  })

  test('no metadata at all: unknown where only metadata could tell, failures where endpoints are missing', () => {
    const r = check(undefined)
    expect(r.prerequisites.map((p) => [p.id, p.status])).toEqual([
      ['authorization_code', 'unknown'],
      ['refresh_token', 'unknown'],
      ['redirect_uri', 'unknown'],
      ['client_auth', 'unknown'],
      ['token_endpoint', 'fail'],
      ['https', 'unknown'],
    ])
    expect(r.ok).toBe(false)
    const explicit = check(undefined, { authorizationEndpoint: `${ISSUER}/a`, tokenEndpoint: `${ISSUER}/t` })
    expect(explicit.ok).toBe(true)
  })

  describe('advisories', () => {
    test('offline_access, PKCE S256 and the issuer warn but never fail', () => {
      const r = check({ ...GOOD, scopes_supported: ['openid'], code_challenge_methods_supported: ['plain'], issuer: 'https://evil.example.com' })
      expect(r.advisories.map((a) => [a.id, a.status])).toEqual([
        ['offline_access', 'warn'],
        ['pkce_s256', 'warn'],
        ['issuer', 'warn'],
      ])
      expect(r.advisories[2]?.fix).toBe('set auth.issuer: https://evil.example.com exactly (RFC 8414 §3.3; discovery refuses a mismatch)')
      expect(r.ok).toBe(true)
    })
    test('absent fields are unknown', () => {
      const r = check(Object.fromEntries(Object.entries(GOOD).filter(([k]) => k !== 'scopes_supported' && k !== 'code_challenge_methods_supported')))
      expect(r.advisories.slice(0, 2).map((a) => a.status)).toEqual(['unknown', 'unknown'])
    })
  })

  test('fields of the wrong shape count as not published', () => {
    const r = check({ ...GOOD, grant_types_supported: 'authorization_code refresh_token', token_endpoint: 42 })
    expect(status(r, 'refresh_token')?.status).toBe('unknown')
    expect(status(r, 'token_endpoint')?.status).toBe('fail')
  })
})
