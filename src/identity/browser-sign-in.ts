/**
 * Who is at the browser, in OIDC identity mode: Keyway signs the person who opened a consent link
 * in at the configured identity provider as a relying party (`identity.oidc.browserClient`;
 * authorization code with PKCE S256 and a nonce, OpenID Connect Core §3.1), and reads the user and
 * groups from the validated ID token, or from UserInfo when the ID token lacks them. The identity
 * provider is the admin's own infrastructure: like the access-token verifier, these requests do
 * not go through the connection egress guard. This module decides nothing about flows; the
 * browser routes compare its answer with the flow's user.
 * @module
 */
import * as oidc from 'openid-client'
import type { OidcSettings } from '../config/load.js'
import { AppError } from '../errors.js'
import { confineToIssuerOrigin } from '../egress/same-origin.js'

/** Endpoints the sign-in uses; discovered, each must be on the issuer's origin (the token endpoint gets the client secret). */
const USED_ENDPOINTS = new Set(['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint'] as const)

/** Per request to the identity provider. */
const SIGN_IN_TIMEOUT_S = 10

/** Who signed in. */
export interface BrowserUser {
  readonly user: string
  readonly groups: readonly string[]
}

export interface BrowserSignIn {
  /** The identity provider's origin (for the consent pages' CSP). */
  readonly issuerOrigin: string
  /** The authorization request (scope `openid`, plus `email` when `userClaim` is `email`). */
  authorizationUrl(p: { readonly redirectUri: string; readonly state: string; readonly nonce: string; readonly codeChallenge: string }): Promise<URL>
  /** Redeems the code and returns who signed in. @throws AppError `IDENTITY_INVALID` */
  finish(callbackUrl: URL, p: { readonly codeVerifier: string; readonly state: string; readonly nonce: string }): Promise<BrowserUser>
}

export interface BrowserSignInOptions {
  /** Allow an `http://` issuer (egress.dangerouslyAllowPrivateNetworks). */
  readonly allowInsecure: boolean
  readonly fetch?: oidc.CustomFetch
}

/** The relying party for `identity.oidc`, or undefined when no `browserClient` is configured (API-key mode). */
export function createBrowserSignIn(settings: OidcSettings, opts: BrowserSignInOptions): BrowserSignIn | undefined {
  const rp = settings.browserClient
  if (!rp) return undefined
  let config: Promise<oidc.Configuration> | undefined
  const configuration = (): Promise<oidc.Configuration> => {
    config ??= oidc
      .discovery(new URL(settings.issuer), rp.clientId, { client_secret: rp.clientSecret.reveal() }, undefined, {
        timeout: SIGN_IN_TIMEOUT_S,
        ...(opts.fetch ? { [oidc.customFetch]: opts.fetch } : {}),
        ...(opts.allowInsecure ? { execute: [oidc.allowInsecureRequests] } : {}),
      })
      .then((c) => {
        const metadata = confineToIssuerOrigin(c.serverMetadata(), settings.issuer, {
          used: USED_ENDPOINTS,
          code: 'IDENTITY_INVALID',
          who: 'identity.oidc.browserClient',
        })
        const methods = metadata.token_endpoint_auth_methods_supported
        // RFC 8414 §2: Basic is the default when the provider publishes nothing.
        const auth =
          !methods || methods.includes('client_secret_basic')
            ? oidc.ClientSecretBasic(rp.clientSecret.reveal())
            : oidc.ClientSecretPost(rp.clientSecret.reveal())
        const out = new oidc.Configuration(metadata, rp.clientId, { client_secret: rp.clientSecret.reveal() }, auth)
        out.timeout = SIGN_IN_TIMEOUT_S
        if (opts.fetch) out[oidc.customFetch] = opts.fetch
        if (opts.allowInsecure) oidc.allowInsecureRequests(out)
        return out
      })
    config.catch(() => {
      config = undefined
    })
    return config
  }
  const scope = ['openid', ...(settings.userClaim === 'email' ? ['email'] : [])].join(' ')

  return {
    issuerOrigin: new URL(settings.issuer).origin,
    async authorizationUrl(p) {
      const c = await configuration().catch((e: unknown) => {
        // The issuer-origin refusal already says what is wrong and what was not sent.
        if (e instanceof AppError) throw e
        throw new AppError('IDENTITY_INVALID', 'the identity provider could not be discovered for the browser sign-in (identity.oidc.issuer)', { cause: e })
      })
      return oidc.buildAuthorizationUrl(c, {
        redirect_uri: p.redirectUri,
        scope,
        state: p.state,
        nonce: p.nonce,
        code_challenge: p.codeChallenge,
        code_challenge_method: 'S256',
      })
    },
    async finish(callbackUrl, p) {
      const c = await configuration()
      let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>
      try {
        tokens = await oidc.authorizationCodeGrant(c, callbackUrl, {
          pkceCodeVerifier: p.codeVerifier,
          expectedState: p.state,
          expectedNonce: p.nonce,
          idTokenExpected: true,
        })
      } catch (e) {
        const detail = e instanceof oidc.ResponseBodyError || e instanceof oidc.AuthorizationResponseError ? ` (${e.error})` : ''
        throw new AppError('IDENTITY_INVALID', `the sign-in at the identity provider failed${detail}; check identity.oidc.browserClient`, { cause: e })
      }
      let claims: Record<string, unknown> = { ...(tokens.claims() ?? {}) }
      const sub = typeof claims.sub === 'string' ? claims.sub : undefined
      if (sub && (claims[settings.userClaim] === undefined || claims[settings.groupsClaim] === undefined)) {
        // Many providers put profile claims only in UserInfo for the code flow (OIDC Core §5.4).
        try {
          claims = { ...(await oidc.fetchUserInfo(c, tokens.access_token, sub)), ...claims }
        } catch {
          // UserInfo is optional: the ID token decides what it can.
        }
      }
      const user = claims[settings.userClaim]
      if (typeof user !== 'string' || user === '')
        throw new AppError(
          'IDENTITY_INVALID',
          `the identity provider did not return the "${settings.userClaim}" claim (identity.oidc.userClaim) for the browser sign-in`,
        )
      const raw = claims[settings.groupsClaim]
      const groups = Array.isArray(raw)
        ? raw.filter((g): g is string => typeof g === 'string' && g !== '')
        : typeof raw === 'string'
          ? raw.split(/[\s,]+/).filter(Boolean)
          : []
      return { user, groups }
    },
  }
}
