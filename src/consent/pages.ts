/**
 * The few HTML pages a person sees during a consent or sign-in flow (design.md §7): the
 * confirmation page, the "connected" page, and pages that explain a failure and its fix. Plain,
 * accessible HTML with inline style and no script; every interpolated value goes through the
 * `html` tag (hono/html), which escapes it. Each page comes with the headers it must be sent with (CSP with
 * `frame-ancestors 'none'`, no referrer, no caching). Shared by shared and per-user OAuth; this
 * module renders only and decides nothing.
 * @module
 */

import { html as honoHtml, raw as honoRaw } from 'hono/html'

/** Markup that is already safe to emit (hono's escaped string). Only `html` and `raw` make one. */
export type SafeHtml = ReturnType<typeof honoRaw>

/** What a page may interpolate: text and numbers (escaped), safe markup, nothing (`undefined`, `null`, `false`), or a list of these. */
type Interpolation = SafeHtml | string | number | undefined | null | false | readonly Interpolation[]

/**
 * Tagged template, hono/html's: literal parts are markup, every `${value}` is escaped (`& < > " '`
 * as entities, for element content and quoted attribute values) unless it is `SafeHtml`.
 */
export function html(strings: TemplateStringsArray, ...values: readonly Interpolation[]): SafeHtml {
  const out = honoHtml(strings, ...values)
  // hono returns a promise only when a value is one; `Interpolation` admits none.
  if (out instanceof Promise) throw new TypeError('html: a page interpolated a promise')
  return out
}

/** A page ready to send. */
export interface Page {
  readonly status: number
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
}

export type Tone = 'ok' | 'warn' | 'error' | 'neutral'

export interface PageOptions {
  readonly status?: number
  readonly title: string
  readonly tone?: Tone
  readonly body: SafeHtml
  /** Origins a form on this page may submit to, or redirect to after submission (besides 'self'). */
  readonly formActionOrigins?: readonly string[]
  readonly headers?: Readonly<Record<string, string>>
}

/**
 * Headers for every flow page: a CSP that allows nothing but inline style and forms to this origin
 * and the named provider origins (CSP3 `form-action` also covers the redirect after a POST),
 * `frame-ancestors 'none'` and `X-Frame-Options: DENY` against clickjacking (RFC 9700 §4.16), no
 * Referer (the URL carries the flow id or code), and no caching.
 */
export function pageHeaders(formActionOrigins: readonly string[] = []): Record<string, string> {
  const sources = ["'self'", ...new Set(formActionOrigins.filter((o) => /^https?:\/\/[^\s;,'"]+$/.test(o)))]
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': `default-src 'none'; style-src 'unsafe-inline'; form-action ${sources.join(' ')}; frame-ancestors 'none'; base-uri 'none'`,
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'x-content-type-options': 'nosniff',
  }
}

const TONE_COLOUR: Readonly<Record<Tone, string>> = { ok: '#1a7f37', warn: '#9a6700', error: '#cf222e', neutral: '#24292f' }

/** The page frame every flow page uses. */
export function renderPage(opts: PageOptions): Page {
  const colour = TONE_COLOUR[opts.tone ?? 'neutral']
  const body = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${opts.title} · Keyway</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#24292f;background:#f6f8fa;margin:0;padding:2rem 1rem}
main{max-width:40rem;margin:0 auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1.5rem 2rem}
h1{font-size:1.4rem;margin-top:0;color:${raw(colour)}}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:.1em .3em;border-radius:4px;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}dd{margin:0}
.warning{border:3px solid #cf222e;background:#ffebe9;padding:1rem;border-radius:6px;font-weight:600}
button{font:inherit;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #1a7f37;background:#1f883d;color:#fff;cursor:pointer}
button:focus{outline:3px solid #0969da;outline-offset:2px}
</style>
</head>
<body>
<main>
<h1>${opts.title}</h1>
${opts.body}
</main>
</body>
</html>
`
  return { status: opts.status ?? 200, body: body.toString(), headers: { ...pageHeaders(opts.formActionOrigins), ...opts.headers } }
}

/** Trusted markup (constants only, never input). */
export function raw(markup: string): SafeHtml {
  return honoRaw(markup)
}

/** `2026-11-28 10:15 UTC (in 59 minutes)` */
export function formatExpiry(expiresAt: number | undefined, now: number): string {
  if (expiresAt === undefined) return 'not stated by the provider'
  const when = new Date(expiresAt)
    .toISOString()
    .replace('T', ' ')
    .replace(/:\d\d\.\d+Z$/, ' UTC')
  const minutes = Math.round((expiresAt - now) / 60_000)
  const rel = minutes <= 0 ? 'expired' : minutes < 120 ? `in ${minutes} minute${minutes === 1 ? '' : 's'}` : `in ${Math.round(minutes / 60)} hours`
  return `${when} (${rel})`
}

export interface ConfirmPageInput {
  readonly connection: string
  readonly description: string | undefined
  /** `user alice@example.com` or `a member of group admins`. */
  readonly completer: string
  /**
   * Whom the provider account gets bound to, as a phrase and as a name: `Keyway user alice@…` /
   * `alice@…`, or for a group owner `a member of Keyway group admins` / `a member of group admins`.
   */
  readonly bindsTo: { readonly phrase: string; readonly name: string }
  /** Whose token it becomes: `everyone granted USE CONNECTION on it` (shared) or a user. */
  readonly usedBy: string
  readonly scopes: readonly string[]
  readonly providerOrigin: string
  readonly action: string
  readonly formToken: string
  readonly expiresAt: number
  readonly now: number
}

/** API-key mode: name the user and the connection, and ask for a deliberate click (one-time form token). */
export function confirmPage(p: ConfirmPageInput): Page {
  return renderPage({
    title: `Connect ${p.connection}`,
    formActionOrigins: [p.providerOrigin],
    body: html`<p>This link was made for <strong>${p.completer}</strong> to sign in to connection <code>${p.connection}</code>${
      p.description ? html` (${p.description})` : ''
    }.</p>
<dl>
<dt>Connection</dt><dd><code>${p.connection}</code></dd>
<dt>Made for</dt><dd>${p.completer}</dd>
<dt>The token will be used by</dt><dd>${p.usedBy}</dd>
<dt>Scopes requested</dt><dd>${p.scopes.length > 0 ? html`<code>${p.scopes.join(' ')}</code>` : 'the provider default'}</dd>
<dt>Provider</dt><dd><code>${p.providerOrigin}</code></dd>
<dt>Link expires</dt><dd>${formatExpiry(p.expiresAt, p.now)}</dd>
</dl>
<p class="warning">This connects the provider account you sign in with to ${p.bindsTo.phrase}. If you are not ${p.bindsTo.name}, stop.</p>
<form method="post" action="${p.action}">
<input type="hidden" name="token" value="${p.formToken}">
<button type="submit">Continue to the provider</button>
</form>`,
  })
}

export interface GrantedPageInput {
  readonly connection: string
  readonly usedBy: string
  readonly completedBy: string
  /** The provider account that signed in, when the provider named it. */
  readonly providerAccount: string | undefined
  readonly scope: string | undefined
  readonly expiresAt: number | undefined
  readonly refreshToken: boolean
  readonly warnings: readonly string[]
  readonly now: number
}

/** The callback's success page: what was connected, for whom, scopes, expiry, and a loud warning without a refresh token. */
export function grantedPage(p: GrantedPageInput): Page {
  const warn = !p.refreshToken
  return renderPage({
    title: warn ? `Connected ${p.connection}, but access will stop at first expiry` : `Connected ${p.connection}`,
    tone: warn ? 'warn' : 'ok',
    body: html`${
      warn
        ? html`<div class="warning" role="alert"><p>WARNING: the provider issued no refresh token. Access will stop at first expiry (${formatExpiry(p.expiresAt, p.now)}).</p>
<p>Add <code>offline_access</code> or the provider's equivalent (for Google, <code>authorizationParams: { access_type: offline, prompt: consent }</code>) to the connection's <code>auth</code> settings, then sign in again.</p></div>`
        : ''
    }
<dl>
<dt>Connection</dt><dd><code>${p.connection}</code></dd>
<dt>Signed in by</dt><dd>${p.completedBy}${p.providerAccount === undefined ? ' (the provider did not name the account)' : html` as provider account <strong>${p.providerAccount}</strong>`}</dd>
<dt>Used by</dt><dd>${p.usedBy}</dd>
<dt>Scopes granted</dt><dd>${p.scope ? html`<code>${p.scope}</code>` : 'not stated by the provider'}</dd>
<dt>Access token expires</dt><dd>${formatExpiry(p.expiresAt, p.now)}</dd>
<dt>Refresh token</dt><dd>${p.refreshToken ? 'yes: Keyway renews access automatically' : html`<strong>none</strong>`}</dd>
</dl>
${p.warnings.filter((w) => !warn || !w.startsWith('no refresh token')).map((w) => html`<p class="warning">${w}</p>`)}
<p>The tokens are stored encrypted on the Keyway server; they never reach the agent. You can close this window.</p>`,
  })
}

export interface ProviderErrorInput {
  readonly connection: string | undefined
  readonly error: string
  readonly description: string | undefined
  readonly redirectUri: string
  readonly clientId: string | undefined
  readonly retry: string
}

/** What each provider error means and how to fix it (RFC 6749 §4.1.2.1 and common vendor codes). */
function explainProviderError(p: ProviderErrorInput): { title: string; fix: SafeHtml } {
  switch (p.error) {
    case 'access_denied':
      return {
        title: 'Access was not granted',
        fix: html`<p>The sign-in was cancelled or consent was declined at the provider. Nothing was stored.</p><p>To try again: ${p.retry}.</p>`,
      }
    case 'admin_policy_enforced':
    case 'org_internal':
    case 'consent_required':
      return {
        title: 'Your organisation blocked this app',
        fix: html`<p>The provider's administrator policy does not allow this app${p.clientId ? html` (client <code>${p.clientId}</code>)` : ''} for your account. Ask the provider's administrator to allowlist ${p.clientId ? html`the client id <code>${p.clientId}</code>` : "Keyway's client id"} in the provider's admin console (Google Workspace: Security → Access and data control → API controls → Manage third-party app access), then ${p.retry}.</p>`,
      }
    case 'redirect_uri_mismatch':
      return {
        title: 'The redirect URI is not registered at the provider',
        fix: html`<p>Register exactly this redirect URI for the client${p.clientId ? html` <code>${p.clientId}</code>` : ''} at the provider (no trailing slash):</p><p><code>${p.redirectUri}</code></p><p><code>keyway redirect-uri</code> prints it. Then ${p.retry}.</p>`,
      }
    case 'invalid_scope':
      return {
        title: 'The provider refused the requested scopes',
        fix: html`<p>Check <code>auth.scopes</code> of the connection against what the client may request, then ${p.retry}.</p>`,
      }
    case 'unauthorized_client':
      return {
        title: 'The client may not use this sign-in',
        fix: html`<p>Allow the authorization code grant for the client${p.clientId ? html` <code>${p.clientId}</code>` : ''} at the provider, then ${p.retry}.</p>`,
      }
    case 'login_required':
    case 'interaction_required':
    case 'account_selection_required':
      return { title: 'The provider needs you to sign in', fix: html`<p>Sign in at the provider and ${p.retry}.</p>` }
    case 'server_error':
    case 'temporarily_unavailable':
      return { title: 'The provider had a problem', fix: html`<p>The provider could not complete the sign-in right now. Wait a moment and ${p.retry}.</p>` }
    default:
      return {
        title: 'The provider refused the sign-in',
        fix: html`<p>Check the connection's <code>auth</code> settings and the client's registration at the provider, then ${p.retry}.</p>`,
      }
  }
}

/** The callback received `error=` from the provider. */
export function providerErrorPage(p: ProviderErrorInput): Page {
  const { title, fix } = explainProviderError(p)
  return renderPage({
    status: 400,
    title,
    tone: 'error',
    body: html`<p>The provider answered <code>${p.error}</code>${p.connection ? html` for connection <code>${p.connection}</code>` : ''}${
      p.description ? html`: ${p.description}` : ''
    }.</p>${fix}`,
  })
}

/** Unknown, expired or already used link or callback. */
export function flowGonePage(retry: string): Page {
  return renderPage({
    status: 410,
    title: 'This link has expired or was already used',
    tone: 'error',
    body: html`<p>Sign-in links work once and for 10 minutes. Nothing was stored.</p><p>To get a new link: ${retry}.</p>`,
  })
}

/** The person at the browser is not the one the flow was made for. */
export function wrongUserPage(p: { readonly signedInAs: string; readonly expected: string; readonly connection: string }): Page {
  return renderPage({
    status: 403,
    title: 'This link was made for someone else',
    tone: 'error',
    body: html`<p>You are signed in as <strong>${p.signedInAs}</strong>, but this link for connection <code>${p.connection}</code> was made for <strong>${p.expected}</strong>. Nothing was stored and the link no longer works.</p>
<p>${p.expected} must open a new link while signed in as themselves.</p>`,
  })
}

/** `auth.accountMatch` refused the provider account: say which was used and which was expected. */
export function accountMismatchPage(p: {
  readonly connection: string
  readonly keywayUser: string
  readonly providerAccount: string | undefined
  readonly expected: string
  readonly retry: string
}): Page {
  return renderPage({
    status: 403,
    title: 'This provider account does not belong to this Keyway user',
    tone: 'error',
    body: html`<p>You signed in at the provider as <strong>${p.providerAccount ?? 'an account the provider did not name'}</strong>, but connection <code>${p.connection}</code> for Keyway user <strong>${p.keywayUser}</strong> requires ${p.expected}. Nothing was stored and the link no longer works.</p>
<p>To try again: ${p.retry}, and sign in at the provider with the expected account.</p>`,
  })
}

/** A callback without a live flow behind its `state`: nothing from the query is shown. */
export function invalidCallbackPage(p: { readonly redirectUri: string }): Page {
  return renderPage({
    status: 400,
    title: 'This sign-in link is not valid or has expired',
    tone: 'error',
    body: html`<p>Nothing was stored. Start again from where you got the link.</p>
<p>If you are setting up Keyway and the provider reported a problem before any sign-in started, check the connection's client registration at the provider; Keyway's redirect URI is <code>${p.redirectUri}</code> (<code>keyway redirect-uri</code> prints it).</p>`,
  })
}

/** Anything else that stopped a flow; `message` is an exposed `AppError` message (no secrets). */
export function failurePage(p: { readonly title: string; readonly message: string; readonly retry: string; readonly status?: number }): Page {
  return renderPage({
    status: p.status ?? 502,
    title: p.title,
    tone: 'error',
    body: html`<p>${p.message}</p><p>Nothing was stored. ${p.retry ? html`To try again: ${p.retry}.` : ''}</p>`,
  })
}
