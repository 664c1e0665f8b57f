/**
 * Attack suite, config load: what an admin's file (or someone who can edit it) could point
 * Keyway at before any call runs. Targets with a scheme other than http(s), plain http or
 * loopback without the development flag, userinfo in a host, look-alike host names, and secrets
 * written inline instead of by reference. Each row proves the load fails with the problem named
 * by file, line and field, and that a planted secret is not echoed in the report.
 * @module
 */
import { describe, expect, test } from 'vitest'
import { loadConfigText } from '../../src/config/load.js'

const FILE = '/cfg/connections.yaml'
const INLINE_SECRET = 'ghp_CANARY_inline_secret_4b7e1d'
const ENV = { T: 'token-from-the-environment-0123' }

const withConnection = (host: string, auth = 'auth: { type: bearer_token, token: { env: T } }', top = ''): string => `version: 1
${top}
connections:
  api:
    host: ${host}
    owner: { user: admin@example.com }
    ${auth}
`

const m2m = (tokenEndpoint: string, secret = '{ env: T }'): string =>
  `auth: { type: oauth_m2m, tokenEndpoint: "${tokenEndpoint}", clientId: c, clientSecret: ${secret} }`

describe('config load refuses unsafe targets and inline secrets', () => {
  const refused: readonly [string, string, string][] = [
    ['a file: host', withConnection('file:///etc/passwd'), ':5 connections.api.host: must be an http(s) URL'],
    ['a gopher: host', withConnection('gopher://api.example.com'), ':5 connections.api.host: must be an http(s) URL'],
    ['a data: host', withConnection('"data:text/plain,hi"'), ':5 connections.api.host: must be an http(s) URL'],
    ['an ftp: host', withConnection('ftp://api.example.com'), ':5 connections.api.host: must be an http(s) URL'],
    ['a ws: host', withConnection('ws://api.example.com'), ':5 connections.api.host: must be an http(s) URL'],
    [
      'a file: token endpoint',
      withConnection('https://api.example.com', m2m('file:///etc/token')),
      ':7 connections.api.auth.tokenEndpoint: must be an http(s) URL',
    ],
    [
      'plain http without the development flag',
      withConnection('http://api.example.com'),
      ':5 connections.api.host: host uses http://; only https:// is allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    ],
    ['a loopback host spelled with a trailing dot', withConnection('https://localhost.'), ':5 connections.api.host: host points at a loopback address'],
    ['userinfo in the host', withConnection('https://user:pw@api.example.com'), ':5 connections.api.host: host must be an origin only'],
    [
      'an inline static token',
      withConnection('https://api.example.com', `auth: { type: bearer_token, token: "${INLINE_SECRET}" }`),
      ':7 connections.api.auth.token: must be a secret reference { env: NAME } or { file: PATH }; secrets are never written inline',
    ],
    [
      'an inline client secret',
      withConnection('https://api.example.com', m2m('https://auth.example.com/token', `"${INLINE_SECRET}"`)),
      ':7 connections.api.auth.clientSecret: must be a secret reference { env: NAME } or { file: PATH }; secrets are never written inline',
    ],
  ]
  for (const [what, text, problem] of refused) {
    test(`${what}: the load fails naming file, line and field, and echoes no secret`, async () => {
      const r = await loadConfigText(text, FILE, { env: ENV })
      expect(r.ok).toBe(false)
      if (r.ok) return
      expect(
        r.problems.some((p) => p.startsWith(`${FILE}${problem}`)),
        r.problems.join('\n'),
      ).toBe(true)
      expect(r.problems.join('\n')).not.toContain(INLINE_SECRET)
    })
  }

  test('a look-alike (IDN) host is compared as its ASCII form: ⓔⓥⓘⓛ.com is evil.com to the allowlist', async () => {
    const r = await loadConfigText(withConnection('https://ⓔⓥⓘⓛ.com', undefined, 'egress: { allowedHosts: [api.example.com] }'), FILE, { env: ENV })
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems).toEqual([`${FILE}:5 connections.api.host: host "evil.com" is not in egress.allowedHosts`])
  })

  test('control: the same connection with an https host and secret references loads', async () => {
    const r = await loadConfigText(
      withConnection('https://api.example.com', m2m('https://auth.example.com/token'), 'egress: { allowedHosts: [api.example.com, auth.example.com] }'),
      FILE,
      { env: ENV },
    )
    expect(r.ok, r.ok ? '' : r.problems.join('\n')).toBe(true)
  })
})
