/**
 * The OIDC access-token verifier against a real authorization server (oidc-provider on
 * 127.0.0.1): real JWT access tokens (RFC 9068), real introspection of opaque tokens (RFC 7662),
 * and forged tokens for every rule the verifier enforces. Requirement ids are in the titles.
 * Only loopback addresses are used.
 * @module
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { decodeJwt } from 'jose'
import { AppError } from '../../src/errors.js'
import { Secret } from '../../src/secret.js'
import type { OidcSettings } from '../../src/config/load.js'
import { createOidcVerifier, type OidcVerifierOptions } from '../../src/identity/oidc.js'
import { freePort } from '../helpers/free-port.js'
import { startAuthorizationServer, type AuthorizationServer } from '../helpers/start-authorization-server.js'
import { foreignKey, fromPrivateJwk, goodClaims, hmacWithPublicKey, signJwt, unsignedJwt, type SigningKey } from '../helpers/jwt-forge.js'

// Resource URLs are only strings here (the audience); nothing listens on these ports.
const MCP = 'http://127.0.0.1:8787/mcp'
const MCP_OPAQUE = 'http://127.0.0.1:8788/mcp'
const OTHER = 'http://127.0.0.1:8789/other'
const OTHER_OPAQUE = 'http://127.0.0.1:8790/other'
const RS_CLIENT = { client_id: 'keyway-rs', client_secret: 'keyway-rs-secret', redirect_uris: [], response_types: [], grant_types: [] }

let as: AuthorizationServer
let asKey: SigningKey

beforeAll(async () => {
  as = await startAuthorizationServer({
    clients: [RS_CLIENT],
    resources: {
      [MCP]: { scope: 'mcp mcp:admin' },
      [MCP_OPAQUE]: { scope: 'mcp', accessTokenFormat: 'opaque' },
      [OTHER]: { scope: 'other' },
      [OTHER_OPAQUE]: { scope: 'other', accessTokenFormat: 'opaque' },
    },
    defaultResource: MCP,
    groupsOf: { 'alice@example.com': ['eng', 'ops'] },
  })
  const rsa = as.signingKeys.find((k) => k.kty === 'RSA')
  if (!rsa) throw new Error('test AS has no RSA key')
  asKey = fromPrivateJwk(rsa, 'RS256')
})

afterAll(async () => {
  await as.close()
})

function settings(over: Partial<OidcSettings> = {}): OidcSettings {
  return {
    issuer: as.issuer,
    audience: MCP,
    userClaim: 'sub',
    groupsClaim: 'groups',
    requiredScopes: [],
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    introspection: undefined,
    browserClient: undefined,
    servicePrincipals: new Map(),
    maxTokenLifetimeSeconds: undefined,
    groupsClaimSeparator: undefined,
    ...over,
  }
}

/** A verifier whose network traffic is counted per path. */
function countingVerifier(over: Partial<OidcSettings> = {}, opts: OidcVerifierOptions = {}) {
  const calls: string[] = []
  const fetchImpl: typeof fetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input)
    calls.push(new URL(url).pathname)
    return fetch(input, init)
  }
  const verifier = createOidcVerifier(settings(over), { allowInsecure: true, fetch: fetchImpl, ...opts })
  return { verifier, calls }
}

const introspection = { clientId: RS_CLIENT.client_id, clientSecret: new Secret(RS_CLIENT.client_secret), cacheTtlSeconds: 60, callsPerMinutePerAddress: 10 }

async function revoke(token: string): Promise<void> {
  const res = await fetch(`${as.issuer}/token/revocation`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${as.helperClient.clientId}:${as.helperClient.clientSecret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
  })
  expect(res.status).toBe(200)
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

const nowS = (): number => Math.floor(Date.now() / 1000)

describe('JWT access tokens (RFC 9068)', () => {
  test('a token the AS issued for this resource verifies with user, groups and scopes [identity:oidc-jwt]', async () => {
    const token = await as.userToken('alice@example.com', { resource: MCP })
    const { verifier } = countingVerifier()
    const v = await verifier.verify(token)
    expect(v).toEqual({
      kind: 'user',
      user: 'alice@example.com',
      groups: ['eng', 'ops'],
      scopes: ['mcp', 'mcp:admin'],
      expiresAt: decodeJwt(token).exp,
      clientId: as.helperClient.clientId,
    })
    expect(v.expiresAt - nowS()).toBeGreaterThan(500)
    expect(v.kind === 'user' && Object.isFrozen(v) && Object.isFrozen(v.groups)).toBe(true)
  })

  test('userClaim and groupsClaim pick the claims named in settings', async () => {
    const token = await as.userToken('alice@example.com')
    const { verifier } = countingVerifier({ userClaim: 'email', groupsClaim: 'roles' })
    expect(await verifier.verify(token)).toMatchObject({ kind: 'user', user: 'alice@example.com', groups: [] })
  })

  test('a token for another resource is refused [identity:audience-bound]', async () => {
    const token = await as.userToken('alice@example.com', { resource: OTHER })
    const e = await refusal(countingVerifier().verifier.verify(token))
    expect(e.message).toBe('token audience does not name this server')
  })

  test('a client-credentials token for this resource verifies as a service token of its client, never as a user [identity:service-principal]', async () => {
    const t = await as.clientCredentialsToken(as.helperClient.clientId, { resource: MCP, scope: 'mcp' })
    // oidc-provider puts the client id in sub: the attack the classification exists for.
    expect(decodeJwt(t.access_token).sub).toBe(as.helperClient.clientId)
    const v = await countingVerifier().verifier.verify(t.access_token)
    expect(v).toEqual({ kind: 'service', clientId: as.helperClient.clientId, scopes: ['mcp'], expiresAt: decodeJwt(t.access_token).exp })
  })

  test('an iat beyond the clock tolerance in the future is refused; within it, accepted [identity:iat]', async () => {
    const { verifier } = countingVerifier()
    const future = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS(), { iat: nowS() + 120, exp: nowS() + 600 }))
    expect((await refusal(verifier.verify(future))).message).toBe('token "iat" is in the future')
    const skewed = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS(), { iat: nowS() + 10 }))
    await expect(verifier.verify(skewed)).resolves.toMatchObject({ user: 'mallory' })
  })

  test('maxTokenLifetimeSeconds refuses exp - iat (or exp - now) above it [identity:iat]', async () => {
    const { verifier } = countingVerifier({ maxTokenLifetimeSeconds: 3600 })
    const long = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS(), { exp: nowS() + 7200 }))
    expect((await refusal(verifier.verify(long))).message).toBe('token lifetime is longer than maxTokenLifetimeSeconds')
    const { iat: _iat, ...noIat } = goodClaims(as.issuer, MCP, nowS(), { exp: nowS() + 7200 })
    expect((await refusal(verifier.verify(await signJwt(asKey, noIat)))).message).toBe('token lifetime is longer than maxTokenLifetimeSeconds')
    // A real token from the AS (600 s) is well within the cap.
    await expect(verifier.verify(await as.userToken('alice@example.com'))).resolves.toMatchObject({ user: 'alice@example.com' })
  })

  test('an expired token is refused, by its claims or by the injected clock [identity:exp]', async () => {
    const forged = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS() - 600, { exp: nowS() - 60 }))
    expect((await refusal(countingVerifier().verifier.verify(forged))).message).toBe('token is expired')

    const real = await as.userToken('alice@example.com')
    const exp = decodeJwt(real).exp ?? 0
    const late = countingVerifier({}, { now: () => (exp + 31) * 1000 }).verifier
    expect((await refusal(late.verify(real))).message).toBe('token is expired')
    // Within the 30 s clock tolerance it still passes.
    const skewed = countingVerifier({}, { now: () => (exp + 20) * 1000 }).verifier
    await expect(skewed.verify(real)).resolves.toMatchObject({ user: 'alice@example.com' })
  })

  test('a token that is not yet valid is refused [identity:nbf]', async () => {
    const forged = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS(), { nbf: nowS() + 120, exp: nowS() + 600 }))
    expect((await refusal(countingVerifier().verifier.verify(forged))).message).toBe('token is not yet valid')
  })

  test('a token without exp is refused [identity:exp]', async () => {
    const { exp: _exp, ...claims } = goodClaims(as.issuer, MCP, nowS())
    const forged = await signJwt(asKey, claims)
    expect((await refusal(countingVerifier().verifier.verify(forged))).message).toBe('token has no "exp" claim')
  })

  test('a token from another issuer is refused, even signed by the right key [identity:issuer]', async () => {
    const forged = await signJwt(asKey, goodClaims('http://127.0.0.1:1/evil', MCP, nowS()))
    expect((await refusal(countingVerifier().verifier.verify(forged))).message).toBe('token issuer does not match')
  })

  test('a token signed by a foreign key under the issuer key id is refused [identity:signature]', async () => {
    const evil = await foreignKey('RS256', asKey.kid)
    const forged = await signJwt(evil, goodClaims(as.issuer, MCP, nowS()))
    expect((await refusal(countingVerifier().verifier.verify(forged))).message).toBe('token signature does not verify')
  })

  test('an unknown kid is refused, and refetching the key set is rate-limited [identity:signature]', async () => {
    const { verifier } = countingVerifier()
    await verifier.verify(await as.userToken('alice@example.com')) // key set loaded
    const before = as.requestCount('/jwks')
    for (let i = 0; i < 3; i++) {
      const forged = await signJwt(await foreignKey('RS256'), goodClaims(as.issuer, MCP, nowS()))
      expect((await refusal(verifier.verify(forged))).message).toBe('no issuer key matches the token "kid"')
    }
    // jose refetches on an unknown kid at most once per cooldown (30 s).
    expect(as.requestCount('/jwks') - before).toBeLessThanOrEqual(1)
  })

  test('alg "none" is refused without touching the network [identity:no-alg-none]', async () => {
    const { verifier, calls } = countingVerifier()
    const e = await refusal(verifier.verify(unsignedJwt(goodClaims(as.issuer, MCP, nowS()), asKey.kid)))
    expect(e.message).toBe('token algorithm "none" is not allowed')
    expect(calls).toEqual([])
  })

  test('HS256 keyed with the issuer public key is refused [identity:no-alg-confusion]', async () => {
    const forged = await hmacWithPublicKey(asKey, goodClaims(as.issuer, MCP, nowS()))
    const e = await refusal(countingVerifier().verifier.verify(forged))
    expect(e.message).toBe('token algorithm "HS256" is not allowed')
  })

  test('an algorithm outside the allowlist is refused even when the key would verify it', async () => {
    const ps = fromPrivateJwk(asKey.privateJwk, 'PS256')
    const forged = await signJwt(ps, goodClaims(as.issuer, MCP, nowS()))
    const e = await refusal(countingVerifier({ algorithms: ['RS256'] }).verifier.verify(forged))
    expect(e.message).toBe('token algorithm "PS256" is not allowed')
    await expect(countingVerifier({ algorithms: ['PS256'] }).verifier.verify(forged)).resolves.toMatchObject({ user: 'mallory' })
  })

  test('typ at+jwt, JWT and none are accepted; other JWT types are refused', async () => {
    const { verifier } = countingVerifier()
    for (const typ of ['at+jwt', 'application/at+jwt', 'JWT', null]) {
      const t = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS()), { typ })
      await expect(verifier.verify(t)).resolves.toMatchObject({ user: 'mallory' })
    }
    const dpop = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS()), { typ: 'dpop+jwt' })
    expect((await refusal(verifier.verify(dpop))).message).toBe('token type "dpop+jwt" is not an access token')
  })

  test("a token without the user claim is refused; one that names a client is that client's own token", async () => {
    const { sub: _sub, client_id: _client, ...claims } = goodClaims(as.issuer, MCP, nowS())
    const { verifier } = countingVerifier()
    expect((await refusal(verifier.verify(await signJwt(asKey, claims)))).message).toBe('token claim "sub" (userClaim) is missing or not a string')
    const ownToken = await signJwt(asKey, { ...claims, client_id: 'forged' })
    await expect(verifier.verify(ownToken)).resolves.toMatchObject({ kind: 'service', clientId: 'forged' })
  })

  test('an ID token (audience = client id) is refused', async () => {
    const grant = await as.userGrant('alice@example.com')
    if (!grant.id_token) throw new Error('no id_token')
    expect((await refusal(countingVerifier().verifier.verify(grant.id_token))).message).toBe('token audience does not name this server')
  })
})

describe('opaque access tokens (RFC 7662 introspection)', () => {
  test('an active token for this resource verifies by introspection [identity:oidc-introspection]', async () => {
    const token = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    expect(token.split('.')).toHaveLength(1)
    const { verifier, calls } = countingVerifier({ audience: MCP_OPAQUE, introspection })
    const v = await verifier.verify(token)
    expect(v).toMatchObject({ user: 'alice@example.com', groups: ['eng', 'ops'], scopes: ['mcp'], clientId: as.helperClient.clientId })
    expect(calls).toContain('/token/introspection')
  })

  test('a revoked token is refused', async () => {
    const token = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const res = await fetch(`${as.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${as.helperClient.clientId}:${as.helperClient.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    })
    expect(res.status).toBe(200)
    const e = await refusal(countingVerifier({ audience: MCP_OPAQUE, introspection }).verifier.verify(token))
    expect(e.message).toBe('token is not active')
  })

  test('garbage is refused as not active', async () => {
    const e = await refusal(countingVerifier({ audience: MCP_OPAQUE, introspection }).verifier.verify('not-a-real-token'))
    expect(e.message).toBe('token is not active')
  })

  test('an opaque token for another resource is refused [identity:audience-bound]', async () => {
    const token = await as.userToken('alice@example.com', { resource: OTHER_OPAQUE })
    const e = await refusal(countingVerifier({ audience: MCP_OPAQUE, introspection }).verifier.verify(token))
    expect(e.message).toBe('token audience does not name this server')
  })

  test('a refresh token presented as a bearer is refused (introspection gives it no audience)', async () => {
    const grant = await as.userGrant('alice@example.com', { resource: MCP_OPAQUE, offline: true })
    if (!grant.refresh_token) throw new Error('no refresh_token')
    const e = await refusal(countingVerifier({ audience: MCP_OPAQUE, introspection }).verifier.verify(grant.refresh_token))
    expect(e.message).toBe('token audience does not name this server')
  })

  test('wrong introspection credentials are refused', async () => {
    const bad = { ...introspection, clientSecret: new Secret('wrong') }
    const token = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const e = await refusal(countingVerifier({ audience: MCP_OPAQUE, introspection: bad }).verifier.verify(token))
    expect(e.message).toBe('token introspection answered 401')
    expect(e.message).not.toContain(token)
  })

  test('without introspection configured an opaque token is refused without network', async () => {
    const { verifier, calls } = countingVerifier({ audience: MCP_OPAQUE })
    const e = await refusal(verifier.verify(await as.userToken('alice@example.com', { resource: MCP_OPAQUE })))
    expect(e.message).toBe('token is not a jwt and introspection is not configured')
    expect(calls).toEqual([])
  })
})

describe('caching and discovery', () => {
  test('a second verify of the same token does no network request [identity:token-cache]', async () => {
    const jwt = await as.userToken('alice@example.com')
    const { verifier, calls } = countingVerifier()
    await verifier.verify(jwt)
    expect(calls).toEqual(['/.well-known/openid-configuration', '/jwks'])
    await verifier.verify(jwt)
    expect(calls).toHaveLength(2)

    const opaque = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const o = countingVerifier({ audience: MCP_OPAQUE, introspection })
    const first = await o.verifier.verify(opaque)
    const second = await o.verifier.verify(opaque)
    expect(second).toBe(first)
    expect(o.calls.filter((p) => p === '/token/introspection')).toHaveLength(1)
  })

  test('concurrent verifies of one token share one introspection', async () => {
    const opaque = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const o = countingVerifier({ audience: MCP_OPAQUE, introspection })
    await Promise.all([o.verifier.verify(opaque), o.verifier.verify(opaque), o.verifier.verify(opaque)])
    expect(o.calls.filter((p) => p === '/token/introspection')).toHaveLength(1)
  })

  test('the cache forgets after 60 s, and a revoked opaque token is then refused', async () => {
    let now = Date.now()
    const token = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const o = countingVerifier({ audience: MCP_OPAQUE, introspection }, { now: () => now })
    await o.verifier.verify(token)
    await fetch(`${as.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${as.helperClient.clientId}:${as.helperClient.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ token }),
    })
    now += 59_000
    await expect(o.verifier.verify(token)).resolves.toMatchObject({ user: 'alice@example.com' })
    now += 2_000
    expect((await refusal(o.verifier.verify(token))).message).toBe('token is not active')
  })

  test('cacheTtlSeconds sets how long answers are remembered; 0 asks the issuer every time, so a revocation shows at once [identity:introspection-budget]', async () => {
    let now = Date.now()
    const token = await as.userToken('alice@example.com', { resource: MCP_OPAQUE })
    const short = countingVerifier({ audience: MCP_OPAQUE, introspection: { ...introspection, cacheTtlSeconds: 5 } }, { now: () => now })
    await short.verifier.verify(token)
    now += 4_000
    await short.verifier.verify(token)
    expect(short.calls.filter((p) => p === '/token/introspection')).toHaveLength(1)
    now += 2_000
    await short.verifier.verify(token)
    expect(short.calls.filter((p) => p === '/token/introspection')).toHaveLength(2)

    const never = countingVerifier({ audience: MCP_OPAQUE, introspection: { ...introspection, cacheTtlSeconds: 0 } })
    await never.verifier.verify(token)
    await revoke(token)
    expect((await refusal(never.verifier.verify(token))).message).toBe('token is not active')
    expect((await refusal(never.verifier.verify('not-a-real-token'))).message).toBe('token is not active')
    expect((await refusal(never.verifier.verify('not-a-real-token'))).message).toBe('token is not active')
    expect(never.calls.filter((p) => p === '/token/introspection')).toHaveLength(4)
  })

  test('an inactive answer is remembered: the same unknown string is introspected once [identity:introspection-budget]', async () => {
    const o = countingVerifier({ audience: MCP_OPAQUE, introspection })
    for (let i = 0; i < 3; i++) expect((await refusal(o.verifier.verify('never-issued-token'))).message).toBe('token is not active')
    expect(o.calls.filter((p) => p === '/token/introspection')).toHaveLength(1)
  })

  test('requests without a client address share one budget; spent, nothing reaches the issuer [identity:introspection-budget]', async () => {
    const o = countingVerifier({ audience: MCP_OPAQUE, introspection: { ...introspection, callsPerMinutePerAddress: 3 } })
    const reasons: string[] = []
    for (let i = 0; i < 6; i++) reasons.push((await refusal(o.verifier.verify(`junk-${i}`))).message)
    expect(reasons).toEqual([...Array(3).fill('token is not active'), ...Array(3).fill('introspection budget of this client address is spent')])
    expect(o.calls.filter((p) => p === '/token/introspection')).toHaveLength(3)
    // Another address still has its budget.
    await expect(o.verifier.verify(await as.userToken('alice@example.com', { resource: MCP_OPAQUE }), { clientAddress: '192.0.2.9' })).resolves.toMatchObject({
      kind: 'user',
    })
  })

  test('a cached token is not accepted past its exp', async () => {
    let now = Date.now()
    const exp = nowS() + 40
    const forged = await signJwt(asKey, goodClaims(as.issuer, MCP, nowS(), { exp }))
    const { verifier } = countingVerifier({}, { now: () => now })
    await verifier.verify(forged)
    now = (exp + 31) * 1000
    expect((await refusal(verifier.verify(forged))).message).toBe('token is expired')
  })

  test('an unreachable issuer fails closed, and retries are spaced', async () => {
    const gone = await startAuthorizationServer()
    const issuer = gone.issuer
    await gone.close()
    let now = Date.now()
    const { verifier, calls } = countingVerifier({ issuer }, { now: () => now })
    const token = await signJwt(asKey, goodClaims(issuer, MCP, nowS()))
    expect((await refusal(verifier.verify(token))).message).toMatch(/^issuer metadata at \/\.well-known\/.* could not be fetched$/)
    const n = calls.length
    await refusal(verifier.verify(token))
    expect(calls).toHaveLength(n)
    now += 6_000
    await refusal(verifier.verify(token))
    expect(calls.length).toBeGreaterThan(n)
  })

  test('an http issuer needs allowInsecure; only asymmetric algorithms are accepted [identity:https-only]', () => {
    expect(() => createOidcVerifier(settings())).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
    expect(() => createOidcVerifier(settings({ algorithms: ['RS256', 'HS256'] }), { allowInsecure: true })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID', message: 'oidc algorithm "HS256" is not an asymmetric signature algorithm' }),
    )
    expect(() => createOidcVerifier(settings({ algorithms: ['none'] }), { allowInsecure: true })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
  })
})

describe('keysStatus (readiness)', () => {
  test('ok once metadata and keys are fetched, with no refetch while fresh; a down issuer is unavailable and retried at most every 5 s', async () => {
    const { verifier, calls } = countingVerifier()
    expect(await verifier.keysStatus()).toEqual({ ok: true })
    expect(calls.some((p) => p.endsWith('/jwks'))).toBe(true)
    const fetched = calls.length
    expect(await verifier.keysStatus()).toEqual({ ok: true })
    expect(calls.length).toBe(fetched)

    let t = Date.now()
    const closed = await freePort()
    const { verifier: down, calls: asked } = countingVerifier({ issuer: `http://127.0.0.1:${closed}` }, { now: () => t })
    const first = await down.keysStatus()
    expect(first).toMatchObject({ ok: false, reason: expect.stringContaining('issuer metadata') })
    const tries = asked.length
    expect(tries).toBeGreaterThan(0)
    // Within the retry window the answer is remembered; nothing new is asked of the issuer.
    expect(await down.keysStatus()).toEqual(first)
    expect(asked.length).toBe(tries)
    t += 5_001
    expect(await down.keysStatus()).toMatchObject({ ok: false })
    expect(asked.length).toBeGreaterThan(tries)
  })
})
