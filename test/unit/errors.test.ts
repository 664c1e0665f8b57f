import { readFile } from 'node:fs/promises'
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import { AppError, ERROR_CODE_MEANINGS, HTTP_STATUS, TOOL_ERROR_CODES, externalReason, hasReason, type AppErrorCode, type ReasonOf } from '../../src/errors.js'
import { errorAnswer } from '../../src/http/error-answer.js'
import { createMemoryLogger } from '../../src/log.js'
import { CallStopped } from '../../src/shutdown.js'

describe('error codes', () => {
  test('the README tables list exactly the codes of the union, with the same meanings and HTTP statuses', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Error codes'), readme.indexOf('## Security model'))
    const rows = [...section.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \| (.+) \|$/gm)]
    expect(Object.fromEntries(rows.map((m) => [m[1], m[3]]))).toEqual(ERROR_CODE_MEANINGS)
    expect(Object.fromEntries(rows.map((m) => [m[1], Number(m[2])]))).toEqual(HTTP_STATUS)
  })

  test('tool codes are exposed to callers, internal ones are not', () => {
    for (const code of TOOL_ERROR_CODES) expect(new AppError(code, 'x').expose).toBe(true)
    expect(new AppError('INTERNAL', 'x').expose).toBe(false)
    expect(new AppError('CONFIG_INVALID', 'x').expose).toBe(false)
  })
})

describe('typed reasons', () => {
  test('a reason is checked against its code when an error is made and when it is tested', () => {
    const lock = new AppError('STORE_UNAVAILABLE', 'lock was not acquired', { detail: { reason: 'lock-timeout' } })
    expect(hasReason(lock, 'STORE_UNAVAILABLE', 'lock-timeout')).toBe(true)
    expect(hasReason(lock, 'STORE_UNAVAILABLE', 'lock-lost')).toBe(false)
    // The same reason under another code is another error.
    expect(hasReason(new AppError('FLOW_INVALID', 'x', { detail: { reason: 'invalid_grant' } }), 'REAUTHORIZATION_REQUIRED', 'invalid_grant')).toBe(false)
    expect(hasReason(new Error('lock-timeout'), 'STORE_UNAVAILABLE', 'lock-timeout')).toBe(false)
    // A provider's own error code is carried as received, but only through externalReason.
    const revoked = new AppError('CREDENTIAL_UNAVAILABLE', 'x', { detail: { reason: externalReason('server_error'), transient: true } })
    expect(revoked.detail?.reason).toBe('server_error')
    expect(revoked.detail?.['transient']).toBe(true)

    // Each of these is a compile error (tsc runs over test/ in `npm run build`): a mistyped
    // reason, a reason of another code, a reason on a code that has none, a bare string for a
    // provider's code.
    // @ts-expect-error 'lock-timeut' is not a STORE_UNAVAILABLE reason
    void new AppError('STORE_UNAVAILABLE', 'x', { detail: { reason: 'lock-timeut' } })
    // @ts-expect-error 'no-token' is a CONSENT_REQUIRED reason, not a REAUTHORIZATION_REQUIRED one
    expect(hasReason(lock, 'REAUTHORIZATION_REQUIRED', 'no-token')).toBe(false)
    // @ts-expect-error PERMISSION_DENIED carries no reason
    void new AppError('PERMISSION_DENIED', 'x', { detail: { reason: 'no-grant' } })
    // @ts-expect-error a provider's code must go through externalReason
    void new AppError('CREDENTIAL_UNAVAILABLE', 'x', { detail: { reason: 'server_error' as string } })
    const consent: ReasonOf<'CONSENT_REQUIRED'>[] = ['no-token', 'invalid_grant', 'no-refresh-token', 'reauthorization-required']
    expect(consent).toHaveLength(4)
  })
})

describe('HTTP statuses', () => {
  const log = createMemoryLogger()
  const app = new Hono()
  app.onError(errorAnswer(log))
  app.get('/fail/:code', (c) => {
    throw new AppError(c.req.param('code') as AppErrorCode, `failed with ${c.req.param('code')}`)
  })
  app.get('/stopped/:how', (c) => {
    throw new CallStopped(c.req.param('how') as 'draining' | 'shutdown' | 'cancelled')
  })
  app.get('/unexpected', () => {
    throw new Error('secret-ish internals')
  })

  const expected: Readonly<Record<number, readonly AppErrorCode[]>> = {
    400: ['INVALID_REQUEST', 'FLOW_INVALID'],
    403: ['PERMISSION_DENIED', 'CONSENT_REQUIRED', 'NOT_AUTHORIZED', 'REAUTHORIZATION_REQUIRED', 'EGRESS_BLOCKED'],
    429: ['UPSTREAM_BUSY'],
    502: ['UPSTREAM_UNAVAILABLE', 'CREDENTIAL_UNAVAILABLE'],
    503: ['STORE_UNAVAILABLE'],
    504: ['UPSTREAM_TIMEOUT'],
  }
  for (const [status, codes] of Object.entries(expected))
    test(`${status}: ${codes.join(', ')}`, async () => {
      for (const code of codes) {
        const res = await app.request(`/fail/${code}`)
        expect(res.status, code).toBe(Number(status))
        expect(await res.json()).toEqual({ error: code, message: `failed with ${code}` })
      }
    })

  test('401: IDENTITY_INVALID, which /mcp answers itself with its WWW-Authenticate challenge; elsewhere its message stays in the log', async () => {
    expect(new AppError('IDENTITY_INVALID', 'x').httpStatus).toBe(401)
    expect((await app.request('/fail/IDENTITY_INVALID')).status).toBe(500)
  })

  test('503 for a call stopped by a shutdown (retry elsewhere); a cancelled call stays 502', async () => {
    for (const how of ['draining', 'shutdown']) expect((await app.request(`/stopped/${how}`)).status, how).toBe(503)
    expect((await app.request('/stopped/cancelled')).status).toBe(502)
  })

  test('500 with a bare body for codes not written for the caller and for anything unexpected; both logged', async () => {
    for (const path of ['/fail/CONFIG_INVALID', '/fail/INTERNAL', '/unexpected']) {
      const res = await app.request(path)
      expect(res.status, path).toBe(500)
      expect(await res.json()).toEqual({ error: 'internal_error' })
    }
    // The three above and IDENTITY_INVALID's.
    expect(log.lines.filter((l) => l.includes('http request failed'))).toHaveLength(4)
  })
})
