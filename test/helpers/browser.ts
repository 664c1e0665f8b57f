/**
 * A real browser for tests that need one: Debian's Chromium, headless, driven by
 * `playwright-core`, and a helper that signs a user in at the test authorization server
 * (oidc-provider's devInteractions login and consent pages) the way a person would. Every launch
 * gets a fresh temporary profile (Playwright creates and deletes it) and every page its own
 * browser context, so no cookie or session leaks between tests. The browser may only reach
 * loopback: background services are switched off by flags, host names other than `localhost`
 * do not resolve, and any request a page makes to a non-loopback address is aborted before it
 * leaves (oidc-provider's pages import a web font from the internet, for one). This module owns
 * no Keyway or OAuth policy; callers decide what a redirect means.
 * @module
 */
import { existsSync } from 'node:fs'
import { chromium, type Browser, type BrowserContext, type Frame, type Page, type Request } from 'playwright-core'

/** Debian's `chromium` package; the project's machines and CI install it. */
export const CHROMIUM_PATH = '/usr/bin/chromium'

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Belt and braces for "only loopback": nothing but these two resolves, IP literals included,
  // so not even the browser's own background requests can leave the machine.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
] as const

/** How long one step of a sign-in (a page load or form submission) may take. */
const SIGN_IN_STEP_TIMEOUT_MS = 15_000
/** The devInteractions flow is login then consent; more steps than this means a loop. */
const MAX_SIGN_IN_STEPS = 6

let warned = false

/**
 * Whether to skip browser tests: only when Chromium is missing and this is not CI, with a loud
 * warning. In CI (`CI=true`) a missing Chromium is never a skip: the tests run and fail at
 * `launchBrowser()` with the reason, while the rest of the file still runs.
 * Use as `describe.skipIf(skipBrowserTests())(…)`.
 */
export function skipBrowserTests(): boolean {
  if (existsSync(CHROMIUM_PATH) || process.env.CI === 'true') return false
  if (!warned) {
    warned = true
    console.warn(`\n!!!!!!!!\n!!! SKIPPING BROWSER TESTS: ${missing()}. In CI (CI=true) this is a failure.\n!!!!!!!!\n`)
  }
  return true
}

function missing(): string {
  return `${CHROMIUM_PATH} is missing (apt-get install chromium)`
}

export interface TestBrowser extends AsyncDisposable {
  readonly browser: Browser
  /** A new isolated context (own cookies and storage), restricted to 127.0.0.1 and localhost. */
  newContext(): Promise<BrowserContext>
  /** A page in a new isolated context. */
  newPage(): Promise<Page>
  /** URLs of requests that were aborted because they left loopback, in order. */
  readonly blocked: readonly string[]
  close(): Promise<void>
}

/** Launches headless Chromium with a fresh profile. Close it (or `await using`) when done. */
export async function launchBrowser(): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM_PATH)) throw new Error(`browser tests cannot run: ${missing()}`)
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS] })
  const blocked: string[] = []
  const newContext = async (): Promise<BrowserContext> => {
    const context = await browser.newContext()
    await context.route('**/*', async (route) => {
      const url = route.request().url()
      if (isLoopbackUrl(url)) return route.continue()
      blocked.push(url)
      return route.abort('blockedbyclient')
    })
    return context
  }
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await browser.close()
  }
  return {
    browser,
    newContext,
    newPage: async () => (await newContext()).newPage(),
    blocked,
    close,
    [Symbol.asyncDispose]: close,
  }
}

export interface SignInOptions {
  /** devInteractions accepts any password. */
  readonly password?: string
  readonly stepTimeoutMs?: number
}

/**
 * Signs `user` in at oidc-provider's devInteractions pages and consents, starting from a page
 * that is showing (or has been redirected to) the provider's login or consent page, typically
 * right after `page.goto(authorizationUrl)`. It fills `login` and `password` and submits, then
 * submits the consent form, skipping whichever the provider does not show (an existing session,
 * an earlier grant). Returns the first URL outside the provider's origin the browser was sent
 * to: the client's redirect URI with `code`, `state` and `iss` (or `error`). That URL is
 * captured from the navigation request itself, so it is known even when nothing listens there.
 */
export async function signInAtProvider(page: Page, user: string, opts: SignInOptions = {}): Promise<URL> {
  const timeout = opts.stepTimeoutMs ?? SIGN_IN_STEP_TIMEOUT_MS
  await page.waitForLoadState('domcontentloaded', { timeout })
  const providerOrigin = new URL(page.url()).origin
  let left: URL | undefined
  let wake: (() => void) | undefined
  const onRequest = (r: Request): void => {
    if (left || !r.isNavigationRequest() || r.frame() !== page.mainFrame()) return
    const u = new URL(r.url())
    if (u.origin === providerOrigin) return
    left = u
    wake?.()
  }
  const onNavigated = (frame: Frame): void => {
    if (frame === page.mainFrame()) wake?.()
  }
  /** Until the main frame commits a document or a navigation leaves the provider. */
  const nextStep = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        wake = undefined
        reject(new Error(`sign-in: no navigation within ${timeout} ms (at ${page.url()})`))
      }, timeout)
      wake = () => {
        clearTimeout(timer)
        wake = undefined
        resolve()
      }
    })
  page.on('request', onRequest)
  page.on('framenavigated', onNavigated)
  try {
    for (let step = 0; step < MAX_SIGN_IN_STEPS && !left; step++) {
      const form = page.locator('form input[type="hidden"][name="prompt"]')
      const prompt = (await form.count()) > 0 ? await form.first().getAttribute('value', { timeout }) : null
      if (prompt !== 'login' && prompt !== 'consent')
        throw new Error(`sign-in: ${step === 0 ? 'no login or consent form' : 'stopped'} at ${page.url()}: ${await pageText(page)}`)
      if (prompt === 'login') {
        await page.fill('input[name="login"]', user, { timeout })
        await page.fill('input[name="password"]', opts.password ?? 'any', { timeout })
      }
      const stepped = nextStep()
      await page.click('form button[type="submit"]', { timeout, noWaitAfter: true })
      await stepped
      if (!left) await page.waitForLoadState('domcontentloaded', { timeout })
    }
    if (left) return left
    throw new Error(`sign-in: did not leave the provider after ${MAX_SIGN_IN_STEPS} steps (at ${page.url()})`)
  } finally {
    wake = undefined
    page.off('request', onRequest)
    page.off('framenavigated', onNavigated)
  }
}

async function pageText(page: Page): Promise<string> {
  const text = await page
    .locator('body')
    .innerText({ timeout: 1_000 })
    .catch(() => '')
  return text.replace(/\s+/g, ' ').slice(0, 300)
}

/**
 * `127.0.0.1` and `localhost` over http(s) or ws(s), the only hosts the browser resolves;
 * `data:`, `blob:` and `about:` never leave the browser.
 */
export function isLoopbackUrl(raw: string): boolean {
  const u = URL.parse(raw)
  if (!u) return false
  if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) return false
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost'
}
