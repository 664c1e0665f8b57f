/**
 * A person going through a consent link in a real browser, for the consent tests: opens the link
 * in a fresh Chromium context, passes Keyway's OIDC sign-in (OIDC mode) or presses the
 * confirmation button (API-key mode), signs in and consents at the test provider as the given
 * user, and returns the page Keyway's callback ended on. It decides nothing; tests assert.
 * @module
 */
import { CALLBACK_PATH } from '../../src/credentials/redirect-uri.js'
import { signInAtProvider, type TestBrowser } from './browser.js'

export interface BrowserRun {
  /** HTTP status of the page the flow ended on (Keyway's callback page, or the wrong-user page). */
  readonly status: number
  readonly text: string
  /** Navigations to the redirect URI, in order (the last is the provider's answer). */
  readonly callbacks: readonly string[]
}

/**
 * A person opens a consent link in a fresh browser and goes through what Keyway and the
 * provider (at `providerOrigin`) show, as `user`: OIDC mode signs them in at the identity
 * provider first; API-key mode shows the confirmation page, whose button they press.
 */
export async function consentInBrowser(browser: TestBrowser, providerOrigin: string, link: string, user: string): Promise<BrowserRun> {
  const context = await browser.newContext()
  const page = await context.newPage()
  const navigations: { readonly url: URL; readonly status: number }[] = []
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push({ url: new URL(r.url()), status: r.status() })
  })
  /** Index of the first navigation from `from` on that matches. */
  const navigation = async (from: number, match: (n: { readonly url: URL; readonly status: number }) => boolean): Promise<number> => {
    for (let waited = 0; waited < 30_000; waited += 25) {
      const i = navigations.findIndex((n, j) => j >= from && match(n))
      if (i >= 0) return i
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error(`no such navigation; seen: ${navigations.map((n) => `${n.status} ${n.url.pathname}`).join(', ')}`)
  }
  const isCallback = (n: { readonly url: URL }): boolean => n.url.pathname === CALLBACK_PATH
  try {
    await page.goto(link)
    if (new URL(page.url()).origin !== providerOrigin) {
      // API-key mode: the confirmation page.
      await page.click('button[type="submit"]')
      await page.waitForURL((u) => u.origin === providerOrigin, { timeout: 10_000 })
    }
    await signInAtProvider(page, user)
    let last = await navigation(0, isCallback)
    if (navigations[last]?.status === 303) {
      // OIDC mode, the right user: Keyway sends the browser on to the connection's own consent.
      const next = await navigation(
        last + 1,
        (n) => isCallback(n) || (n.url.origin === providerOrigin && n.url.pathname.startsWith('/interaction/') && n.status === 200),
      )
      const at = navigations[next]
      if (at && !isCallback(at)) {
        await page.waitForURL(at.url.href, { waitUntil: 'domcontentloaded', timeout: 10_000 })
        await signInAtProvider(page, user)
        last = await navigation(next + 1, isCallback)
      } else last = next
    }
    const final = navigations[last]
    await page.waitForURL((u) => u.pathname === CALLBACK_PATH, { waitUntil: 'domcontentloaded', timeout: 10_000 })
    const callbacks = navigations.filter(isCallback).map((n) => n.url.href)
    return { status: final?.status ?? 0, text: await page.locator('main').innerText(), callbacks }
  } finally {
    await context.close()
  }
}
