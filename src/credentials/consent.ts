/**
 * The OAuth part of a consent flow (design.md §7 steps 3–4), for every method whose token comes
 * from a person: the provider authorization URL for a link (state, PKCE S256, the exact redirect
 * URI), and the callback's work (redeem the code once, store the tokens encrypted under the flow's
 * token ref, audit, record the outcome for whoever waits). Who is at the browser is checked before
 * this module is called (browser routes); it only trusts the flow record it is handed.
 * @module
 */
import * as oidc from 'openid-client'
import type { AuditLog } from '../audit/audit-log.js'
import type { ConfigSnapshot, Connection } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import { AppError } from '../errors.js'
import type { TokenStore } from '../store/index.js'
import { putOutcome, type ConsentLink, type ProviderCallback } from './consent-flow.js'
import type { OAuthClient, OAuthClients } from './oauth-client.js'
import { redirectUri } from './redirect-uri.js'
import { recordFromTokenSet } from './token-record.js'

export interface ConsentDeps {
  readonly store: TokenStore
  readonly clients: OAuthClients
  readonly audit: AuditLog
  readonly now: () => number
}

/** What a finished sign-in obtained; shown on the callback page and by `keyway authorize`. */
export interface ConsentGranted {
  readonly connection: string
  readonly tokenUser: string | null
  readonly completer: Principal
  readonly scope: string | undefined
  readonly expiresAt: number | undefined
  readonly refreshToken: boolean
  readonly warnings: readonly string[]
}

/** The connection a flow is for, if it still exists with the same auth method; else `FLOW_INVALID`. */
export function flowConnection(snapshot: ConfigSnapshot, flow: { readonly connection: string; readonly method: string }): Connection {
  const c = snapshot.connections.get(flow.connection)
  if (!c) throw new AppError('FLOW_INVALID', `connection "${flow.connection}" no longer exists in the config`, { detail: { reason: 'connection-gone' } })
  if (c.auth.type !== flow.method)
    throw new AppError('FLOW_INVALID', `connection "${flow.connection}" changed its auth.type to ${c.auth.type} since this link was made; make a new link`, {
      detail: { reason: 'connection-changed' },
    })
  return c
}

/**
 * The provider authorization request for a link: `state` and PKCE S256 from the link record
 * (RFC 7636 §4.2), redirect URI `<publicUrl>/login/oauth/http.html` exactly (RFC 9700 §4.1.3).
 */
export async function providerAuthorizationUrl(client: OAuthClient, link: ConsentLink, publicUrl: string): Promise<URL> {
  return client.authorizationUrl({
    redirectUri: redirectUri(publicUrl),
    state: link.state,
    codeChallenge: await oidc.calculatePKCECodeChallenge(link.codeVerifier),
  })
}

/** Who completed a flow, as the audit log names them. */
export function completedBy(flow: { readonly completer: Principal; readonly confirmedUser?: string | undefined }): string {
  const c = flow.completer
  return flow.confirmedUser ?? ('user' in c ? c.user : 'group' in c ? `(member of group ${c.group})` : `(service principal ${c.servicePrincipal})`)
}

/**
 * Redeems the callback's code once (RFC 6749 §4.1.3; `iss` checked per RFC 9207), stores the
 * tokens under the flow's token ref (replacing an older sign-in), audits and records the outcome.
 * `callbackUrl` is the public redirect URI plus the query the browser brought.
 * @throws AppError `FLOW_INVALID` (connection changed, code refused), `CREDENTIAL_UNAVAILABLE`, `STORE_UNAVAILABLE`
 */
export async function completeConsent(deps: ConsentDeps, snapshot: ConfigSnapshot, flow: ProviderCallback, callbackUrl: URL): Promise<ConsentGranted> {
  const connection = flowConnection(snapshot, flow)
  const client = await deps.clients.get(connection)
  const set = await client.exchangeCode(callbackUrl, { codeVerifier: flow.codeVerifier, state: stateOf(callbackUrl) })
  const record = recordFromTokenSet(set, { method: flow.method, now: deps.now() })
  await deps.store.putToken({ connection: flow.connection, user: flow.tokenUser }, record)
  const warnings = record.warnings ?? []
  const warning = warnings[0]
  deps.audit.record({
    type: 'consent.granted',
    user: completedBy(flow),
    connection: flow.connection,
    ...(record.scope === undefined ? {} : { scopes: record.scope }),
    ...(warning === undefined ? {} : { warning }),
  })
  deps.audit.record({
    type: 'credential.obtained',
    connection: flow.connection,
    ...(flow.tokenUser === null ? {} : { user: flow.tokenUser }),
    authMethod: flow.method,
    ...(warning === undefined ? {} : { warning }),
  })
  const granted: ConsentGranted = {
    connection: flow.connection,
    tokenUser: flow.tokenUser,
    completer: flow.completer,
    scope: record.scope,
    expiresAt: record.expiresAt,
    refreshToken: record.refreshToken !== undefined,
    warnings,
  }
  await putOutcome(deps.store, flow.flowId, {
    status: 'granted',
    connection: flow.connection,
    at: deps.now(),
    ...(record.scope === undefined ? {} : { scope: record.scope }),
    ...(record.expiresAt === undefined ? {} : { expiresAt: record.expiresAt }),
    refreshToken: granted.refreshToken,
    ...(warnings.length > 0 ? { warnings: [...warnings] } : {}),
  })
  return granted
}

/** Audits a failed flow and records the outcome; never throws (the page must still render). */
export async function failConsent(
  deps: ConsentDeps,
  flow: { readonly flowId: string; readonly connection: string; readonly completer: Principal; readonly confirmedUser?: string | undefined },
  reason: string,
  onError?: (e: unknown) => void,
): Promise<void> {
  deps.audit.record({ type: 'consent.failed', user: completedBy(flow), connection: flow.connection, reason })
  try {
    await putOutcome(deps.store, flow.flowId, { status: 'failed', connection: flow.connection, at: deps.now(), reason })
  } catch (e) {
    onError?.(e)
  }
}

function stateOf(url: URL): string {
  const s = url.searchParams.get('state')
  if (!s) throw new AppError('FLOW_INVALID', 'the callback carries no state')
  return s
}
