/**
 * The HTTP face of Keyway (design.md §4) as one hono app: `/mcp` behind Host/Origin checks and
 * bearer authentication, RFC 9728 metadata in OIDC mode, health and readiness (each check named,
 * judged by `readiness.ts`). Browser routes (consent links, the OAuth callback) are mounted by
 * the modules that own them through `extraRoutes`; stdio mode serves only those, health and
 * readiness (`browserOnly`). Every route sits behind the body gate of `body-limit.ts`; `/mcp`
 * reads its body through it and refuses JSON nested too deeply and JSON-RPC batches before the
 * SDK sees them. Failures no route handled are answered by `error-answer.ts` (one of the places
 * `errors.ts` lists): an `AppError` with the status of its code, anything else a logged 500 with
 * a generic body.
 * @module
 */
import {
  createMcpHandler,
  validateHostHeader,
  validateOriginHeader,
  type McpHttpHandler,
  type McpRequestContext,
  type ServerContext,
} from '@modelcontextprotocol/server'
import { Hono, type Context } from 'hono'
import type { ConfigSnapshot } from '../config/load.js'
import { authenticate } from '../identity/authenticate.js'
import { bearerChallenge, insufficientScopeChallenge, protectedResourceMetadata, resourceMetadataUrl } from '../identity/resource-metadata.js'
import type { Caller } from '../identity/caller.js'
import { isRecord } from '../is-record.js'
import { exceedsJsonDepth } from '../json-depth.js'
import { tryFastToolCall } from '../mcp/fast-path.js'
import { createServerFactory, type CallScope, type ServerDeps } from '../mcp/server.js'
import { assessReadiness, type ReadinessFacts } from '../readiness.js'
import type { Runtime } from '../runtime.js'
import { closeAfterAnswer, describeCap, limitBody, readBody, tooLargeJson } from './body-limit.js'
import { errorAnswer } from './error-answer.js'
import { browserBodyCap } from './browser-routes.js'

/**
 * Deepest JSON accepted at /mcp. A JSON-RPC envelope nests three levels before the tool's
 * arguments, which may nest `MAX_ARGUMENT_DEPTH` (32) more; deeper text is refused unparsed, since
 * whatever walks such a value afterwards (validation, serialisation) recurses.
 */
export const MAX_MCP_JSON_DEPTH = 64

/** JSON-RPC 2.0 §5.1 "Invalid Request": MCP 2025-06-18 and later removed batching. */
export const BATCH_REFUSED = { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: batching is not supported' } } as const

export interface AppOptions {
  readonly askForConsent?: ServerDeps['askForConsent']
  readonly awaitConsent?: ServerDeps['awaitConsent']
  /** Answer plain 2026-07-28 tool calls without the SDK's per-request machinery (default true). */
  readonly fastPath?: boolean
  /** Mounts browser routes (consent, callback) on the app. */
  readonly extraRoutes?: (app: Hono) => void
  /**
   * Told of every 2025-era `initialize` (params as sent) before it is served: per-request serving
   * never sees it, so what the client declared (URL elicitation) is remembered per user here.
   */
  readonly onLegacyInitialize?: (caller: Caller, params: unknown) => Promise<void>
  /**
   * Serve the browser routes only (`extraRoutes`, `/healthz`, `/readyz`): no `/mcp` and no
   * protected-resource metadata. Stdio mode, whose MCP is on stdin/stdout.
   */
  readonly browserOnly?: boolean
}

export interface KeywayApp {
  readonly app: Hono
  /** Undefined with `browserOnly`. */
  readonly mcp: McpHttpHandler | undefined
}

interface ScopeCarrier {
  readonly keywayScope?: CallScope
}

export function createApp(rt: Runtime, opts: AppOptions = {}): KeywayApp {
  const scopeOf = (ctx: McpRequestContext, reqCtx?: ServerContext): CallScope | undefined => {
    const extra = (reqCtx?.http?.authInfo?.extra ?? ctx.authInfo?.extra) as ScopeCarrier | undefined
    return extra?.keywayScope
  }
  const mcp = opts.browserOnly
    ? undefined
    : createMcpHandler(
        createServerFactory({
          scopeOf,
          callDeps: (s) => rt.callDeps(s),
          ...(opts.askForConsent ? { askForConsent: opts.askForConsent } : {}),
          ...(opts.awaitConsent ? { awaitConsent: opts.awaitConsent } : {}),
        }),
        { onerror: (e) => rt.log.debug('mcp request rejected', { error: e.message }) },
      )
  if (mcp) rt.onToolsChanged(() => mcp.notify.toolsChanged())

  const fastPath = opts.fastPath ?? true
  const app = new Hono()
  app.onError(errorAnswer(rt.log))
  // First of all: a body no route may receive is refused from the headers, before anything reads it.
  const maxRequestBytes = (): number => rt.snapshot().server.maxRequestBytes
  app.use(
    '*',
    limitBody(
      (c) => (c.req.path === '/mcp' ? maxRequestBytes() : browserBodyCap(c)),
      (c, max) => (c.req.path === '/mcp' ? c.json(jsonRpcError(describeCap(max)), 413, closeAfterAnswer(c)) : tooLargeJson(c, max)),
    ),
  )

  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  let lastVerdict = ''
  app.get('/readyz', async (c) => {
    const facts = await rt.readinessFacts()
    const { httpStatus, report } = assessReadiness(facts)
    // Logged when the verdict changes, not at every probe; the details (addresses, errors) only here.
    const failing = Object.entries(report.checks)
      .filter(([, check]) => !check.ok)
      .map(([name]) => name)
    const verdict = `${report.status}:${failing.join(',')}`
    if (verdict !== lastVerdict) {
      lastVerdict = verdict
      if (failing.length > 0) rt.log.warn('readiness checks failing', { status: report.status, failing, ...failureDetails(facts) })
      else rt.log.info('ready', { connections: report.connections })
    }
    return c.json(report, httpStatus, { 'cache-control': 'no-store' })
  })

  if (!mcp) {
    opts.extraRoutes?.(app)
    return { app, mcp }
  }

  app.get('/.well-known/oauth-protected-resource/mcp', (c) => {
    const snapshot = rt.snapshot()
    const oidc = snapshot.identity.oidc
    if (!oidc) return c.json({ error: 'not_found' }, 404)
    // `resource` is the URL clients reach, never the configured audience: RFC 9728 §3.3 makes
    // clients drop metadata whose resource differs from it, and IdPs that put their own API id
    // in `aud` (Okta authorization servers, Entra ID) need `audience` set to something else.
    const resource = `${snapshot.server.publicUrl}/mcp`
    return c.json(protectedResourceMetadata({ resource, issuer: oidc.issuer, scopes: oidc.requiredScopes }))
  })

  // DNS rebinding protection with the allowlist of the live snapshot (`server.allowedHosts` applies on reload), built once per snapshot.
  const allowlists = new WeakMap<ConfigSnapshot, string[]>()
  app.use('/mcp', async (c, next) => {
    const snapshot = rt.snapshot()
    let names = allowlists.get(snapshot)
    if (!names) allowlists.set(snapshot, (names = allowedHostnames(snapshot)))
    const check = validateHostHeader(c.req.header('host'), names)
    const origin = check.ok ? validateOriginHeader(c.req.header('origin'), names) : check
    if (!origin.ok) return c.json(jsonRpcError(origin.message), 403)
    return next()
  })
  app.all('/mcp', async (c: Context) => {
    const snapshot = rt.snapshot()
    const auth = await authenticate(c.req.header('authorization'), snapshot, rt.verifier(snapshot), { clientAddress: peerAddress(c) })
    if (!auth.ok) {
      rt.log.info('mcp request refused', { reason: auth.reason, detail: auth.detail })
      return unauthorized(c, snapshot, auth.reason === 'missing' ? undefined : 'invalid_token')
    }
    const missing = missingScopes(auth.caller, snapshot)
    if (missing.length > 0) return insufficientScope(c, snapshot)
    const max = snapshot.server.maxRequestBytes
    const body = await readJsonBody(c, max)
    if (body.kind === 'too-large') return c.json(jsonRpcError(describeCap(max)), 413, closeAfterAnswer(c))
    if (body.kind === 'invalid') return c.json({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }, 400)
    if (body.kind === 'too-deep')
      return c.json(
        { jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: JSON nested deeper than ${MAX_MCP_JSON_DEPTH} levels` } },
        400,
      )
    if (body.kind === 'json' && Array.isArray(body.value)) return c.json(BATCH_REFUSED, 400)
    const keywayScope: CallScope = { caller: auth.caller, snapshot }
    if (opts.onLegacyInitialize && body.kind === 'json' && isInitialize(body.value)) await opts.onLegacyInitialize(auth.caller, body.value.params)
    if (fastPath && body.kind === 'json') {
      const answer = await tryFastToolCall({ header: (n) => c.req.header(n), body: body.value }, keywayScope, rt.callDeps(snapshot))
      if (answer !== undefined) return c.body(answer.body, 200, answer.headers)
    }
    // A body that is not JSON was read (counted) all the same; the SDK gets it back to refuse it its way.
    const request = body.kind === 'other' ? new Request(c.req.raw, { body: body.text }) : c.req.raw
    return mcp.fetch(request, {
      // The caller's own token is never kept past authentication (design.md §5).
      authInfo: { token: 'redacted', clientId: auth.caller.via, scopes: [...auth.caller.scopes], extra: { keywayScope } },
      ...(body.kind === 'json' ? { parsedBody: body.value } : {}),
    })
  })

  opts.extraRoutes?.(app)
  return { app, mcp }
}

/** Host and Origin names accepted at /mcp: `server.allowedHosts`, the public URL's host and loopback. */
function allowedHostnames(snapshot: ConfigSnapshot): string[] {
  return [...new Set([...(snapshot.server.allowedHosts ?? []), new URL(snapshot.server.publicUrl).hostname, 'localhost', '127.0.0.1', '[::1]'])]
}

/** What failed, for the log only (never the public `/readyz` answer). */
function failureDetails(f: ReadinessFacts): Record<string, unknown> {
  return {
    ...(f.store.ok ? {} : { storeError: f.store.error }),
    ...(f.oidc && !f.oidc.ok ? { oidcError: f.oidc.error } : {}),
    ...(f.reload?.kind === 'rejected' ? { configProblems: f.reload.problems.length } : {}),
  }
}

/** The TCP peer of a request served by @hono/node-server; undefined in process (`app.request`). */
function peerAddress(c: Context): string | undefined {
  return (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress
}

/** RFC 6750 §3 / RFC 9728 §5.1 challenge; `resource_metadata` only in OIDC mode, where metadata is served. */
function unauthorized(c: Context, snapshot: ConfigSnapshot, error: 'invalid_token' | undefined): Response {
  const oidc = snapshot.identity.oidc
  const challenge = oidc
    ? bearerChallenge({ resourceMetadataUrl: resourceMetadataUrl(snapshot.server.publicUrl), ...(error ? { error } : {}), scope: oidc.requiredScopes })
    : `Bearer realm="keyway"${error ? `, error="${error}"` : ''}`
  return c.json(jsonRpcError('Unauthorized: a valid bearer token is required'), 401, { 'WWW-Authenticate': challenge })
}

function insufficientScope(c: Context, snapshot: ConfigSnapshot): Response {
  const challenge = insufficientScopeChallenge({
    resourceMetadataUrl: resourceMetadataUrl(snapshot.server.publicUrl),
    scope: snapshot.identity.oidc?.requiredScopes ?? [],
  })
  return c.json(jsonRpcError('Forbidden: insufficient scope'), 403, { 'WWW-Authenticate': challenge })
}

function missingScopes(caller: Caller, snapshot: ConfigSnapshot): string[] {
  const required = snapshot.identity.oidc?.requiredScopes ?? []
  if (caller.via !== 'oidc' || required.length === 0) return []
  return required.filter((s) => !caller.scopes.includes(s))
}

/** A single 2025-era `initialize` request (2026-07-28 has no handshake; batches are not looked into). */
function isInitialize(v: unknown): v is { readonly method: 'initialize'; readonly params?: unknown } {
  return isRecord(v) && v.method === 'initialize'
}

function jsonRpcError(message: string): Record<string, unknown> {
  return { jsonrpc: '2.0', id: null, error: { code: -32000, message } }
}

type JsonBody =
  | { kind: 'json'; value: unknown }
  | { kind: 'none' }
  /** A POST body that is not declared JSON, read under the cap like any other. */
  | { kind: 'other'; text: string }
  | { kind: 'too-large' }
  | { kind: 'too-deep' }
  | { kind: 'invalid' }

/** The /mcp body, read through the counting reader: never more than `maxBytes` held. */
async function readJsonBody(c: Context, maxBytes: number): Promise<JsonBody> {
  if (c.req.method !== 'POST') return { kind: 'none' }
  const read = await readBody(c, maxBytes)
  if (read.kind === 'too-large') return { kind: 'too-large' }
  if (read.kind === 'unreadable') return { kind: 'invalid' }
  if (!/^application\/json\b/i.test(c.req.header('content-type') ?? '')) return { kind: 'other', text: read.text }
  if (exceedsJsonDepth(read.text, MAX_MCP_JSON_DEPTH)) return { kind: 'too-deep' }
  try {
    return { kind: 'json', value: JSON.parse(read.text) }
  } catch {
    return { kind: 'invalid' }
  }
}
