/**
 * Mapping verified claims to a caller identity: user, groups and scopes in the shapes real IdPs
 * send them.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { isAppError } from '../../../src/errors.js'
import { readTokenClaims } from '../../../src/identity/oidc-claims.js'

const s = { userClaim: 'sub', groupsClaim: 'groups' }

function refused(f: () => unknown): string {
  try {
    f()
  } catch (e) {
    if (isAppError(e, 'IDENTITY_INVALID')) return e.message
    throw e
  }
  throw new Error('expected a refusal')
}

describe('readTokenClaims', () => {
  test('reads user, groups, scope and client_id', () => {
    expect(readTokenClaims({ sub: 'alice', groups: ['eng'], scope: 'mcp  mcp:admin', client_id: 'cli' }, s, 100)).toEqual({
      kind: 'user',
      user: 'alice',
      groups: ['eng'],
      scopes: ['mcp', 'mcp:admin'],
      expiresAt: 100,
      clientId: 'cli',
    })
  })

  test('absent groups and scopes are empty; no client_id means no clientId key', () => {
    const v = readTokenClaims({ sub: 'alice' }, s, 1)
    expect(v).toEqual({ kind: 'user', user: 'alice', groups: [], scopes: [], expiresAt: 1 })
    expect(v).not.toHaveProperty('clientId')
  })

  test.each([
    ['a string is one group, spaces and all [identity:groups-string]', 'not data-engineering', undefined, ['not data-engineering']],
    ['a string with commas is one group without a separator [identity:groups-string]', 'eng,ops', undefined, ['eng,ops']],
    ['with groupsClaimSeparator "," a string is split, trimmed, empties dropped [identity:groups-string]', 'eng, ops,, qa ,', ',', ['eng', 'ops', 'qa']],
    ['with groupsClaimSeparator " " a string is split on spaces', 'eng  ops', ' ', ['eng', 'ops']],
    ['an array stays an array (the separator is not applied)', ['eng,ops', 'qa'], ',', ['eng,ops', 'qa']],
    ['array with non-strings dropped', ['eng', 3, null, 'ops', ''], undefined, ['eng', 'ops']],
  ])('groups claim: %s', (_name, groups, groupsClaimSeparator, expected) => {
    expect(readTokenClaims({ sub: 'a', groups }, { ...s, groupsClaimSeparator }, 1)).toMatchObject({ kind: 'user', groups: expected })
  })

  test('scp as an array (Okta) or a string (Entra); scope wins when both exist', () => {
    expect(readTokenClaims({ sub: 'a', scp: ['mcp', 'x'] }, s, 1).scopes).toEqual(['mcp', 'x'])
    expect(readTokenClaims({ sub: 'a', scp: 'mcp x' }, s, 1).scopes).toEqual(['mcp', 'x'])
    expect(readTokenClaims({ sub: 'a', scope: 'mcp', scp: ['other'] }, s, 1).scopes).toEqual(['mcp'])
  })

  test('claim names are exact keys, so namespaced claims with dots work', () => {
    const v = readTokenClaims(
      { 'https://example.com/email': 'a@example.com', 'https://example.com/groups': ['eng'] },
      {
        userClaim: 'https://example.com/email',
        groupsClaim: 'https://example.com/groups',
      },
      1,
    )
    expect(v).toMatchObject({ kind: 'user', user: 'a@example.com', groups: ['eng'] })
  })

  test('a missing, empty or non-string user claim is refused', () => {
    for (const sub of [undefined, '', 42, ['a']]) {
      expect(refused(() => readTokenClaims({ sub }, s, 1))).toBe('token claim "sub" (userClaim) is missing or not a string')
    }
  })

  test('groups or scope of another type are refused', () => {
    expect(refused(() => readTokenClaims({ sub: 'a', groups: { eng: true } }, s, 1))).toBe('token claim "groups" (groupsClaim) is not a list of strings')
    expect(refused(() => readTokenClaims({ sub: 'a', scope: 7 }, s, 1))).toBe('token claim "scope" or "scp" is not a list of strings')
  })

  test('the result is frozen', () => {
    const v = readTokenClaims({ sub: 'a', groups: ['eng'] }, s, 1)
    expect(v.kind === 'user' && Object.isFrozen(v) && Object.isFrozen(v.groups) && Object.isFrozen(v.scopes)).toBe(true)
  })
})

describe('tokens a client holds for itself (client credentials) [identity:service-principal]', () => {
  // Each row: claims as a provider issues them → the client the token is a service token of, or the user.
  test.each([
    [
      'oidc-provider / Okta / Entra v1: sub is the client_id',
      { sub: 'm2m-app', client_id: 'm2m-app', scope: 'mcp' },
      s,
      { kind: 'service', clientId: 'm2m-app', scopes: ['mcp'] },
    ],
    ['sub is the azp (Keycloak, Entra v2)', { sub: 'svc', azp: 'svc' }, s, { kind: 'service', clientId: 'svc' }],
    ['sub is the cid (Okta)', { sub: '0oa1', cid: '0oa1' }, s, { kind: 'service', clientId: '0oa1' }],
    ['introspection of a client-credentials token: no sub, no user claim', { active: true, client_id: 'm2m-app' }, s, { kind: 'service', clientId: 'm2m-app' }],
    [
      'Auth0 gty: client-credentials, whatever sub says',
      { sub: 'abc@clients', azp: 'abc', gty: 'client-credentials' },
      s,
      { kind: 'service', clientId: 'abc' },
    ],
    ['Entra idtyp: app', { sub: 'x', oid: 'y', azp: 'app-guid', idtyp: 'app' }, s, { kind: 'service', clientId: 'app-guid' }],
    ['Entra v2 app token: sub equals oid', { sub: 'oid-1', oid: 'oid-1', azp: 'app-guid', roles: ['r'] }, s, { kind: 'service', clientId: 'app-guid' }],
    ['Keycloak service account user', { sub: 'uuid-1', azp: 'etl', preferred_username: 'service-account-etl' }, s, { kind: 'service', clientId: 'etl' }],
    ['userClaim email and no email, no sub', { client_id: 'm2m' }, { ...s, userClaim: 'email' }, { kind: 'service', clientId: 'm2m' }],
    [
      'a person: sub differs from every client claim',
      { sub: 'alice', client_id: 'cli', azp: 'cli', oid: 'o-2' },
      s,
      { kind: 'user', user: 'alice', clientId: 'cli' },
    ],
  ] as const)('%s', (_name, claims, settings, expected) => {
    const v = readTokenClaims(claims, settings, 1)
    expect(v).toMatchObject(expected)
    if (expected.kind === 'service') expect(v).not.toHaveProperty('user')
  })

  test('a person whose token lacks the userClaim is refused, not taken for its client', () => {
    expect(refused(() => readTokenClaims({ sub: 'alice-uuid', client_id: 'cli' }, { ...s, userClaim: 'email' }, 1))).toBe(
      'token claim "email" (userClaim) is missing or not a string',
    )
  })

  test('a grant-type marker without any client claim is refused even with a user claim', () => {
    expect(refused(() => readTokenClaims({ sub: 'alice', gty: 'client-credentials' }, s, 1))).toBe('token is issued to a client for itself but names no client')
  })
})

describe('email_verified with userClaim email [identity:email-verified]', () => {
  const byEmail = { ...s, userClaim: 'email' }
  test.each([
    ['false', false, 'refused'],
    ['"false" (a string, as some IdPs send it)', 'false', 'refused'],
    ['true', true, 'accepted'],
    ['absent (many IdPs leave it out of access tokens)', undefined, 'accepted'],
  ])('email_verified %s is %s', (_name, emailVerified, outcome) => {
    const claims = { sub: 'u-1', email: 'alice@example.com', email_verified: emailVerified }
    if (outcome === 'refused') expect(refused(() => readTokenClaims(claims, byEmail, 1))).toBe('token says email_verified is false, and userClaim is email')
    else expect(readTokenClaims(claims, byEmail, 1)).toMatchObject({ kind: 'user', user: 'alice@example.com' })
  })

  test('with another userClaim, email_verified is not consulted', () => {
    expect(readTokenClaims({ sub: 'alice', email_verified: false }, s, 1)).toMatchObject({ user: 'alice' })
  })
})
