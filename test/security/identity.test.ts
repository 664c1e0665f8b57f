/**
 * Attack suite, identity: who a bearer token makes the caller. A token a client holds for itself
 * (OAuth client credentials) is no person: refused unless `identity.oidc.servicePrincipals` maps
 * its client, and then a service principal whose grants never mix with those of a user of the
 * same name. JWTs issued in the future or living too long, `email_verified: false` with
 * `userClaim: email`, and a `groups` string that would split into a granted group are refused or
 * read as what they say. Unknown opaque strings cost their sender the per-address introspection
 * budget, never the identity provider. Real peers only: oidc-provider on 127.0.0.1 (JWT and opaque
 * access tokens, introspection), listening Keyways, the official MCP clients, a recording
 * loopback upstream; requests from other loopback source addresses (127.0.0.2, …) stand for other
 * clients. Every refusal row proves the 401 and that no tool ran and nothing reached the upstream.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { request } from 'node:http'
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import type { ToolCallEvent } from '../../src/audit/events.js'
import { createMemoryLogger } from '../../src/log.js'
import { startHttp, type HttpKeyway } from '../../src/start.js'
import { loadTestConfig } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { fromPrivateJwk, goodClaims, signJwt, type SigningKey } from '../helpers/jwt-forge.js'
import { connectClient, textOf } from '../helpers/mcp-clients.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const ALICE = 'alice@example.com'
/** A person and a service principal share this name; neither may use the other's grants. */
const BOT = 'etl-bot'
const MAPPED_CLIENT = 'm2m-app'
const UNMAPPED_CLIENT = 'stray-app'
const RS_CLIENT = { client_id: 'keyway-rs', client_secret: 'keyway-rs-secret-0123456789', redirect_uris: [], response_types: [], grant_types: [] }
const m2mClient = (id: string) => ({
  client_id: id,
  client_secret: `${id}-secret-0123456789`,
  redirect_uris: [],
  response_types: [],
  grant_types: ['client_credentials'],
  token_endpoint_auth_method: 'client_secret_basic',
})
const ENV = { UPSTREAM_TOKEN: 'sk-identity-upstream-0123456789', RS_SECRET: RS_CLIENT.client_secret, DRIVE_SECRET: 'drive-secret-0123456789' }
/** Keyway's default introspection budget per client address and minute. */
const BUDGET = 10

const audit = createMemoryAuditLog()
const log = createMemoryLogger()
let upstream: Upstream
let as: AuthorizationServer
let asKey: SigningKey
let jwtKeyway: HttpKeyway
let opaqueKeyway: HttpKeyway
let mcpUrl: string
let opaqueMcpUrl: string

function keywayConfig(port: number, oidc: string, extraConnections = '', extraGrants = ''): string {
  const conn = (name: string, basePath: string): string => `
  ${name}:
    host: ${upstream.origin}
    basePath: ${basePath}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: UPSTREAM_TOKEN } }`
  return `
version: 1
server: { publicUrl: http://127.0.0.1:${port}, host: 127.0.0.1, port: ${port} }
identity:
  oidc:
    issuer: ${as.issuer}
${oidc}
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:${conn('for_sp', '/sp')}${conn('for_user', '/user')}${conn('for_bots', '/bots')}${conn('for_everyone', '/everyone')}${conn('for_data', '/data')}${extraConnections}
grants:
  - { privilege: USE CONNECTION, on: for_sp, to: { servicePrincipal: ${BOT} } }
  - { privilege: USE CONNECTION, on: for_user, to: { user: ${BOT} } }
  - { privilege: USE CONNECTION, on: for_bots, to: { group: bots } }
  - { privilege: USE CONNECTION, on: for_everyone, to: { group: account users } }
  - { privilege: USE CONNECTION, on: for_data, to: { group: data-engineering } }${extraGrants}
`
}

beforeAll(async () => {
  upstream = await startUpstream()
  const [port, opaquePort] = [await freePort(), await freePort()]
  mcpUrl = `http://127.0.0.1:${port}/mcp`
  opaqueMcpUrl = `http://127.0.0.1:${opaquePort}/mcp`
  as = await startAuthorizationServer({
    clients: [RS_CLIENT, m2mClient(MAPPED_CLIENT), m2mClient(UNMAPPED_CLIENT)],
    resources: { [mcpUrl]: { scope: 'mcp' }, [opaqueMcpUrl]: { scope: 'mcp', accessTokenFormat: 'opaque' } },
  })
  const rsa = as.signingKeys.find((k) => k.kty === 'RSA')
  if (!rsa) throw new Error('test AS has no RSA key')
  asKey = fromPrivateJwk(rsa, 'RS256')

  const perUser = `
  drive:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      authorizationEndpoint: "${as.issuer}/auth"
      tokenEndpoint: "${as.issuer}/token"
      clientId: drive
      clientSecret: { env: DRIVE_SECRET }`
  const jwtOidc = `    userClaim: email
    maxTokenLifetimeSeconds: 3600
    servicePrincipals:
      ${MAPPED_CLIENT}: { name: ${BOT}, groups: [bots] }`
  const jwt = await loadTestConfig(keywayConfig(port, jwtOidc, perUser, '\n  - { privilege: USE CONNECTION, on: drive, to: { group: bots } }'), ENV)
  jwtKeyway = await startHttp(jwt.snapshot, { audit, log })
  const opaqueOidc = `    introspection: { clientId: ${RS_CLIENT.client_id}, clientSecret: { env: RS_SECRET } }
    servicePrincipals:
      ${MAPPED_CLIENT}: { name: ${BOT}, groups: [bots] }`
  opaqueKeyway = await startHttp((await loadTestConfig(keywayConfig(opaquePort, opaqueOidc), ENV)).snapshot, { audit, log })
})

afterAll(async () => {
  await jwtKeyway?.close()
  await opaqueKeyway?.close()
  await as?.close()
  await upstream?.close()
})

beforeEach(() => {
  upstream.requests.length = 0
  audit.events.length = 0
})

const nowS = (): number => Math.floor(Date.now() / 1000)
const toolCalls = (): ToolCallEvent[] => audit.events.filter((e): e is ToolCallEvent => e.type === 'tool.call')
/** A person's token as oidc-provider would issue it for Keyway, forged with its own key to vary one claim. */
const personClaims = (extra: Record<string, unknown> = {}) => goodClaims(as.issuer, mcpUrl, nowS(), { sub: 'u-alice', email: ALICE, ...extra })

/** One raw tools/call of `for_everyone` (a tool any person may use), sent from `localAddress`. */
function postFrom(url: string, token: string, localAddress = '127.0.0.1'): Promise<{ status: number; challenge: string | undefined; body: string }> {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'for_everyone', arguments: { path: '/raw' } } })
  return new Promise((resolve, reject) => {
    const u = new URL(url)
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        localAddress,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
        },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, challenge: res.headers['www-authenticate'], body: text }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function listAndCall(url: string, token: string, tool?: string): Promise<{ tools: string[]; text?: string; isError?: boolean }> {
  const client = await connectClient('modern', url, { bearer: token })
  try {
    const tools = await client.listToolNames()
    if (!tool) return { tools }
    const r = await client.callTool(tool, { path: '/x' })
    return { tools, text: textOf(r), ...(r.isError === undefined ? {} : { isError: r.isError }) }
  } finally {
    await client.close()
  }
}

describe('refused tokens: 401 invalid_token, no tool runs, nothing reaches the upstream', () => {
  const rows: [string, () => Promise<string>, string][] = [
    [
      'a real client-credentials token of a client no servicePrincipals entry maps [identity:service-principal]',
      async () => (await as.clientCredentialsToken(UNMAPPED_CLIENT, { resource: mcpUrl })).access_token,
      'service-token-without-principal',
    ],
    [
      'a token marked gty: client-credentials (Auth0) for an unmapped client, whatever its email says [identity:service-principal]',
      () => signJwt(asKey, personClaims({ sub: 'abc@clients', azp: UNMAPPED_CLIENT, gty: 'client-credentials' })),
      'service-token-without-principal',
    ],
    [
      'a token marked idtyp: app (Entra) for an unmapped client [identity:service-principal]',
      () => signJwt(asKey, personClaims({ azp: UNMAPPED_CLIENT, idtyp: 'app' })),
      'service-token-without-principal',
    ],
    [
      'a token whose sub is its own client_id, for an unmapped client [identity:service-principal]',
      () => signJwt(asKey, personClaims({ sub: UNMAPPED_CLIENT, client_id: UNMAPPED_CLIENT })),
      'service-token-without-principal',
    ],
    [
      'a token issued 10 minutes in the future [identity:iat]',
      () => signJwt(asKey, personClaims({ iat: nowS() + 600, exp: nowS() + 900 })),
      'token \\"iat\\" is in the future',
    ],
    [
      'a token living 2 h where maxTokenLifetimeSeconds is 3600 [identity:iat]',
      () => signJwt(asKey, personClaims({ exp: nowS() + 7200 })),
      'token lifetime is longer than maxTokenLifetimeSeconds',
    ],
    [
      'email_verified: false with userClaim email [identity:email-verified]',
      () => signJwt(asKey, personClaims({ email_verified: false })),
      'token says email_verified is false, and userClaim is email',
    ],
  ]

  test.each(rows)('%s', async (_title, make, logged) => {
    const token = await make()
    const [lines, sent] = [log.lines.length, upstream.requests.length]
    const res = await postFrom(mcpUrl, token)
    expect(res.status).toBe(401)
    expect(res.challenge).toMatch(/^Bearer resource_metadata="[^"]+", error="invalid_token"$/)
    expect(toolCalls()).toEqual([])
    expect(upstream.requests.length).toBe(sent)
    const refusal = log.lines.slice(lines).join('')
    expect(refusal).toContain(logged)
    expect(refusal).not.toContain(token)
  })

  test('control: the same request with an acceptable person token runs the tool', async () => {
    const res = await postFrom(mcpUrl, await signJwt(asKey, personClaims({ email_verified: true })))
    expect(res.status).toBe(200)
    expect(toolCalls()).toEqual([expect.objectContaining({ user: ALICE, connection: 'for_everyone', decision: 'allow' })])
    expect(upstream.requests).toHaveLength(1)
  })
})

describe('who an accepted token makes the caller: tools/list and the audit line', () => {
  // Tools are listed in name order; `drive` is per-user, which a service principal never uses.
  const rows: [string, () => Promise<string>, string[], Partial<ToolCallEvent>][] = [
    [
      'a client-credentials token of the mapped client is service principal etl-bot, with only its grants and groups [identity:service-principal]',
      async () => (await as.clientCredentialsToken(MAPPED_CLIENT, { resource: mcpUrl })).access_token,
      ['for_bots', 'for_sp'],
      { servicePrincipal: BOT },
    ],
    [
      'a person named etl-bot gets the user grant and account users, never the service principal grant [identity:service-principal]',
      () => as.userToken(BOT, { resource: mcpUrl }),
      ['for_everyone', 'for_user'],
      { user: BOT },
    ],
    [
      'a groups claim "not data-engineering" (a string) is that one group, not data-engineering [identity:groups-string]',
      () => signJwt(asKey, personClaims({ groups: 'not data-engineering' })),
      ['for_everyone'],
      { user: ALICE },
    ],
    [
      'control: a groups array with data-engineering grants it',
      () => signJwt(asKey, personClaims({ groups: ['data-engineering'] })),
      ['for_data', 'for_everyone'],
      { user: ALICE },
    ],
    [
      'email_verified: true or absent with userClaim email is accepted [identity:email-verified]',
      () => signJwt(asKey, personClaims({ email_verified: true })),
      ['for_everyone'],
      { user: ALICE },
    ],
  ]

  test.each(rows)('%s', async (_title, make, tools, who) => {
    const token = await make()
    const r = await listAndCall(mcpUrl, token, tools[0])
    expect(r.tools).toEqual(tools)
    expect(r.isError).toBeFalsy()
    const [line] = toolCalls()
    expect(line).toMatchObject({ ...who, via: 'oidc', connection: tools[0], decision: 'allow' })
    // A service principal's line names it as such and never as a user, and the reverse.
    expect(line).not.toHaveProperty(who.user === undefined ? 'user' : 'servicePrincipal')
  })

  test('service principal etl-bot: its grant runs, the user grant of the same name is PERMISSION_DENIED naming it, nothing sent [identity:service-principal]', async () => {
    const token = (await as.clientCredentialsToken(MAPPED_CLIENT, { resource: mcpUrl })).access_token
    const ok = await listAndCall(mcpUrl, token, 'for_sp')
    expect(ok.isError).toBeFalsy()
    expect(upstream.requests.map((q) => q.path)).toEqual(['/sp/x'])
    expect(upstream.last()?.headers.authorization).toBe(`Bearer ${ENV.UPSTREAM_TOKEN}`)
    expect(toolCalls()[0]).toMatchObject({ servicePrincipal: BOT, rule: `grant to service principal ${BOT}` })

    const denied = await listAndCall(mcpUrl, token, 'for_user')
    expect(denied.text).toBe(
      `PERMISSION_DENIED: service principal ${BOT} does not hold USE CONNECTION on connection "for_user"; its owner (user admin@example.com) can grant it: ` +
        `keyway sql 'GRANT USE CONNECTION ON CONNECTION for_user TO SERVICE PRINCIPAL \`${BOT}\`'`,
    )
    const everyone = await listAndCall(mcpUrl, token, 'for_everyone')
    expect(everyone.text).toMatch(/^PERMISSION_DENIED: service principal etl-bot does not hold /)
    expect(upstream.requests).toHaveLength(1)
    expect(toolCalls().map((e) => [e.connection, e.decision, e.servicePrincipal, e.user])).toEqual([
      ['for_sp', 'allow', BOT, undefined],
      ['for_user', 'deny', BOT, undefined],
      ['for_everyone', 'deny', BOT, undefined],
    ])
  })

  test('a service principal in a group granted a per-user connection is denied before any consent flow [identity:service-principal]', async () => {
    const token = (await as.clientCredentialsToken(MAPPED_CLIENT, { resource: mcpUrl })).access_token
    const r = await listAndCall(mcpUrl, token, 'drive')
    expect(r.text).toBe(
      `PERMISSION_DENIED: service principal ${BOT} cannot use connection "drive": it is oauth_u2m_per_user, which calls with each person's own account, and a service principal has none`,
    )
    expect(audit.events.filter((e) => e.type.startsWith('consent.'))).toEqual([])
    expect(upstream.requests).toHaveLength(0)
  })

  test('the person etl-bot cannot use the service principal grant [identity:service-principal]', async () => {
    const r = await listAndCall(mcpUrl, await as.userToken(BOT, { resource: mcpUrl }), 'for_sp')
    expect(r.text).toMatch(/^PERMISSION_DENIED: user etl-bot does not hold USE CONNECTION on connection "for_sp"/)
    expect(upstream.requests).toHaveLength(0)
  })
})

describe('opaque tokens: introspection cache and per-address budget [identity:introspection-budget]', () => {
  const introspections = (): number => as.requestCount('/token/introspection')

  test('50 random opaque tokens from one address cause at most the budget of introspection calls; other addresses and cached tokens keep working', async () => {
    // An active token verified before the flood, from the address that will flood.
    const early = await as.userToken(ALICE, { resource: opaqueMcpUrl })
    expect((await postFrom(opaqueMcpUrl, early, '127.0.0.2')).status).toBe(200)

    const before = introspections()
    const junk = Array.from({ length: 50 }, () => randomBytes(24).toString('base64url'))
    const statuses: number[] = []
    for (const t of junk) statuses.push((await postFrom(opaqueMcpUrl, t, '127.0.0.2')).status)
    expect(statuses.every((s) => s === 401)).toBe(true)
    const spent = introspections() - before
    expect(spent).toBeGreaterThan(0)
    expect(spent).toBeLessThanOrEqual(BUDGET)

    // A junk string the issuer already called inactive is refused from memory, from any address.
    const answered = introspections()
    expect((await postFrom(opaqueMcpUrl, junk[0] ?? '', '127.0.0.3')).status).toBe(401)
    expect(introspections()).toBe(answered)

    // Over budget, even a live token new to Keyway is refused without calling the issuer ...
    const fresh = await as.userToken(ALICE, { resource: opaqueMcpUrl })
    expect((await postFrom(opaqueMcpUrl, fresh, '127.0.0.2')).status).toBe(401)
    expect(introspections()).toBe(answered)
    // ... while the cached one still works there, and another address has its own budget.
    expect((await postFrom(opaqueMcpUrl, early, '127.0.0.2')).status).toBe(200)
    expect((await postFrom(opaqueMcpUrl, fresh, '127.0.0.1')).status).toBe(200)
    expect(introspections()).toBe(answered + 1)
    expect(toolCalls().map((e) => e.user)).toEqual([ALICE, ALICE, ALICE])
    expect(upstream.requests).toHaveLength(3)
  })

  test('a client-credentials opaque token becomes the mapped service principal; unmapped, it is refused [identity:service-principal]', async () => {
    const mapped = (await as.clientCredentialsToken(MAPPED_CLIENT, { resource: opaqueMcpUrl })).access_token
    expect(mapped.split('.')).toHaveLength(1)
    expect((await listAndCall(opaqueMcpUrl, mapped)).tools).toEqual(['for_bots', 'for_sp'])
    const stray = (await as.clientCredentialsToken(UNMAPPED_CLIENT, { resource: opaqueMcpUrl })).access_token
    const res = await postFrom(opaqueMcpUrl, stray, '127.0.0.4')
    expect(res.status).toBe(401)
    expect(toolCalls()).toEqual([])
  })
})
