/**
 * The OAuth part of a consent flow (design.md §7 steps 3–4), for every method whose token comes
 * from a person: the provider authorization URL for a link (state, PKCE S256, the exact redirect
 * URI), and the callback's work (redeem the code once, learn which provider account signed in,
 * check it against `auth.accountMatch`, then store the tokens encrypted under the flow's token
 * ref, audit, record the outcome for whoever waits). On an account mismatch nothing is stored.
 * Who is at the browser is checked before this module is called (browser routes); it only trusts
 * the flow record it is handed.
 * @module
 */
import * as oidc from 'openid-client'
import type { AuditLog } from '../audit/audit-log.js'
import type { ConfigSnapshot, Connection } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import { AppError } from '../errors.js'
import type { TokenStore } from '../store/index.js'
import { putOutcome, type ConsentLink, type ProviderCallback } from './records.js'
import type { OAuthClient, OAuthClients } from '../credentials/oauth-client.js'
import { checkAccount, describeAccount, learnProviderAccount } from './provider-account.js'
import { redirectUri } from '../credentials/redirect-uri.js'
import { recordFromTokenSet } from '../credentials/token-record.js'

export interface ConsentDeps {
  readonly store: TokenStore
  readonly clients: OAuthClients
  readonly audit: AuditLog
  readonly now: () => number
  /** Told about a userinfo request that failed when no account check depended on it. */
  readonly onAccountLookupSkipped?: (e: unknown) => void
}

/** What a finished sign-in obtained; shown on the callback page and by `keyway authorize`. */
export interface ConsentGranted {
  readonly kind: 'granted'
  readonly connection: string
  readonly tokenUser: string | null
  readonly completer: Principal
  readonly scope: string | undefined
  readonly expiresAt: number | undefined
  readonly refreshToken: boolean
  readonly warnings: readonly string[]
  /** The provider account that signed in (email, else subject), when the provider named it. */
  readonly providerAccount: string | undefined
}

/** `auth.accountMatch` refused the account: nothing was stored. */
export interface ConsentAccountMismatch {
  readonly kind: 'account-mismatch'
  readonly connection: string
  /** The Keyway user the flow binds (who completed it, as the audit log names them). */
  readonly keywayUser: string
  /** The provider account that signed in, or undefined when the provider named none. */
  readonly providerAccount: string | undefined
  /** What would have matched, in words. */
  readonly expected: string
}

export type ConsentResult = ConsentGranted | ConsentAccountMismatch

/** Outcome reason (and `consent.failed`-style reason) of an account mismatch. */
export const ACCOUNT_MISMATCH_REASON = 'account-mismatch'

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
 * Redeems the callback's code once (RFC 6749 §4.1.3; `iss` checked per RFC 9207), learns the
 * provider account, and, when `auth.accountMatch` refuses it, stores nothing, audits
 * `consent.account_mismatch` and records a failed outcome. Otherwise stores the tokens under the
 * flow's token ref (replacing an older sign-in), audits and records the outcome.
 * `callbackUrl` is the public redirect URI plus the query the browser brought.
 * @throws AppError `FLOW_INVALID` (connection changed, code refused), `CREDENTIAL_UNAVAILABLE`, `STORE_UNAVAILABLE`
 */
export async function completeConsent(deps: ConsentDeps, snapshot: ConfigSnapshot, flow: ProviderCallback, callbackUrl: URL): Promise<ConsentResult> {
  const connection = flowConnection(snapshot, flow)
  const client = await deps.clients.get(connection)
  const set = await client.exchangeCode(callbackUrl, { codeVerifier: flow.codeVerifier, state: stateOf(callbackUrl) })
  const rule = connection.auth.type === 'bearer_token' ? undefined : connection.auth.accountMatch
  const account = await learnProviderAccount(client, set, {
    needEmail: rule?.claim === 'email',
    required: rule !== undefined,
    ...(deps.onAccountLookupSkipped ? { onSkipped: deps.onAccountLookupSkipped } : {}),
  })
  const providerAccount = describeAccount(account)
  const keywayUser = completedBy(flow)
  if (rule) {
    const check = checkAccount(rule, accountUsers(flow, snapshot), account)
    if (!check.ok) {
      // The tokens are dropped, not revoked: at many providers revoking ends every grant of that
      // account to this client, including the account owner's own sign-in.
      deps.audit.record({
        type: 'consent.account_mismatch',
        user: keywayUser,
        connection: flow.connection,
        providerAccount: providerAccount ?? '(not named by the provider)',
        expected: check.expected,
      })
      await putOutcome(deps.store, flow.flowId, { status: 'failed', connection: flow.connection, at: deps.now(), reason: ACCOUNT_MISMATCH_REASON })
      return { kind: 'account-mismatch', connection: flow.connection, keywayUser, providerAccount, expected: check.expected }
    }
  }
  const record = recordFromTokenSet(set, { method: flow.method, now: deps.now(), ...(providerAccount === undefined ? {} : { subject: providerAccount }) })
  await deps.store.putToken({ connection: flow.connection, user: flow.tokenUser }, record)
  const warnings = record.warnings ?? []
  const warning = warnings[0]
  deps.audit.record({
    type: 'consent.granted',
    user: keywayUser,
    connection: flow.connection,
    ...(record.scope === undefined ? {} : { scopes: record.scope }),
    ...(providerAccount === undefined ? {} : { providerAccount }),
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
    kind: 'granted',
    connection: flow.connection,
    tokenUser: flow.tokenUser,
    completer: flow.completer,
    scope: record.scope,
    expiresAt: record.expiresAt,
    refreshToken: record.refreshToken !== undefined,
    warnings,
    providerAccount,
  }
  await putOutcome(deps.store, flow.flowId, {
    status: 'granted',
    connection: flow.connection,
    at: deps.now(),
    ...(record.scope === undefined ? {} : { scope: record.scope }),
    ...(record.expiresAt === undefined ? {} : { expiresAt: record.expiresAt }),
    refreshToken: granted.refreshToken,
    ...(warnings.length > 0 ? { warnings: [...warnings] } : {}),
    ...(providerAccount === undefined ? {} : { account: providerAccount }),
  })
  return granted
}

/**
 * The Keyway users whose provider account may complete a flow under `auth.accountMatch`: the
 * token's user (per-user); for a shared connection the user confirmed at the browser (OIDC
 * mode), else the owner, else the members the config lists for the owner group (none for a
 * service principal owner).
 */
export function accountUsers(
  flow: { readonly tokenUser: string | null; readonly completer: Principal; readonly confirmedUser?: string | undefined },
  snapshot: Pick<ConfigSnapshot, 'groups'>,
): readonly string[] {
  if (flow.tokenUser !== null) return [flow.tokenUser]
  if (flow.confirmedUser !== undefined) return [flow.confirmedUser]
  const c = flow.completer
  if ('user' in c) return [c.user]
  // A service principal has no provider account of its own: nothing matches.
  if (!('group' in c)) return []
  return Object.hasOwn(snapshot.groups, c.group) ? (snapshot.groups[c.group] ?? []) : []
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
