/**
 * The browser side of consent as a state machine (design.md §4, §7 steps 3–4), with no HTTP in
 * it: each step takes what the browser brought (flow id, form token, callback URL, cookies) and
 * answers a page, or a redirect, with the cookies to set; `http/browser-routes.ts` turns that into
 * a response. Steps:
 *
 * - `open` (`GET /connect/:flowId`, the link a person opens) first establishes who is at the
 *   browser: in OIDC identity mode a sign-in at the identity provider whose user must be the
 *   flow's completer (or a member of its group); in API-key mode a confirmation page naming the
 *   user the provider account will be bound to, confirmed with a form token that is a
 *   double-submit cookie AND recorded server-side for this link when the page is rendered;
 * - `confirm` (`POST /connect/:flowId`) takes that token once (a replayed or never-issued pair is
 *   refused); only then is the flow consumed and the browser sent to the provider with state,
 *   PKCE S256 and the exact redirect URI;
 * - `callback` (`GET /login/oauth/http.html`, the one OAuth redirect URI) takes its record by
 *   `state` (single use; both Keyway's own sign-in and the provider's answer arrive here, told
 *   apart by the record's purpose), requires the browser-binding cookie set when the browser left
 *   (RFC 9700 §4.7), and hands the code to `complete.ts`, which may refuse the provider account
 *   (`auth.accountMatch`). Provider error text is shown only for a callback whose `state` names a
 *   live flow; any other callback gets a generic page that echoes nothing of the query.
 *
 * Works for shared and per-user flows alike. Pages come from `pages.ts`; nothing here stores a
 * token itself or prints a secret.
 * @module
 */
import { timingSafeEqual } from 'node:crypto'
import * as oidc from 'openid-client'
import type { AuditLog } from '../audit/audit-log.js'
import type { ConfigSnapshot } from '../config/load.js'
import type { OAuthClients } from '../credentials/oauth-client.js'
import { authorizeCommand, describeOwner } from '../credentials/oauth-u2m-shared.js'
import { CALLBACK_PATH, redirectUri } from '../credentials/redirect-uri.js'
import { sha256Hex } from '../encoding.js'
import { isAppError } from '../errors.js'
import { isPrincipal } from '../grants/decide.js'
import type { BrowserSignIn } from '../identity/browser-sign-in.js'
import { createCaller } from '../identity/caller.js'
import { errorMessage, type Logger } from '../log.js'
import { oneLine, safeErrorCode } from '../safe-text.js'
import type { TokenStore } from '../store/index.js'
import { isFlowId } from '../store/index.js'
import { completedBy, completeConsent, failConsent, flowConnection, providerAuthorizationUrl, type ConsentDeps } from './complete.js'
import {
  accountMismatchPage,
  confirmPage,
  failurePage,
  flowGonePage,
  grantedPage,
  invalidCallbackPage,
  providerErrorPage,
  wrongUserPage,
  type Page,
} from './pages.js'
import {
  connectPath,
  putConfirmation,
  putProviderCallback,
  putSignInCallback,
  randomSecret,
  readConsentLink,
  takeCallback,
  takeConfirmation,
  takeConsentLink,
  type ConsentLink,
  type ProviderCallback,
  type SignInCallback,
} from './records.js'

/** Double-submit cookie of the confirmation form (API-key mode), scoped to the link's path. */
export const CONFIRM_COOKIE = 'keyway_confirm'
/** Prefix of the browser-binding cookie; the rest is derived from the state it binds. */
const BIND_COOKIE_PREFIX = 'keyway_bind_'
/** Longest provider `error_description` shown on a page. */
const MAX_DESCRIPTION_CHARS = 300

export interface BrowserFlowDeps {
  readonly snapshot: () => ConfigSnapshot
  readonly store: TokenStore
  readonly clients: OAuthClients
  /** Keyway's relying party at the identity provider for a snapshot; undefined in API-key mode. */
  readonly signIn: (snapshot: ConfigSnapshot) => BrowserSignIn | undefined
  readonly audit: AuditLog
  readonly log: Logger
  readonly now: () => number
  /**
   * How a page tells the person to get a new link, by flow method. Default: shared connections
   * name `keyway authorize`, per-user ones say to call the tool again.
   */
  readonly retryHint?: (flow: { readonly connection: string; readonly method: string }) => string
}

/** A cookie to set (an empty value with `maxAgeMs: 0` clears it). Always HttpOnly. */
export interface Cookie {
  readonly name: string
  readonly value: string
  readonly path: string
  readonly maxAgeMs: number
  readonly sameSite: 'Strict' | 'Lax'
  readonly secure: boolean
}

/** What a step answers: a page, or a 303 to `location`; either with cookies to set, in order. */
export type BrowserAnswer =
  | {
      readonly kind: 'page'
      readonly page: Page
      readonly cookies: readonly Cookie[]
      /** The request body was left unread: the connection must close after the answer. */
      readonly closeConnection?: boolean
    }
  | { readonly kind: 'redirect'; readonly location: URL; readonly cookies: readonly Cookie[] }

/** The request's cookie of that name, if any. */
export type CookieJar = (name: string) => string | undefined

/** The confirmation form's token as posted, or that the body was over `limit` (in words). */
export type PostedToken = { readonly kind: 'token'; readonly token: string } | { readonly kind: 'too-large'; readonly limit: string }

export interface BrowserFlow {
  /** Whether the link is live, without touching it (`HEAD`: `keyway authorize` asks a Keyway already on the port). */
  probe(flowId: string): Promise<boolean>
  /** The link opened: the identity provider's sign-in (OIDC mode) or the confirmation page. */
  open(flowId: string): Promise<BrowserAnswer>
  /** The confirmation form posted (API-key mode); `readToken` reads the body, called only when the step needs it. */
  confirm(flowId: string, readToken: () => Promise<PostedToken>, cookies: CookieJar): Promise<BrowserAnswer>
  /** The redirect URI reached with `requestUrl`'s query. */
  callback(requestUrl: URL, cookies: CookieJar): Promise<BrowserAnswer>
  /** The page for a step that threw (logged here, never shown beyond an exposed message). */
  failed(e: unknown, route: string): BrowserAnswer
}

/** Creates the consent state machine of a running Keyway. */
export function createBrowserFlow(deps: BrowserFlowDeps): BrowserFlow {
  const consentDeps: ConsentDeps = {
    store: deps.store,
    clients: deps.clients,
    audit: deps.audit,
    now: deps.now,
    onAccountLookupSkipped: (e) => deps.log.warn('provider account not learnt from userinfo', { error: errorMessage(e) }),
  }
  const retry = (flow: { readonly connection: string; readonly method: string } | undefined): string =>
    flow === undefined ? 'start again from where you got the link' : (deps.retryHint ?? defaultRetryHint)(flow)

  /** Consumed link → callback record bound to this browser → 303 to the provider. */
  const toProvider = async (flowId: string, link: ConsentLink, snapshot: ConfigSnapshot, confirmedUser: string | undefined): Promise<BrowserAnswer> => {
    const connection = flowConnection(snapshot, link)
    const client = await deps.clients.get(connection)
    const binding = randomSecret()
    await putProviderCallback(deps.store, flowId, link, {
      bindingHash: sha256Hex(binding),
      now: deps.now(),
      ...(confirmedUser === undefined ? {} : { confirmedUser }),
    })
    const url = await providerAuthorizationUrl(client, link, snapshot.server.publicUrl)
    return redirect(url, [bindCookie(link.state, binding, link, snapshot, deps.now())])
  }

  /** Keyway's own sign-in came back: the signed-in user must be the flow's completer. */
  const signedIn = async (record: SignInCallback, callbackUrl: URL, error: string | null, snapshot: ConfigSnapshot): Promise<BrowserAnswer> => {
    const signIn = deps.signIn(snapshot)
    if (error || !signIn) {
      return page(
        failurePage({
          title: 'Sign-in at the identity provider failed',
          message: `The identity provider answered ${error ? safeErrorCode(error) : 'after identity.oidc.browserClient was removed'}. Nothing was stored; the link still works.`,
          retry: 'open the link again',
          status: 400,
        }),
      )
    }
    let who: { user: string; groups: readonly string[] }
    try {
      who = await signIn.finish(callbackUrl, { codeVerifier: record.codeVerifier, state: callbackUrl.searchParams.get('state') ?? '', nonce: record.nonce })
    } catch (e) {
      deps.log.warn('browser sign-in failed', { error: errorMessage(e) })
      return page(
        failurePage({
          title: 'Sign-in at the identity provider failed',
          message: isAppError(e) ? e.message : 'the sign-in could not be verified',
          retry: 'open the link again',
          status: 400,
        }),
      )
    }
    const link = await takeConsentLink(deps.store, record.flowId)
    if (!link) return page(flowGonePage(retry(undefined)))
    const caller = createCaller(snapshot, who.user, 'oidc', who.groups)
    if (!isPrincipal(caller, link.completer)) {
      await failConsent(consentDeps, { flowId: record.flowId, connection: link.connection, completer: link.completer, confirmedUser: who.user }, 'wrong-user')
      return page(wrongUserPage({ signedInAs: who.user, expected: describeOwner(link.completer), connection: link.connection }))
    }
    return toProvider(record.flowId, link, snapshot, who.user)
  }

  /** The provider came back: an error page, or redeem the code and say what was connected. */
  const providerAnswered = async (record: ProviderCallback, callbackUrl: URL, error: string | null, snapshot: ConfigSnapshot): Promise<BrowserAnswer> => {
    const onOutcomeError = (e: unknown): void => deps.log.warn('outcome not recorded', { error: errorMessage(e) })
    if (error) {
      const code = safeErrorCode(error)
      await failConsent(consentDeps, record, code, onOutcomeError)
      const connection = snapshot.connections.get(record.connection)
      return page(
        providerErrorPage({
          connection: record.connection,
          error: code,
          description: safeDescription(callbackUrl.searchParams.get('error_description')),
          redirectUri: redirectUri(snapshot.server.publicUrl),
          clientId: connection && connection.auth.type !== 'bearer_token' ? connection.auth.clientId : undefined,
          retry: retry(record),
        }),
      )
    }
    try {
      const granted = await completeConsent(consentDeps, snapshot, record, callbackUrl)
      if (granted.kind === 'account-mismatch') return page(accountMismatchPage({ ...granted, retry: retry(record) }))
      return page(
        grantedPage({
          connection: granted.connection,
          usedBy: granted.tokenUser === null ? `everyone granted USE CONNECTION on ${granted.connection}` : granted.tokenUser,
          completedBy: completedBy(record),
          providerAccount: granted.providerAccount,
          scope: granted.scope,
          expiresAt: granted.expiresAt,
          refreshToken: granted.refreshToken,
          warnings: granted.warnings,
          now: deps.now(),
        }),
      )
    } catch (e) {
      const reason = isAppError(e) ? (e.detail?.reason ?? e.code.toLowerCase()) : 'unexpected'
      await failConsent(consentDeps, record, reason, onOutcomeError)
      deps.log.warn('consent callback failed', { connection: record.connection, error: errorMessage(e) })
      const message = isAppError(e) && e.expose ? e.message : 'Keyway failed unexpectedly; the server log has details.'
      return page(
        failurePage({ title: 'The sign-in could not be completed', message, retry: retry(record), status: isAppError(e, 'FLOW_INVALID') ? 400 : 502 }),
      )
    }
  }

  return {
    async probe(flowId) {
      return isFlowId(flowId) ? (await readConsentLink(deps.store, flowId).catch(() => undefined)) !== undefined : false
    },

    async open(flowId) {
      const link = isFlowId(flowId) ? await readConsentLink(deps.store, flowId) : undefined
      if (!link) return page(flowGonePage(retry(undefined)))
      const snapshot = deps.snapshot()
      const connection = flowConnection(snapshot, link)
      const signIn = deps.signIn(snapshot)
      if (signIn) {
        // OIDC mode: who is at the browser is whoever the identity provider signs in.
        const codeVerifier = randomSecret()
        const nonce = randomSecret()
        const binding = randomSecret()
        const state = await putSignInCallback(deps.store, flowId, link, { codeVerifier, nonce, bindingHash: sha256Hex(binding), now: deps.now() })
        const url = await signIn.authorizationUrl({
          redirectUri: redirectUri(snapshot.server.publicUrl),
          state,
          nonce,
          codeChallenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        })
        return redirect(url, [bindCookie(state, binding, link, snapshot, deps.now())])
      }
      const client = await deps.clients.get(connection)
      const formToken = randomSecret()
      await putConfirmation(deps.store, flowId, link, formToken, deps.now())
      const confirm = confirmPage({
        connection: link.connection,
        description: connection.description,
        completer: describeOwner(link.completer),
        bindsTo: bindsTo(link),
        usedBy: link.tokenUser === null ? `everyone granted USE CONNECTION on ${link.connection}` : link.tokenUser,
        scopes: connection.auth.type === 'bearer_token' ? [] : connection.auth.scopes,
        providerOrigin: client.authorizationEndpoint ? new URL(client.authorizationEndpoint).origin : client.issuer,
        action: connectPath(flowId),
        formToken,
        expiresAt: link.expiresAt,
        now: deps.now(),
      })
      return page(confirm, [
        {
          name: CONFIRM_COOKIE,
          value: formToken,
          path: connectPath(flowId),
          maxAgeMs: link.expiresAt - deps.now(),
          sameSite: 'Strict',
          secure: isHttps(snapshot),
        },
      ])
    },

    async confirm(flowId, readToken, cookies) {
      const snapshot = deps.snapshot()
      if (deps.signIn(snapshot))
        return page(
          failurePage({
            title: 'Open the link instead',
            message: 'In this deployment the link confirms who you are by signing you in; open it with a plain GET.',
            retry: '',
            status: 405,
          }),
        )
      const posted = await readToken()
      if (posted.kind === 'too-large')
        return { ...page(failurePage({ title: 'The form was too large', message: posted.limit, retry: '', status: 413 })), closeConnection: true }
      if (!isFlowId(flowId) || !sameSecret(posted.token, cookies(CONFIRM_COOKIE) ?? ''))
        return page(
          failurePage({
            title: 'Confirmation failed',
            message: 'The confirmation form did not match this browser. Open the link again and press the button on that page.',
            retry: '',
            status: 403,
          }),
        )
      // The pair must also be one this server issued for this link, and it works once.
      if (!(await takeConfirmation(deps.store, flowId, posted.token)))
        return page(
          failurePage({
            title: 'Confirmation failed',
            message: 'This confirmation was not issued for this link or was already used. Open the link again and press the button on that page.',
            retry: '',
            status: 403,
          }),
        )
      // Everything that can fail for reasons other than the flow (discovery, say) happens before
      // the link is consumed, so such a failure leaves the link usable.
      const peek = await readConsentLink(deps.store, flowId)
      if (!peek) return page(flowGonePage(retry(undefined)))
      await deps.clients.get(flowConnection(snapshot, peek))
      const link = await takeConsentLink(deps.store, flowId)
      if (!link) return page(flowGonePage(retry(undefined)))
      const out = await toProvider(flowId, link, snapshot, undefined)
      return withCookie(out, { name: CONFIRM_COOKIE, value: '', path: connectPath(flowId), maxAgeMs: 0, sameSite: 'Strict', secure: isHttps(snapshot) })
    },

    async callback(requestUrl, cookies) {
      const snapshot = deps.snapshot()
      const query = requestUrl.searchParams
      const state = query.get('state') ?? ''
      const error = query.get('error')
      const record = isFlowId(state) ? await takeCallback(deps.store, state) : undefined
      if (!record) {
        // Without a live flow behind `state` nothing of the query is shown: anyone can make this
        // URL, and provider error text would be their text on Keyway's origin.
        if (error) return page(invalidCallbackPage({ redirectUri: redirectUri(snapshot.server.publicUrl) }))
        return page(flowGonePage(retry(undefined)))
      }
      const bound = cookies(bindCookieName(state))
      if (!bound || !sameSecret(sha256Hex(bound), record.bindingHash)) {
        if (record.purpose === 'provider-callback')
          await failConsent(consentDeps, record, 'browser-mismatch', (e) => deps.log.warn('outcome not recorded', { error: errorMessage(e) }))
        return page(
          failurePage({
            title: 'This sign-in was started in another browser',
            message: 'The answer from the provider reached a browser that did not start this sign-in, so it was refused.',
            retry: retry(record.purpose === 'provider-callback' ? record : undefined),
            status: 403,
          }),
        )
      }
      const clear: Cookie = { name: bindCookieName(state), value: '', path: CALLBACK_PATH, maxAgeMs: 0, sameSite: 'Lax', secure: isHttps(snapshot) }
      const callbackUrl = new URL(redirectUri(snapshot.server.publicUrl))
      callbackUrl.search = requestUrl.search
      if (record.purpose === 'sign-in-callback') return withCookie(await signedIn(record, callbackUrl, error, snapshot), clear)
      return withCookie(await providerAnswered(record, callbackUrl, error, snapshot), clear)
    },

    failed(e, route) {
      deps.log.warn('consent route failed', { path: route, error: errorMessage(e) })
      if (isAppError(e, 'FLOW_INVALID'))
        return page(failurePage({ title: 'This sign-in cannot continue', message: e.message, retry: retry(undefined), status: 400 }))
      if (isAppError(e) && e.expose) return page(failurePage({ title: 'The sign-in could not be completed', message: e.message, retry: retry(undefined) }))
      return page(
        failurePage({
          title: 'The sign-in could not be completed',
          message: 'Keyway failed unexpectedly; the server log has details.',
          retry: retry(undefined),
          status: 500,
        }),
      )
    },
  }
}

/** Shared: the owner runs `keyway authorize` again; per-user: the tool call makes a new link. */
export function defaultRetryHint(flow: { readonly connection: string; readonly method: string }): string {
  return flow.method === 'oauth_u2m_shared'
    ? `the connection's owner runs ${authorizeCommand(flow.connection)} again`
    : 'call the tool again from your agent to get a new link'
}

/** Whom a confirmed link binds the provider account to (the confirmation page's one sentence). */
function bindsTo(link: ConsentLink): { phrase: string; name: string } {
  if (link.tokenUser !== null) return { phrase: `Keyway user ${link.tokenUser}`, name: link.tokenUser }
  const c = link.completer
  if ('user' in c) return { phrase: `Keyway user ${c.user}`, name: c.user }
  if ('group' in c) return { phrase: `a member of Keyway group ${c.group}`, name: `a member of group ${c.group}` }
  return { phrase: `Keyway service principal ${c.servicePrincipal}`, name: `the owner of service principal ${c.servicePrincipal}` }
}

function page(p: Page, cookies: readonly Cookie[] = []): BrowserAnswer {
  return { kind: 'page', page: p, cookies }
}

/** A 303 See Other, so the browser follows with GET. */
function redirect(location: URL, cookies: readonly Cookie[]): BrowserAnswer {
  return { kind: 'redirect', location, cookies }
}

function withCookie(answer: BrowserAnswer, cookie: Cookie): BrowserAnswer {
  return { ...answer, cookies: [...answer.cookies, cookie] }
}

function bindCookieName(state: string): string {
  return `${BIND_COOKIE_PREFIX}${sha256Hex(state).slice(0, 16)}`
}

/** Binds a callback to this browser: SameSite=Lax, so it rides the provider's top-level redirect back. */
function bindCookie(state: string, value: string, link: ConsentLink, snapshot: ConfigSnapshot, now: number): Cookie {
  return { name: bindCookieName(state), value, path: CALLBACK_PATH, maxAgeMs: link.expiresAt - now, sameSite: 'Lax', secure: isHttps(snapshot) }
}

function isHttps(snapshot: ConfigSnapshot): boolean {
  return snapshot.server.publicUrl.startsWith('https://')
}

function sameSecret(a: string, b: string): boolean {
  if (a === '' || b === '') return false
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

function safeDescription(v: string | null): string | undefined {
  return (v && oneLine(v, MAX_DESCRIPTION_CHARS)) || undefined
}
