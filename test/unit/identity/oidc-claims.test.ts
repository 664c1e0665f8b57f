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
      user: 'alice',
      groups: ['eng'],
      scopes: ['mcp', 'mcp:admin'],
      expiresAt: 100,
      clientId: 'cli',
    })
  })

  test('absent groups and scopes are empty; no client_id means no clientId key', () => {
    const v = readTokenClaims({ sub: 'alice' }, s, 1)
    expect(v).toEqual({ user: 'alice', groups: [], scopes: [], expiresAt: 1 })
    expect(v).not.toHaveProperty('clientId')
  })

  test.each([
    ['space separated', 'eng ops', ['eng', 'ops']],
    ['comma separated', 'eng,ops, qa', ['eng', 'ops', 'qa']],
    ['array with non-strings dropped', ['eng', 3, null, 'ops', ''], ['eng', 'ops']],
  ])('groups claim %s', (_name, groups, expected) => {
    expect(readTokenClaims({ sub: 'a', groups }, s, 1).groups).toEqual(expected)
  })

  test('scp as an array (Okta) or a string (Entra); scope wins when both exist', () => {
    expect(readTokenClaims({ sub: 'a', scp: ['mcp', 'x'] }, s, 1).scopes).toEqual(['mcp', 'x'])
    expect(readTokenClaims({ sub: 'a', scp: 'mcp x' }, s, 1).scopes).toEqual(['mcp', 'x'])
    expect(readTokenClaims({ sub: 'a', scope: 'mcp', scp: ['other'] }, s, 1).scopes).toEqual(['mcp'])
  })

  test('claim names are exact keys, so namespaced claims with dots work', () => {
    const v = readTokenClaims({ 'https://example.com/email': 'a@example.com', 'https://example.com/groups': ['eng'] }, {
      userClaim: 'https://example.com/email',
      groupsClaim: 'https://example.com/groups',
    }, 1)
    expect(v).toMatchObject({ user: 'a@example.com', groups: ['eng'] })
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
    expect(Object.isFrozen(v) && Object.isFrozen(v.groups) && Object.isFrozen(v.scopes)).toBe(true)
  })
})
