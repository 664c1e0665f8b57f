/**
 * RFC 9728 metadata, its URL, and the RFC 6750 challenges Keyway answers 401 and 403 with.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { bearerChallenge, insufficientScopeChallenge, protectedResourceMetadata, resourceMetadataUrl } from '../../../src/identity/resource-metadata.js'

describe('protectedResourceMetadata', () => {
  test('names the resource, the one authorization server and the header bearer method [identity:prm]', () => {
    expect(protectedResourceMetadata({ resource: 'https://kw.example/mcp', issuer: 'https://idp.example', scopes: ['mcp'] })).toEqual({
      resource: 'https://kw.example/mcp',
      authorization_servers: ['https://idp.example'],
      scopes_supported: ['mcp'],
      bearer_methods_supported: ['header'],
      resource_name: 'Keyway',
    })
  })

  test('leaves scopes_supported out when there are none', () => {
    for (const scopes of [undefined, []]) {
      const doc = protectedResourceMetadata({ resource: 'https://kw.example/mcp', issuer: 'https://idp.example', ...(scopes ? { scopes } : {}) })
      expect(doc).not.toHaveProperty('scopes_supported')
    }
  })

  test('does not share the caller array', () => {
    const scopes = ['mcp']
    const doc = protectedResourceMetadata({ resource: 'r', issuer: 'i', scopes })
    scopes.push('admin')
    expect(doc.scopes_supported).toEqual(['mcp'])
  })
})

describe('resourceMetadataUrl', () => {
  test.each([
    ['https://kw.example', 'https://kw.example/.well-known/oauth-protected-resource/mcp'],
    ['https://kw.example/', 'https://kw.example/.well-known/oauth-protected-resource/mcp'],
    ['http://127.0.0.1:8787', 'http://127.0.0.1:8787/.well-known/oauth-protected-resource/mcp'],
    // RFC 9728 §3.1: the well-known segment goes before the resource path.
    ['https://example.com/keyway/', 'https://example.com/.well-known/oauth-protected-resource/keyway/mcp'],
  ])('%s → %s', (publicUrl, expected) => {
    expect(resourceMetadataUrl(publicUrl)).toBe(expected)
  })
})

describe('bearerChallenge', () => {
  const rm = 'https://kw.example/.well-known/oauth-protected-resource/mcp'

  test('no credentials: only resource_metadata (RFC 6750 §3.1: no error code)', () => {
    expect(bearerChallenge({ resourceMetadataUrl: rm })).toBe(`Bearer resource_metadata="${rm}"`)
  })

  test('invalid token with scope, in a fixed order', () => {
    expect(bearerChallenge({ resourceMetadataUrl: rm, error: 'invalid_token', scope: ['mcp', 'mcp:admin'] })).toBe(
      `Bearer resource_metadata="${rm}", error="invalid_token", scope="mcp mcp:admin"`,
    )
    expect(bearerChallenge({ resourceMetadataUrl: rm, error: 'invalid_token', description: 'token expired', scope: 'mcp' })).toBe(
      `Bearer resource_metadata="${rm}", error="invalid_token", error_description="token expired", scope="mcp"`,
    )
  })

  test('an empty scope is left out', () => {
    expect(bearerChallenge({ resourceMetadataUrl: rm, error: 'invalid_token', scope: [] })).toBe(`Bearer resource_metadata="${rm}", error="invalid_token"`)
  })

  test('values cannot break out of their quotes', () => {
    const h = bearerChallenge({ resourceMetadataUrl: rm, error: 'invalid_token', description: 'bad "x"\\\r\nSet-Cookie: a=b é' })
    expect(h).toBe(`Bearer resource_metadata="${rm}", error="invalid_token", error_description="bad xSet-Cookie: a=b "`)
    expect(h).not.toMatch(/[\r\n]/)
  })

  test('insufficientScopeChallenge is the 403 form [identity:scope-challenge]', () => {
    expect(insufficientScopeChallenge({ resourceMetadataUrl: rm, scope: ['mcp'] })).toBe(
      `Bearer resource_metadata="${rm}", error="insufficient_scope", scope="mcp"`,
    )
  })
})
