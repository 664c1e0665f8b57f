/**
 * `keyway check-provider` against real peers on 127.0.0.1: a real `oidc-provider` (all six
 * prerequisites met), and small loopback servers whose metadata lacks one prerequisite each.
 * The command runs in-process through the CLI I/O seam, and once as the built bin.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { run } from '../../tools/check-provider.js'
import type { CliIo } from '../../tools/cli.js'
import type { PrerequisiteId } from '../../src/admin/check-provider.js'
import { writeTempConfig } from '../helpers/config.js'
import { runKeyway } from '../helpers/spawn-keyway.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'

const PUBLIC_URL = 'https://keyway.example.com'
const REDIRECT_URI = `${PUBLIC_URL}/login/oauth/http.html`

interface Json {
  target: string
  metadataUrl: string | null
  attempts: string[]
  notes: string[]
  ok: boolean
  prerequisites: { id: PrerequisiteId; status: string; detail: string; fix?: string }[]
  advisories: { id: string; status: string; detail: string }[]
}

async function checkCmd(argv: string[]): Promise<{ code: number; out: string[]; err: string[]; json: () => Json }> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env: {}, cwd: await mkdtemp(path.join(tmpdir(), 'keyway-cwd-')) }
  const code = await run(argv, io)
  return { code, out, err, json: () => JSON.parse(out.join('\n')) as Json }
}

const statuses = (j: Json) => Object.fromEntries(j.prerequisites.map((p) => [p.id, p.status]))

/** A loopback server that serves `metadata` (with its own URL filled in) at the chosen well-known path. */
async function metadataServer(
  build: (base: string) => Record<string, unknown>,
  at: 'openid' | 'rfc8414' = 'openid',
): Promise<{ url: string; hits: string[]; close: () => Promise<void> }> {
  const hits: string[] = []
  let base = ''
  const server: Server = createServer((req, res) => {
    hits.push(req.url ?? '')
    const wanted = at === 'openid' ? '/.well-known/openid-configuration' : '/.well-known/oauth-authorization-server'
    if (req.url === wanted) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(build(base)))
      return
    }
    res.writeHead(404).end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url: base,
    hits,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** Everything a per-user connection needs, on loopback http. */
function good(base: string): Record<string, unknown> {
  return {
    issuer: base,
    authorization_endpoint: `${base}/authorize`,
    token_endpoint: `${base}/token`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    scopes_supported: ['openid', 'offline_access'],
    code_challenge_methods_supported: ['S256'],
  }
}

let as: AuthorizationServer
let configFile: string
beforeAll(async () => {
  as = await startAuthorizationServer()
  ;({ file: configFile } = await writeTempConfig(`version: 1
server: { publicUrl: ${PUBLIC_URL} }
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
  drive:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      issuer: ${as.issuer}
      clientId: keyway
      clientSecret: { env: NEVER_SET_SECRET }
      credentialExchange: header_and_body
  tokens_only:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: NEVER_SET_TOKEN } }
`))
})
afterAll(async () => {
  await as?.close()
})

describe('keyway check-provider against a real oidc-provider', () => {
  test('an issuer URL: all six prerequisites are met (the redirect URI is unknown and printed), exit 0', async () => {
    const r = await checkCmd([as.issuer, '--config', configFile, '--json'])
    expect(r.err).toEqual([])
    expect(r.code).toBe(0)
    const j = r.json()
    expect(j.metadataUrl).toBe(`${as.issuer}/.well-known/openid-configuration`)
    expect(statuses(j)).toEqual({
      authorization_code: 'pass',
      refresh_token: 'pass',
      redirect_uri: 'unknown',
      client_auth: 'pass',
      token_endpoint: 'pass',
      https: 'pass',
    })
    expect(j.prerequisites.find((p) => p.id === 'redirect_uri')?.fix).toBe(`register exactly ${REDIRECT_URI} for the client at the provider`)
    expect(j.prerequisites.find((p) => p.id === 'https')?.detail).toMatch(/loopback http:\/\/, allowed for development only/)
    expect(Object.fromEntries(j.advisories.map((a) => [a.id, a.status]))).toEqual({ offline_access: 'pass', pkce_s256: 'pass', issuer: 'pass' })
    // The connection with this issuer is recognised: its header_and_body is judged, with the warning.
    expect(j.notes).toEqual(['connection drive uses this issuer; its credentialExchange (header_and_body) is checked'])
    expect(j.prerequisites.find((p) => p.id === 'client_auth')?.detail).toMatch(/header_and_body sends both, which strict servers refuse/)
  })

  test('a connection name: uses its issuer and credentialExchange; the text report lines up', async () => {
    const r = await checkCmd(['drive', '--config', configFile])
    expect(r.code).toBe(0)
    expect(r.out[0]).toBe(`Provider check for connection drive (oauth_u2m_per_user, issuer ${as.issuer})`)
    expect(r.out).toContain(`metadata: ${as.issuer}/.well-known/openid-configuration`)
    const rows = r.out.filter((l) => /^(PASS|FAIL|UNKNOWN|WARN) /.test(l))
    expect(rows).toHaveLength(9)
    const detailColumn = (rows[0] ?? '').indexOf('grant_types_supported')
    expect(detailColumn).toBeGreaterThan(0)
    for (const row of rows) expect(row[detailColumn - 1]).toBe(' ')
    expect(r.out).toContain(`${' '.repeat(detailColumn)}fix: register exactly ${REDIRECT_URI} for the client at the provider`)
    expect(r.out.at(-1)).toBe('5 of 6 prerequisites pass, 0 fail, 1 unknown: ok')
  })

  test('without a config the redirect URI cannot be printed, and the report says so', async () => {
    const r = await checkCmd([as.issuer, '--json'])
    expect(r.code).toBe(0)
    const j = r.json()
    expect(j.notes[0]).toMatch(/^no config found at .*connections\.yaml; pass --config to derive the redirect URI$/)
    expect(j.prerequisites.find((p) => p.id === 'redirect_uri')?.fix).toMatch(/keyway redirect-uri/)
  })

  test('the built bin exits 0 here and prints the report', async () => {
    const r = await runKeyway(['check-provider', as.issuer, '--config', configFile])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`fix: register exactly ${REDIRECT_URI}`)
  })
})

describe('keyway check-provider against metadata lacking one prerequisite each', () => {
  const cases: [PrerequisiteId, (base: string) => Record<string, unknown>, RegExp][] = [
    ['authorization_code', (b) => ({ ...good(b), grant_types_supported: ['client_credentials', 'refresh_token'] }), /without authorization_code/],
    ['refresh_token', (b) => ({ ...good(b), grant_types_supported: ['authorization_code'] }), /without refresh_token/],
    [
      'client_auth',
      (b) => ({ ...good(b), token_endpoint_auth_methods_supported: ['private_key_jwt', 'tls_client_auth'] }),
      /needs client_secret_basic or client_secret_post/,
    ],
    ['token_endpoint', (b) => Object.fromEntries(Object.entries(good(b)).filter(([k]) => k !== 'token_endpoint')), /no token_endpoint/],
    ['https', (b) => ({ ...good(b), token_endpoint: 'http://as.example.com/token' }), /not https: token endpoint http:\/\/as\.example\.com\/token/],
  ]
  test.each(cases)('%s fails, exit 1, with a fix', async (id, build, detail) => {
    const srv = await metadataServer(build)
    try {
      const r = await checkCmd([srv.url, '--config', configFile, '--json'])
      expect(r.code).toBe(1)
      const j = r.json()
      expect(j.ok).toBe(false)
      const failed = j.prerequisites.filter((p) => p.status === 'fail')
      // A public http:// endpoint is also off the loopback issuer's origin, which Keyway refuses too.
      expect(failed.map((p) => p.id)).toEqual(id === 'https' ? ['token_endpoint', 'https'] : [id])
      const mine = failed.find((p) => p.id === id)
      expect(mine?.detail).toMatch(detail)
      expect(mine?.fix).toBeTruthy()
    } finally {
      await srv.close()
    }
  })

  test('redirect_uri: metadata can never tell, so it is unknown with the exact URI, and does not fail', async () => {
    const srv = await metadataServer(good)
    try {
      const r = await checkCmd([srv.url, '--config', configFile])
      expect(r.code).toBe(0)
      expect(r.out.find((l) => l.startsWith('UNKNOWN'))).toMatch(/3\. custom redirect URI +metadata cannot tell/)
      expect(r.out.some((l) => l.trim() === `fix: register exactly ${REDIRECT_URI} for the client at the provider`)).toBe(true)
    } finally {
      await srv.close()
    }
  })

  test('a credentialExchange the provider does not offer fails (connection with body_only, provider basic only)', async () => {
    const srv = await metadataServer((b) => ({ ...good(b), token_endpoint_auth_methods_supported: ['client_secret_basic'] }))
    const { file } = await writeTempConfig(`version: 1
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
  crm:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      authorizationEndpoint: ${srv.url}/authorize
      tokenEndpoint: ${srv.url}/token
      clientId: keyway
      clientSecret: { env: NEVER_SET }
      credentialExchange: body_only
`)
    try {
      const r = await checkCmd(['crm', '--config', file, '--json'])
      expect(r.code).toBe(1)
      const j = r.json()
      // No issuer: metadata is looked up at the endpoints' origin, and said so.
      expect(j.metadataUrl).toBe(`${srv.url}/.well-known/openid-configuration`)
      expect(j.notes).toEqual(["metadata was looked up at the origin of the connection's endpoints; set auth.issuer if it describes another server"])
      expect(j.prerequisites.find((p) => p.id === 'client_auth')).toMatchObject({ status: 'fail', fix: 'set auth.credentialExchange: header_only' })
    } finally {
      await srv.close()
    }
  })

  test('RFC 8414 metadata is found when OpenID discovery answers 404', async () => {
    const srv = await metadataServer(good, 'rfc8414')
    try {
      const r = await checkCmd([srv.url, '--config', configFile, '--json'])
      expect(r.code).toBe(0)
      const j = r.json()
      expect(j.metadataUrl).toBe(`${srv.url}/.well-known/oauth-authorization-server`)
      expect(j.attempts).toEqual([`${srv.url}/.well-known/openid-configuration: answered 404`])
      expect(srv.hits).toEqual(['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'])
    } finally {
      await srv.close()
    }
  })

  test('no metadata anywhere: reported, token endpoint fails, exit 1', async () => {
    const srv = await metadataServer(good, 'rfc8414')
    await srv.close()
    const r = await checkCmd([srv.url, '--config', configFile, '--json'])
    expect(r.code).toBe(1)
    const j = r.json()
    expect(j.metadataUrl).toBeNull()
    expect(j.attempts).toHaveLength(2)
    expect(j.attempts[0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration: unreachable/)
  })
})

describe('keyway check-provider refuses', () => {
  test.each([
    [
      ['http://as.example.com'],
      'keyway: refusing to fetch metadata over http:// from as.example.com: only https://, or http:// on a loopback host, is allowed',
    ],
    [['ftp://as.example.com'], 'keyway: issuer URL must be https:// (or http:// on loopback), not ftp:'],
    [['not a name!'], 'keyway: "not a name!" is neither an issuer URL nor a connection name'],
    [[], 'usage: keyway check-provider ISSUER_URL_OR_CONNECTION [--config F] [--json]'],
  ])('%j', async (args, message) => {
    const r = await checkCmd([...args, '--config', configFile])
    expect(r).toMatchObject({ code: 2, out: [], err: [message] })
  })

  test('an unknown connection, and a bearer_token connection', async () => {
    expect((await checkCmd(['nope', '--config', configFile])).err).toEqual([`keyway: connection "nope" is not in ${configFile}`])
    expect((await checkCmd(['tokens_only', '--config', configFile])).err).toEqual([
      'keyway: connection "tokens_only" uses bearer_token; check-provider applies to OAuth connections',
    ])
  })
})
