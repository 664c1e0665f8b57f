/**
 * The OAuth resource-server side of OIDC mode (design.md §5): decides whether a bearer token
 * presented to `/mcp` was issued by the configured issuer *for Keyway* and who it speaks for.
 * JWT access tokens (RFC 9068) are verified locally against the issuer's JWKS; opaque tokens are
 * introspected (RFC 7662) when an introspection client is configured, and refused otherwise.
 * Introspection answers, active or not, are remembered for `cacheTtlSeconds`, and each client
 * address may cause only so many introspection calls a minute. Every refusal is
 * `AppError('IDENTITY_INVALID')` with a lowercase reason for logs. This module
 * must never log, store or echo the token itself, and never accept a token whose audience is not
 * this server (RFC 8707, MCP authorization "token audience binding").
 * @module
 */
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, errors, jwtVerify } from 'jose'
import { AppError, isAppError } from '../errors.js'
import type { OidcSettings } from '../config/load.js'
import { createAddressBudget, type AddressBudget } from './address-budget.js'
import { readTokenClaims, type VerifiedToken } from './oidc-claims.js'
import { createRefusalCache, createTokenCache, hashToken, VERIFIED_TOKEN_CACHE_MS } from './oidc-cache.js'
import { fetchIssuerMetadata, type IssuerMetadata } from './oidc-discovery.js'
import { introspectToken } from './oidc-introspection.js'
import { CLOCK_TOLERANCE_S, tokenTimeProblem } from './token-time.js'

export type { VerifiedToken } from './oidc-claims.js'
export { CLOCK_TOLERANCE_S } from './token-time.js'

export interface VerifyOptions {
  /**
   * The network address the request came from (the HTTP layer's peer address). Introspection
   * calls are budgeted per address; requests without one share a single budget.
   */
  readonly clientAddress?: string | undefined
}

export interface OidcVerifier {
  /**
   * Verifies `token` and returns who it speaks for, or throws `AppError('IDENTITY_INVALID')`.
   * A plain function (no `this`), so `verifier.verify` can be passed around on its own.
   */
  readonly verify: (token: string, opts?: VerifyOptions) => Promise<VerifiedToken>
  /**
   * Whether tokens can be verified now (for `/readyz` and the start-up banner): the issuer's
   * metadata is known and its signing keys were fetched within jose's cache age, or can be now.
   * A failed attempt is repeated at most every {@link DISCOVERY_RETRY_MS}, so probes never hammer
   * the issuer. Never throws; `reason` is for the log.
   */
  readonly keysStatus: () => Promise<{ readonly ok: true } | { readonly ok: false; readonly reason: string }>
}

export interface OidcVerifierOptions {
  /** Clock in epoch milliseconds (like `Date.now`); used for `exp`/`nbf` and the cache. */
  readonly now?: () => number
  /** Used for discovery, JWKS and introspection; route it through the egress guard in production. */
  readonly fetch?: typeof fetch
  /** Allow an `http://` issuer and endpoints. Development and tests only (loopback issuers). */
  readonly allowInsecure?: boolean
}

/**
 * Only asymmetric JWS algorithms. `none` and HS* are never accepted: with HS* an attacker could
 * sign with the issuer's *public* key as the HMAC secret (RFC 8725 §2.1, §3.1).
 */
export const ASYMMETRIC_ALGORITHMS: ReadonlySet<string> = new Set([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
])

/** After a failed discovery, requests fail fast for this long instead of hammering the issuer. */
export const DISCOVERY_RETRY_MS = 5_000

/**
 * `typ` values accepted on a JWT access token. RFC 9068 §2.1 says `at+jwt`, but several IdPs
 * (Entra, Auth0, Keycloak by default) send `JWT` or nothing; the audience check is what keeps ID
 * tokens and other JWTs out (their `aud` is a client id, not this server). Any other `typ`
 * (`dpop+jwt`, `logout+jwt`, `id_token+jwt` …) names a different kind of JWT and is refused.
 */
const ACCEPTED_TYP = new Set(['at+jwt', 'application/at+jwt', 'jwt', 'application/jwt'])

/** The budget key of requests whose peer address is not known (they all share one budget). */
const UNKNOWN_ADDRESS = '(unknown)'

/**
 * Builds the verifier for one `OidcSettings`. Issuer metadata is discovered on first use and kept;
 * the JWKS is jose's remote set (cached, refetched on an unknown `kid` at most every 30 s);
 * accepted JWTs are remembered for at most 60 s, introspection answers (active or not) for
 * `introspection.cacheTtlSeconds`, and never past `exp`.
 * Throws `AppError('CONFIG_INVALID')` at creation for an `http://` issuer without `allowInsecure`
 * or an algorithm allowlist that is empty or not asymmetric.
 * @see https://www.rfc-editor.org/rfc/rfc9068 JWT profile for access tokens
 * @see https://www.rfc-editor.org/rfc/rfc7662 token introspection
 * @see https://www.rfc-editor.org/rfc/rfc8707 resource indicators (audience binding)
 */
export function createOidcVerifier(settings: OidcSettings, opts: OidcVerifierOptions = {}): OidcVerifier {
  const now = opts.now ?? Date.now
  const fetchImpl = opts.fetch ?? globalThis.fetch
  const allowInsecure = opts.allowInsecure ?? false
  const issuerUrl = URL.parse(settings.issuer)
  if (!issuerUrl || (issuerUrl.protocol !== 'https:' && !(allowInsecure && issuerUrl.protocol === 'http:')))
    throw new AppError('CONFIG_INVALID', `oidc issuer "${settings.issuer}" must be an https url`)
  const badAlg = settings.algorithms.find((a) => !ASYMMETRIC_ALGORITHMS.has(a))
  if (badAlg !== undefined) throw new AppError('CONFIG_INVALID', `oidc algorithm "${badAlg}" is not an asymmetric signature algorithm`)
  if (settings.algorithms.length === 0) throw new AppError('CONFIG_INVALID', 'oidc algorithms allowlist is empty')
  const algorithms = [...settings.algorithms]

  let metadata: Promise<IssuerMetadata> | undefined
  let metadataFailedAt = -Infinity
  let metadataError: unknown
  const getMetadata = (): Promise<IssuerMetadata> => {
    if (metadata) return metadata
    if (now() - metadataFailedAt < DISCOVERY_RETRY_MS) return Promise.reject(metadataError)
    const p = fetchIssuerMetadata(settings.issuer, fetchImpl, allowInsecure)
    metadata = p
    p.catch((e: unknown) => {
      metadata = undefined
      metadataFailedAt = now()
      metadataError = e
    })
    return p
  }

  let jwks: RemoteJwks | undefined
  const getJwks = async (): Promise<RemoteJwks> => {
    if (jwks) return jwks
    const { jwksUri } = await getMetadata()
    if (!jwksUri) throw new AppError('IDENTITY_INVALID', 'issuer metadata has no jwks_uri')
    jwks ??= createRemoteJWKSet(jwksUri, { [customFetch]: fetchImpl })
    return jwks
  }

  const verifyJwt = async (token: string, alg: unknown, typ: unknown): Promise<VerifiedToken> => {
    // Checked before any key lookup, so junk never reaches the network.
    if (typeof alg !== 'string' || !algorithms.includes(alg)) throw invalid(`token algorithm "${String(alg)}" is not allowed`)
    if (typ !== undefined && (typeof typ !== 'string' || !ACCEPTED_TYP.has(typ.toLowerCase())))
      throw invalid(`token type "${typeof typ === 'string' ? typ : typeof typ}" is not an access token`)
    const keys = await getJwks()
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: settings.issuer,
        audience: settings.audience,
        algorithms,
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ['exp'],
        currentDate: new Date(now()),
      })
      if (typeof payload.exp !== 'number') throw invalid('token has no "exp" claim')
      const problem = tokenTimeProblem({ iat: payload.iat, exp: payload.exp }, Math.floor(now() / 1000), settings.maxTokenLifetimeSeconds)
      if (problem) throw invalid(problem)
      return readTokenClaims(payload, settings, payload.exp)
    } catch (e) {
      throw fromJose(e)
    }
  }

  let budget: AddressBudget | undefined
  const refusals = createRefusalCache()
  const introspectionTtlMs = (settings.introspection?.cacheTtlSeconds ?? 0) * 1000

  const verifyOpaque = async (token: string, key: string, clientAddress: string | undefined): Promise<VerifiedToken> => {
    const client = settings.introspection
    if (!client) throw invalid('token is not a jwt and introspection is not configured')
    const { introspectionEndpoint } = await getMetadata()
    if (!introspectionEndpoint) throw invalid('issuer metadata has no introspection_endpoint')
    budget ??= createAddressBudget(client.callsPerMinutePerAddress)
    // Spent before the call and never for a cached answer: unknown strings cost the sender, not the IdP.
    if (!budget.take(clientAddress ?? UNKNOWN_ADDRESS, now())) throw invalid('introspection budget of this client address is spent')
    const r = await introspectToken(introspectionEndpoint, token, client, fetchImpl)
    try {
      return checkIntrospection(r)
    } catch (e) {
      // The issuer's answer is final for this token: remember the refusal as long as an acceptance.
      if (e instanceof AppError) refusals.set(key, e.message, now(), introspectionTtlMs)
      throw e
    }
  }

  const checkIntrospection = (r: Readonly<Record<string, unknown>>): VerifiedToken => {
    const nowS = Math.floor(now() / 1000)
    if (r.active !== true) throw invalid('token is not active')
    const aud = r.aud
    const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : []
    if (!audiences.includes(settings.audience)) throw invalid('token audience does not name this server')
    if (r.iss !== undefined && r.iss !== settings.issuer) throw invalid('token issuer does not match')
    if (typeof r.token_type === 'string' && r.token_type.toLowerCase() !== 'bearer') throw invalid(`token type "${r.token_type}" is not a bearer access token`)
    if (typeof r.exp !== 'number') throw invalid('token has no "exp" claim')
    if (r.exp <= nowS - CLOCK_TOLERANCE_S) throw invalid('token is expired')
    if (typeof r.nbf === 'number' && r.nbf > nowS + CLOCK_TOLERANCE_S) throw invalid('token is not yet valid')
    const problem = tokenTimeProblem({ iat: r.iat, exp: r.exp }, nowS, settings.maxTokenLifetimeSeconds)
    if (problem) throw invalid(problem)
    return readTokenClaims(r, settings, r.exp)
  }

  const cache = createTokenCache()
  const inflight = new Map<string, Promise<VerifiedToken>>()

  let keysTriedAt = -Infinity
  let keysProblem = 'issuer keys not fetched yet'
  const keysStatus = async (): Promise<{ readonly ok: true } | { readonly ok: false; readonly reason: string }> => {
    try {
      const meta = await getMetadata()
      // Introspection alone needs no keys; the metadata (its endpoint) is what it needs.
      if (!meta.jwksUri) return settings.introspection && meta.introspectionEndpoint ? { ok: true } : { ok: false, reason: 'issuer metadata has no jwks_uri' }
      const set = await getJwks()
      if (set.fresh) return { ok: true }
      if (now() - keysTriedAt < DISCOVERY_RETRY_MS) return { ok: false, reason: keysProblem }
      keysTriedAt = now()
      await set.reload()
      return { ok: true }
    } catch (e) {
      keysProblem =
        e instanceof AppError ? e.message : e instanceof errors.JWKSTimeout ? 'issuer key set fetch timed out' : 'issuer key set could not be fetched'
      return { ok: false, reason: keysProblem }
    }
  }

  /** The verified token and how long to remember it. */
  const verifyUncached = async (token: string, key: string, clientAddress: string | undefined): Promise<[VerifiedToken, number]> => {
    const header = readJwsHeader(token)
    if (header) return [await verifyJwt(token, header.alg, header.typ), VERIFIED_TOKEN_CACHE_MS]
    return [await verifyOpaque(token, key, clientAddress), introspectionTtlMs]
  }

  return Object.freeze({
    keysStatus,
    verify: async (token: string, opts: VerifyOptions = {}): Promise<VerifiedToken> => {
      if (token === '') throw invalid('token is empty')
      const key = hashToken(token)
      const hit = cache.get(key, now())
      if (hit) return hit
      const refused = refusals.get(key, now())
      if (refused !== undefined) throw invalid(refused)
      const running = inflight.get(key)
      if (running) return running
      const p = verifyUncached(token, key, opts.clientAddress)
        .then(([v, ttlMs]) => {
          cache.set(key, v, now(), ttlMs)
          return v
        })
        .finally(() => inflight.delete(key))
      inflight.set(key, p)
      return p
    },
  })
}

/** jose's remote key set with the state it exposes (`fresh`, `reload`). */
type RemoteJwks = ReturnType<typeof createRemoteJWKSet>

function invalid(reason: string): AppError {
  return new AppError('IDENTITY_INVALID', reason)
}

/** The protected header of a compact JWS (three segments, no `enc`), or undefined for anything else. */
function readJwsHeader(token: string): { alg: unknown; typ: unknown } | undefined {
  if (token.split('.').length !== 3) return undefined
  try {
    const h = decodeProtectedHeader(token)
    if ('enc' in h) return undefined
    return { alg: h.alg, typ: h.typ }
  } catch {
    return undefined
  }
}

/**
 * Maps jose failures to reasons. jose's claim errors carry the decoded payload, so they are not
 * kept as `cause` (it would put user claims into logs); key-set failures are, as they hold none.
 */
function fromJose(e: unknown): AppError {
  if (isAppError(e)) return e
  if (e instanceof errors.JWTExpired) return invalid('token is expired')
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return invalid(`token has no "${e.claim}" claim`)
    switch (e.claim) {
      case 'aud':
        return invalid('token audience does not name this server')
      case 'iss':
        return invalid('token issuer does not match')
      case 'nbf':
        return invalid('token is not yet valid')
      case 'iat':
        return invalid('token "iat" is in the future')
      default:
        return invalid(`token claim "${e.claim}" is invalid`)
    }
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return invalid('token algorithm is not allowed')
  if (e instanceof errors.JWSSignatureVerificationFailed) return invalid('token signature does not verify')
  if (e instanceof errors.JWKSNoMatchingKey) return invalid('no issuer key matches the token "kid"')
  if (e instanceof errors.JWKSMultipleMatchingKeys) return invalid('several issuer keys match the token and none verified it')
  if (e instanceof errors.JWKSTimeout) return new AppError('IDENTITY_INVALID', 'issuer key set fetch timed out', { cause: e })
  if (e instanceof errors.JWKSInvalid) return new AppError('IDENTITY_INVALID', 'issuer key set is invalid', { cause: e })
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) return invalid('token is not a well-formed jwt')
  if (e instanceof errors.JOSENotSupported) return invalid('token uses an unsupported key or algorithm')
  if (e instanceof errors.JOSEError) return new AppError('IDENTITY_INVALID', 'issuer key set unavailable', { cause: e })
  return new AppError('IDENTITY_INVALID', 'token verification failed', { cause: e })
}
