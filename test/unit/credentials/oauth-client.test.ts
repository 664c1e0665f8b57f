/**
 * The pure parts of the OAuth client: which exchange the metadata implies, what each exchange
 * puts on the wire, and how every failure maps to an error that names the setting to change and
 * never carries what Keyway sent.
 */
import * as oidc from 'openid-client'
import { describe, expect, test } from 'vitest'
import { chooseExchange, clientAuthFor, isTransient, mapOAuthError, type Operation } from '../../../src/credentials/oauth-client.js'
import { AppError } from '../../../src/errors.js'
import type { CredentialExchange } from '../../../src/config/schema.js'

describe('chooseExchange [oauth:exchange-from-metadata]', () => {
  test.each([
    [['client_secret_basic', 'client_secret_post'], 'header_only', 'metadata'],
    [['client_secret_post', 'client_secret_basic'], 'header_only', 'metadata'],
    [['client_secret_post', 'private_key_jwt'], 'body_only', 'metadata'],
    [['private_key_jwt'], 'header_and_body', 'default'],
    [[], 'header_and_body', 'default'],
    [undefined, 'header_and_body', 'default'],
  ])('%j → %s', (methods, exchange, source) => {
    expect(chooseExchange(methods)).toEqual({ exchange, source })
  })
})

function apply(exchange: CredentialExchange, clientId: string, secret: string): { body: URLSearchParams; headers: Headers } {
  const body = new URLSearchParams({ grant_type: 'client_credentials' })
  const headers = new Headers()
  clientAuthFor(exchange, secret)({ issuer: 'https://as.example' }, { client_id: clientId }, body, headers)
  return { body, headers }
}

describe('clientAuthFor [oauth:credential-exchange]', () => {
  const basic = (id: string, s: string): string => `Basic ${Buffer.from(`${id}:${s}`).toString('base64')}`

  test('header_only: RFC 6749 §2.3.1 Basic with form-encoded id and secret, nothing in the body', () => {
    const { body, headers } = apply('header_only', 'my client', 's:e/c+r%t')
    expect(headers.get('authorization')).toBe(basic('my+client', 's%3Ae%2Fc%2Br%25t'))
    expect(body.has('client_secret')).toBe(false)
  })

  test('body_only: id and secret in the form body, no header', () => {
    const { body, headers } = apply('body_only', 'cid', 'sec')
    expect(headers.get('authorization')).toBeNull()
    expect(body.get('client_id')).toBe('cid')
    expect(body.get('client_secret')).toBe('sec')
  })

  test('header_and_body: both at once', () => {
    const { body, headers } = apply('header_and_body', 'cid', 'sec')
    expect(headers.get('authorization')).toBe(basic('cid', 'sec'))
    expect(body.get('client_id')).toBe('cid')
    expect(body.get('client_secret')).toBe('sec')
  })
})

function bodyError(error: string, status: number, description?: string): oidc.ResponseBodyError {
  const response = new Response(null, { status })
  return new oidc.ResponseBodyError('server responded with an error in the response body', {
    cause: { error, ...(description === undefined ? {} : { error_description: description }) },
    response,
  })
}

/** openid-client's typings omit the `code` option its constructor reads. */
function clientError(message: string, code: string): oidc.ClientError {
  return Object.assign(new oidc.ClientError(message), { code })
}

const ctx = (operation: Operation, exchange: CredentialExchange = 'header_only', sent: string[] = []) =>
  ({ connection: 'crm', operation, exchange, timeoutMs: 10_000, sent: ['client-secret-value', ...sent] }) as const

describe('mapOAuthError [oauth:errors-name-the-setting]', () => {
  test('invalid_grant on refresh is REAUTHORIZATION_REQUIRED (fatal)', () => {
    const e = mapOAuthError(bodyError('invalid_grant', 400, 'grant request is invalid'), ctx('refresh_token', 'header_only', ['rt-secret-value']))
    expect(e.code).toBe('REAUTHORIZATION_REQUIRED')
    expect(e.detail).toMatchObject({ reason: 'invalid_grant', transient: false, connection: 'crm' })
    expect(isTransient(e)).toBe(false)
  })

  test('invalid_client names the exchange, clientId/clientSecret and the other exchange', () => {
    const e = mapOAuthError(bodyError('invalid_client', 401, 'client authentication failed'), ctx('client_credentials', 'header_only'))
    expect(e.code).toBe('CREDENTIAL_UNAVAILABLE')
    expect(e.message).toBe(
      'connection "crm": the provider refused client authentication header_only (invalid_client: client authentication failed): check auth.clientId and auth.clientSecret, or set auth.credentialExchange to body_only if the client is registered for that method',
    )
  })

  test('header_and_body refused as invalid_request says to pick one method (RFC 6749 §2.3)', () => {
    const e = mapOAuthError(
      bodyError('invalid_request', 400, 'client authentication must only be provided using one mechanism'),
      ctx('client_credentials', 'header_and_body'),
    )
    expect(e.code).toBe('CREDENTIAL_UNAVAILABLE')
    expect(e.message).toContain('the provider refused client authentication header_and_body')
    expect(e.message).toContain('set auth.credentialExchange to header_only or body_only (RFC 6749 §2.3 allows one method)')
  })

  test('invalid_scope and invalid_target name their settings', () => {
    expect(mapOAuthError(bodyError('invalid_scope', 400), ctx('client_credentials')).message).toContain('check auth.scopes')
    expect(mapOAuthError(bodyError('invalid_target', 400), ctx('client_credentials')).message).toContain('auth.tokenParams.resource')
  })

  test('a 5xx OAuth error is transient', () => {
    const e = mapOAuthError(bodyError('temporarily_unavailable', 503), ctx('refresh_token'))
    expect(e.code).toBe('CREDENTIAL_UNAVAILABLE')
    expect(isTransient(e)).toBe(true)
  })

  test('anything Keyway sent is scrubbed from an echoed description [secret:never-in-messages]', () => {
    const e = mapOAuthError(
      bodyError('invalid_grant', 400, 'refresh token rt-secret-value for client with secret client-secret-value is revoked'),
      ctx('refresh_token', 'header_only', ['rt-secret-value']),
    )
    expect(e.message).not.toContain('rt-secret-value')
    expect(e.message).not.toContain('client-secret-value')
    expect(e.message).toContain('[REDACTED]')
  })

  test('timeouts and network failures are transient CREDENTIAL_UNAVAILABLE', () => {
    const timeout = mapOAuthError(clientError('operation timed out', 'OAUTH_TIMEOUT'), ctx('client_credentials'))
    expect(timeout).toMatchObject({
      code: 'CREDENTIAL_UNAVAILABLE',
      message: 'connection "crm": the provider did not answer the client_credentials token request within 10000 ms',
    })
    expect(isTransient(timeout)).toBe(true)
    const net = mapOAuthError(new TypeError('fetch failed'), ctx('refresh_token'))
    expect(net.code).toBe('CREDENTIAL_UNAVAILABLE')
    expect(isTransient(net)).toBe(true)
  })

  test('egress errors wrapped by openid-client are found: blocked stays EGRESS_BLOCKED, timeouts are transient', () => {
    const blocked = new oidc.ClientError('something went wrong', { cause: new AppError('EGRESS_BLOCKED', 'host "evil.example" is not in egress.allowedHosts') })
    expect(mapOAuthError(blocked, ctx('discovery'))).toMatchObject({ code: 'EGRESS_BLOCKED' })
    const slow = new oidc.ClientError('something went wrong', { cause: new AppError('UPSTREAM_TIMEOUT', 'deadline') })
    const mapped = mapOAuthError(slow, ctx('client_credentials'))
    expect(mapped.code).toBe('CREDENTIAL_UNAVAILABLE')
    expect(isTransient(mapped)).toBe(true)
  })

  test('plain http refused names the dev flag', () => {
    const e = mapOAuthError(clientError('only requests to HTTPS are allowed', 'OAUTH_HTTP_REQUEST_FORBIDDEN'), ctx('discovery'))
    expect(e.message).toContain('egress.dangerouslyAllowPrivateNetworks')
  })

  test('an invalid authorization code is FLOW_INVALID, not a dead grant', () => {
    expect(mapOAuthError(bodyError('invalid_grant', 400), ctx('authorization_code')).code).toBe('FLOW_INVALID')
  })
})
