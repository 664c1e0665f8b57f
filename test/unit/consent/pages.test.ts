/**
 * Flow pages: every interpolated value is escaped, every page carries the headers that keep it
 * out of frames, caches and Referer, and the no-refresh-token warning is impossible to miss.
 */
import { describe, expect, test } from 'vitest'
import { accountMismatchPage, confirmPage, grantedPage, html, invalidCallbackPage, pageHeaders, providerErrorPage } from '../../../src/consent/pages.js'

describe('pages', () => {
  test('html escapes interpolations and keeps nested safe markup [consent:escape]', () => {
    expect(html`${`<a href="x">'&'</a>`}`.toString()).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;')
    const inner = html`<b>${'<i>'}</b>`
    expect(html`<p>${inner}${'"'}</p>`.toString()).toBe('<p><b>&lt;i&gt;</b>&quot;</p>')
    expect(html`${[['a<', 1], undefined, null, false]}`.toString()).toBe('a&lt;1')
  })

  test('headers: CSP with frame-ancestors none and provider form-action, no framing, no referrer, no cache [consent:headers]', () => {
    const h = pageHeaders(['https://accounts.example.com', "https://bad'origin"])
    expect(h['content-security-policy']).toBe(
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://accounts.example.com; frame-ancestors 'none'; base-uri 'none'",
    )
    expect(h['x-frame-options']).toBe('DENY')
    expect(h['referrer-policy']).toBe('no-referrer')
    expect(h['cache-control']).toBe('no-store')
  })

  test('confirmation page names user and connection, escapes them, posts a form token', () => {
    const p = confirmPage({
      connection: 'crm',
      description: '<script>alert(1)</script>',
      completer: 'user a"b@example.com',
      bindsTo: { phrase: 'Keyway user a"b@example.com', name: 'a"b@example.com' },
      usedBy: 'everyone granted USE CONNECTION on crm',
      scopes: ['read', 'offline_access'],
      providerOrigin: 'https://idp.example',
      action: '/connect/abc',
      formToken: 'tok-123',
      expiresAt: 600_000,
      now: 0,
    })
    expect(p.body).not.toContain('<script>')
    expect(p.body).toContain('&lt;script&gt;')
    expect(p.body).toContain('user a&quot;b@example.com')
    expect(p.body).toContain(
      'This connects the provider account you sign in with to Keyway user a&quot;b@example.com. If you are not a&quot;b@example.com, stop.',
    )
    expect(p.body).toContain('<form method="post" action="/connect/abc">')
    expect(p.body).toContain('name="token" value="tok-123"')
    expect(p.headers['content-security-policy']).toContain("form-action 'self' https://idp.example;")
  })

  test('granted page without a refresh token carries a loud warning [consent:no-refresh-token-warning]', () => {
    const common = {
      connection: 'crm',
      usedBy: 'x',
      completedBy: 'alice',
      providerAccount: undefined,
      scope: 'read',
      expiresAt: 3_600_000,
      warnings: [],
      now: 0,
    }
    const warned = grantedPage({ ...common, refreshToken: false })
    expect(warned.body).toContain('role="alert"')
    expect(warned.body).toContain('Access will stop at first expiry')
    expect(warned.body).toContain('offline_access')
    expect(grantedPage({ ...common, refreshToken: true }).body).not.toContain('role="alert"')
  })

  test('granted page names the provider account next to the Keyway user, escaped [consent:escape]', () => {
    const p = grantedPage({
      connection: 'crm',
      usedBy: 'x',
      completedBy: 'carol',
      providerAccount: '<b>bob</b>@example.com',
      scope: undefined,
      expiresAt: undefined,
      refreshToken: true,
      warnings: [],
      now: 0,
    })
    expect(p.body).toContain('carol as provider account <strong>&lt;b&gt;bob&lt;/b&gt;@example.com</strong>')
  })

  test('account mismatch page names the account used and the one expected, escaped [consent:escape]', () => {
    const p = accountMismatchPage({
      connection: 'crm',
      keywayUser: 'carol',
      providerAccount: '<i>bob</i>',
      expected: 'a verified email address carol',
      retry: 'again',
    })
    expect(p.status).toBe(403)
    expect(p.body).toContain('as <strong>&lt;i&gt;bob&lt;/i&gt;</strong>')
    expect(p.body).toContain('requires a verified email address carol')
  })

  test("the invalid-callback page is generic: fixed text and Keyway's own redirect URI only [consent:callback-generic]", () => {
    const p = invalidCallbackPage({ redirectUri: 'https://kw.example/login/oauth/http.html' })
    expect(p.status).toBe(400)
    expect(p.body).toContain('This sign-in link is not valid or has expired')
    expect(p.body).toContain('<code>https://kw.example/login/oauth/http.html</code>')
  })

  test('redirect_uri_mismatch shows the exact URI to register', () => {
    const p = providerErrorPage({
      connection: 'crm',
      error: 'redirect_uri_mismatch',
      description: undefined,
      redirectUri: 'https://kw.example/login/oauth/http.html',
      clientId: 'cid',
      retry: 'run keyway authorize crm again',
    })
    expect(p.status).toBe(400)
    expect(p.body).toContain('<code>https://kw.example/login/oauth/http.html</code>')
  })

  test('per-user flows: each provider error page says what to do, with the per-user retry hint', () => {
    const page = (error: string, clientId: string | null = 'cid-123') =>
      providerErrorPage({
        connection: 'drive',
        error,
        description: undefined,
        redirectUri: 'https://kw.example/login/oauth/http.html',
        clientId: clientId ?? undefined,
        retry: 'call the tool again from your agent to get a new link',
      }).body
    expect(page('access_denied')).toContain('consent was declined at the provider. Nothing was stored.')
    expect(page('access_denied')).toContain('call the tool again from your agent to get a new link')
    expect(page('admin_policy_enforced')).toContain("allowlist the client id <code>cid-123</code> in the provider's admin console")
    expect(page('admin_policy_enforced', null)).toContain("allowlist Keyway&#39;s client id in the provider's admin console")
    expect(page('redirect_uri_mismatch')).toContain('Register exactly this redirect URI for the client <code>cid-123</code>')
  })
})
