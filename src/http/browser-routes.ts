/**
 * The consent routes on HTTP (design.md §4, §7 steps 3–4): `GET|HEAD|POST /connect/:flowId` (the
 * link a person opens) and `GET /login/oauth/http.html` (the one OAuth redirect URI). What each
 * step does is `consent/browser-flow.ts`; this module only reads the request (path, form body
 * under its cap, cookies) and writes the answer (page, or 303 with flow-page headers so no
 * Referer leaks the flow id, and the cookies as `Set-Cookie`, always HttpOnly).
 * @module
 */
import type { Context, Hono } from 'hono'
import { getCookie } from 'hono/cookie'
import { createBrowserFlow, type BrowserAnswer, type BrowserFlowDeps, type Cookie, type PostedToken } from '../consent/browser-flow.js'
import { pageHeaders } from '../consent/pages.js'
import { connectPath } from '../consent/records.js'
import { CALLBACK_PATH } from '../credentials/redirect-uri.js'
import type { Runtime } from '../runtime.js'
import { closeAfterAnswer, describeCap, FORM_MAX_BYTES, readBody } from './body-limit.js'

/** The route dependencies of a running Keyway. */
export function browserRouteDeps(rt: Runtime, overrides: Partial<BrowserFlowDeps> = {}): BrowserFlowDeps {
  return {
    snapshot: () => rt.snapshot(),
    store: rt.store,
    clients: rt.oauth,
    signIn: (s) => rt.browserSignIn(s),
    audit: rt.audit,
    log: rt.log,
    now: rt.now,
    ...overrides,
  }
}

/**
 * The body cap of a browser route (`limitBody`): the consent confirmation form may post
 * `FORM_MAX_BYTES`, every other browser route takes no body.
 */
export function browserBodyCap(c: Context): number {
  return c.req.method === 'POST' && c.req.path.startsWith(connectPath('')) ? FORM_MAX_BYTES : 0
}

/** Mounts the consent routes on the app (through `AppOptions.extraRoutes`). */
export function mountBrowserRoutes(app: Hono, deps: BrowserFlowDeps): void {
  const flow = createBrowserFlow(deps)
  const guarded =
    (handler: (c: Context) => Promise<Response>) =>
    async (c: Context): Promise<Response> => {
      try {
        return await handler(c)
      } catch (e) {
        return respond(c, flow.failed(e, c.req.routePath))
      }
    }
  const cookies =
    (c: Context) =>
    (name: string): string | undefined =>
      getCookie(c, name)

  app.get(
    '/connect/:flowId',
    guarded(async (c) => {
      const flowId = c.req.param('flowId') ?? ''
      // HEAD (hono routes it here) is a side-effect-free probe: `keyway authorize` asks a Keyway
      // already on the port whether it sees the flow, i.e. uses the same store and key.
      if (c.req.method === 'HEAD') return new Response(null, { status: (await flow.probe(flowId)) ? 204 : 404, headers: pageHeaders() })
      return respond(c, await flow.open(flowId))
    }),
  )

  app.post(
    '/connect/:flowId',
    guarded(async (c) => {
      const readToken = async (): Promise<PostedToken> => {
        const body = await readBody(c, FORM_MAX_BYTES)
        if (body.kind === 'too-large') return { kind: 'too-large', limit: describeCap(FORM_MAX_BYTES) }
        // The confirmation form is urlencoded (consent/pages.ts); any other body carries no token.
        const urlencoded = /^application\/x-www-form-urlencoded\b/i.test(c.req.header('content-type') ?? '')
        return { kind: 'token', token: body.kind === 'ok' && urlencoded ? (new URLSearchParams(body.text).get('token') ?? '') : '' }
      }
      return respond(c, await flow.confirm(c.req.param('flowId') ?? '', readToken, cookies(c)))
    }),
  )

  app.get(
    CALLBACK_PATH,
    guarded(async (c) => respond(c, await flow.callback(new URL(c.req.url), cookies(c)))),
  )
}

/** A step's answer as a response: the page with its headers, or a 303 with the flow pages' headers. */
function respond(c: Context, answer: BrowserAnswer): Response {
  const headers = new Headers(answer.kind === 'page' ? answer.page.headers : pageHeaders())
  if (answer.kind === 'redirect') headers.set('location', answer.location.href)
  for (const cookie of answer.cookies) headers.append('set-cookie', setCookie(cookie))
  if (answer.kind === 'redirect') return new Response(null, { status: 303, headers })
  if (answer.closeConnection) for (const [k, v] of Object.entries(closeAfterAnswer(c))) headers.set(k, v)
  return new Response(answer.page.body, { status: answer.page.status, headers })
}

function setCookie(o: Cookie): string {
  const maxAge = Math.max(0, Math.floor(o.maxAgeMs / 1000))
  return `${o.name}=${o.value}; Path=${o.path}; Max-Age=${maxAge}; HttpOnly; SameSite=${o.sameSite}${o.secure ? '; Secure' : ''}`
}
