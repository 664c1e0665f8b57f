/**
 * Issuer metadata discovery: where it looks, the exact-issuer rule and https-only endpoints.
 * The network edge is a stub `fetch`; nothing is opened.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { AppError } from '../../../src/errors.js'
import { fetchIssuerMetadata, metadataUrls } from '../../../src/identity/oidc-discovery.js'

function stubFetch(routes: Record<string, () => Response>): { fetch: typeof fetch; seen: string[] } {
  const seen: string[] = []
  const f: typeof fetch = async (input) => {
    const url = input instanceof Request ? input.url : String(input)
    seen.push(url)
    const route = routes[url]
    return route ? route() : new Response('not found', { status: 404 })
  }
  return { fetch: f, seen }
}

async function refusal(p: Promise<unknown>): Promise<AppError> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  )
  if (!(e instanceof AppError)) throw new Error(`expected an AppError, got ${String(e)}`)
  expect(e.code).toBe('IDENTITY_INVALID')
  return e
}

describe('metadataUrls', () => {
  test('OIDC appends to the issuer path; RFC 8414 inserts before it', () => {
    expect(metadataUrls('https://idp.example/tenant/').map(String)).toEqual([
      'https://idp.example/tenant/.well-known/openid-configuration',
      'https://idp.example/.well-known/oauth-authorization-server/tenant',
    ])
    expect(metadataUrls('https://idp.example').map(String)).toEqual([
      'https://idp.example/.well-known/openid-configuration',
      'https://idp.example/.well-known/oauth-authorization-server',
    ])
  })
})

describe('fetchIssuerMetadata', () => {
  const issuer = 'https://idp.example'
  const doc =
    (over: Record<string, unknown> = {}) =>
    () =>
      Response.json({ issuer, jwks_uri: `${issuer}/jwks`, introspection_endpoint: `${issuer}/introspect`, ...over })

  test('uses OpenID Connect discovery first', async () => {
    const s = stubFetch({ [`${issuer}/.well-known/openid-configuration`]: doc() })
    const m = await fetchIssuerMetadata(issuer, s.fetch, false)
    expect(m.jwksUri?.href).toBe(`${issuer}/jwks`)
    expect(m.introspectionEndpoint?.href).toBe(`${issuer}/introspect`)
    expect(s.seen).toHaveLength(1)
  })

  test('falls back to RFC 8414 when there is no OpenID configuration', async () => {
    const s = stubFetch({ [`${issuer}/.well-known/oauth-authorization-server`]: doc({ introspection_endpoint: undefined }) })
    const m = await fetchIssuerMetadata(issuer, s.fetch, false)
    expect(m.jwksUri?.href).toBe(`${issuer}/jwks`)
    expect(m.introspectionEndpoint).toBeUndefined()
    expect(s.seen).toHaveLength(2)
  })

  test('a document for another issuer is refused without trying further (RFC 8414 §3.3)', async () => {
    const s = stubFetch({
      [`${issuer}/.well-known/openid-configuration`]: doc({ issuer: 'https://evil.example' }),
      [`${issuer}/.well-known/oauth-authorization-server`]: doc(),
    })
    const e = await refusal(fetchIssuerMetadata(issuer, s.fetch, false))
    expect(e.message).toBe('issuer metadata names issuer "https://evil.example", expected "https://idp.example"')
    expect(s.seen).toHaveLength(1)
  })

  test('http endpoints are refused unless insecure mode is on [identity:https-only]', async () => {
    const s = stubFetch({ [`${issuer}/.well-known/openid-configuration`]: doc({ jwks_uri: 'http://idp.example/jwks' }) })
    expect((await refusal(fetchIssuerMetadata(issuer, s.fetch, false))).message).toBe('issuer metadata jwks_uri must be an https url')
    const http = 'http://idp.example'
    const insecure = stubFetch({
      [`${http}/.well-known/openid-configuration`]: doc({ issuer: http, jwks_uri: `${http}/jwks`, introspection_endpoint: `${http}/introspect` }),
    })
    await expect(fetchIssuerMetadata(http, insecure.fetch, true)).resolves.toMatchObject({ issuer: http })
  })

  // Scheme, host and port are the origin: a downgrade to http:// is off-origin even in insecure mode.
  test.each([
    ['jwks_uri on another host', { jwks_uri: 'https://keys.evil.example/jwks' }, 'jwks_uri on https://keys.evil.example'],
    ['jwks_uri on another port', { jwks_uri: 'https://idp.example:8443/jwks' }, 'jwks_uri on https://idp.example:8443'],
    ['jwks_uri downgraded to http', { jwks_uri: 'http://idp.example/jwks' }, 'jwks_uri on http://idp.example'],
    ['introspection_endpoint on another host', { introspection_endpoint: 'https://evil.example/introspect' }, 'introspection_endpoint on https://evil.example'],
  ])("%s is refused: endpoints come from the issuer's origin only [egress:issuer-origin]", async (_what, extra, named) => {
    const s = stubFetch({ [`${issuer}/.well-known/openid-configuration`]: doc(extra) })
    const e = await refusal(fetchIssuerMetadata(issuer, s.fetch, true))
    expect(e.code).toBe('IDENTITY_INVALID')
    expect(e.message).toBe(
      `identity.oidc: the provider metadata puts ${named}, not on the issuer's origin https://idp.example; nothing was sent there, and Keyway uses metadata endpoints on the issuer's origin only`,
    )
    expect(s.seen).toHaveLength(1)
  })

  test('redirects are not followed and non-json is refused', async () => {
    const s = stubFetch({
      [`${issuer}/.well-known/openid-configuration`]: () => new Response(null, { status: 302, headers: { location: 'https://evil.example/' } }),
      [`${issuer}/.well-known/oauth-authorization-server`]: () => new Response('<html>', { status: 200 }),
    })
    const e = await refusal(fetchIssuerMetadata(issuer, s.fetch, false))
    expect(e.message).toBe('issuer metadata at /.well-known/oauth-authorization-server is not a json object')
    expect(s.seen).toHaveLength(2)
  })
})
