/**
 * Makes access tokens a verifier must refuse, for tests: signed by a key the issuer does not
 * publish, by the issuer's own key but with bad claims, unsigned (`alg: none`), or HMAC-signed
 * with the issuer's public key as the secret (the RFC 8725 §2.1 algorithm-confusion attack). It
 * holds no policy; each test states which rule the forged token breaks.
 * @module
 */
import { randomUUID } from 'node:crypto'
import { SignJWT, base64url, exportJWK, exportSPKI, generateKeyPair, importJWK, type JWK, type JWTPayload } from 'jose'

export type AsymmetricAlg = 'RS256' | 'PS256' | 'ES256'

/** A private signing key with its `kid`, importable by jose. */
export interface SigningKey {
  readonly alg: AsymmetricAlg
  readonly kid: string
  readonly privateJwk: JWK
  readonly publicJwk: JWK
}

/** A fresh key pair nobody publishes. */
export async function foreignKey(alg: AsymmetricAlg = 'RS256', kid: string = `foreign-${randomUUID()}`): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { alg, kid, privateJwk: { ...(await exportJWK(privateKey)), kid }, publicJwk: { ...(await exportJWK(publicKey)), kid } }
}

/** A private JWK as the test AS holds it (`signingKeys`), usable for `signJwt`. */
export function fromPrivateJwk(jwk: JWK, alg: AsymmetricAlg = jwk.kty === 'EC' ? 'ES256' : 'RS256'): SigningKey {
  if (!jwk.kid) throw new Error('signing key has no kid')
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = jwk
  return { alg, kid: jwk.kid, privateJwk: jwk, publicJwk }
}

export interface SignOptions {
  /** Header `typ`; default `at+jwt`; `null` leaves it out. */
  readonly typ?: string | null
  /** Header `kid`; default the key's; `null` leaves it out. */
  readonly kid?: string | null
}

/** Signs `claims` exactly as given (no defaults are added: pass `iat`, `exp`, … yourself). */
export async function signJwt(key: SigningKey, claims: JWTPayload, opts: SignOptions = {}): Promise<string> {
  const typ = opts.typ === undefined ? 'at+jwt' : opts.typ
  const kid = opts.kid === undefined ? key.kid : opts.kid
  const header = { alg: key.alg, ...(typ === null ? {} : { typ }), ...(kid === null ? {} : { kid }) }
  return new SignJWT(claims).setProtectedHeader(header).sign(await importJWK(key.privateJwk, key.alg))
}

/** An unsecured JWT (`alg: none`, empty signature), RFC 7519 §6. */
export function unsignedJwt(claims: JWTPayload, kid?: string): string {
  const header = { alg: 'none', typ: 'at+jwt', ...(kid === undefined ? {} : { kid }) }
  return `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(claims))}.`
}

/**
 * HS256 with the issuer's *public* key (its SPKI PEM) as the HMAC secret: accepted by a verifier
 * that lets the token header pick the algorithm for an RSA key.
 */
export async function hmacWithPublicKey(publicKey: SigningKey, claims: JWTPayload): Promise<string> {
  const key = await importJWK(publicKey.publicJwk, publicKey.alg)
  if (key instanceof Uint8Array) throw new Error('expected an asymmetric public key')
  const pem = await exportSPKI(key)
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: publicKey.kid }).sign(new TextEncoder().encode(pem))
}

/** Claims of a token that would be accepted by a verifier for `issuer`/`audience` at `nowS`. */
export function goodClaims(issuer: string, audience: string, nowS: number, extra: JWTPayload = {}): JWTPayload {
  return { iss: issuer, aud: audience, sub: 'mallory', scope: 'mcp', client_id: 'forged', iat: nowS, exp: nowS + 300, jti: randomUUID(), ...extra }
}
