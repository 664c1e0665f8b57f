/**
 * The orchestrator of one tool call, and the only place that knows the order: grants, then the
 * consent wait of a retry, then the arguments, then credentials, grants again, the upstream
 * request (HTTP through egress here, or `tools/call` on an upstream MCP server in
 * `upstream-call.ts`; the credential step both share is `credential-step.ts`), and one audit line. It returns either a finished `CallToolResult` or the fact that the caller must
 * consent first; how consent is asked for depends on the client and is decided in `server.ts`.
 * Tool-facing failures become results whose text starts with a stable code (README "Error
 * codes"); nothing here touches the MCP wire.
 * @module
 */
import type { ConfigSnapshot, Connection } from '../config/load.js'
import { AppError, isAppError, type ToolErrorCode } from '../errors.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { CredentialProvider } from '../credentials/credential.js'
import { decide, describePrincipal, type Decision } from '../grants/decide.js'
import { describeCaller, rebaseCaller, type Caller } from '../identity/caller.js'
import type { Logger } from '../log.js'
import { errorMessage } from '../log.js'
import { buildUpstreamUrl, filterCallerHeaders, selectResponseHeaders } from '../egress/build-url.js'
import type { ConcurrencyLimiter } from '../egress/limits.js'
import type { Egress, OutboundResponse } from '../egress/safe-fetch.js'
import { isRecord } from '../is-record.js'
import type { Breakers } from '../mcp-upstream/breaker.js'
import type { UpstreamMcpClient } from '../mcp-upstream/client.js'
import type { UpstreamTools } from '../mcp-upstream/tools.js'
import { exceedsJsonDepth } from '../json-depth.js'
import { decodeContent } from '../egress/content-encoding.js'
import { formsOf, redactBytes, redactJsonValue, redactText, type Forms } from '../redact.js'
import { CallStopped, type Shutdown, type StopReason } from '../shutdown.js'
import { withCredential, type CredentialSession, type Sent } from './credential-step.js'
import { toolError, type ToolResult } from './tool-result.js'
import { argumentLimitProblem, ToolInputSchema, type ToolInput, type ToolOutput } from './tool-schema.js'
import { callUpstreamTool, upstreamResult } from './upstream-call.js'

export interface CallDeps {
  readonly snapshot: ConfigSnapshot
  /**
   * The snapshot live right now. A call that waited (consent, a refresh lock, a token request)
   * is decided again on it just before anything is sent, so a REVOKE that landed meanwhile wins.
   */
  readonly live: () => ConfigSnapshot
  readonly credentials: CredentialProvider
  readonly egress: Egress
  /** In-flight limits per connection and per caller (`UPSTREAM_BUSY` over them). */
  readonly limits: ConcurrencyLimiter
  readonly audit: AuditLog
  readonly log: Logger
  readonly now: () => number
  /**
   * The process's shutdown state: while draining, new calls are refused; when the drain time is
   * up, calls in flight end with `UPSTREAM_UNAVAILABLE: server shutting down` and their upstream
   * requests are aborted through its signal (README "Shutdown and readiness").
   */
  readonly shutdown: Shutdown
  /** How tools of `protocol: mcp` connections are called (design.md §12); absent, only HTTP connections are served. */
  readonly upstream?: UpstreamCalls
}

/** The upstream MCP client, the index of upstream tools and the circuit breakers of `protocol: mcp` connections. */
export interface UpstreamCalls {
  readonly client: Pick<UpstreamMcpClient, 'callTool'>
  readonly tools: UpstreamTools
  readonly breakers: Breakers
}

/** The credential step of one tool call, with how its upstream request goes out. */
export interface CallSession extends CredentialSession {
  readonly egress: Egress
  /** Shutdown (at the end of the drain) and the call's own cancellation both cut the upstream request. */
  readonly signals: readonly AbortSignal[]
}

/**
 * What a tool call reaches: an HTTP connection, whose tool arguments are an HTTP request, or one
 * tool of the MCP server behind a `protocol: mcp` connection, whose arguments go to it unchanged.
 */
export type CallTarget = { readonly kind: 'http' } | { readonly kind: 'mcp'; readonly upstreamName: string }
const HTTP_TARGET: CallTarget = { kind: 'http' }

export type CallOutcome =
  | { readonly kind: 'result'; readonly result: ToolResult }
  | { readonly kind: 'consent-required'; readonly url: string; readonly flowId: string; readonly connection: Connection }

export interface CallHooks {
  /**
   * Runs after the caller was found to hold the grant and before the arguments are read: the
   * bounded wait of a retry that answers Keyway's own consent question (`mcp/consent.ts`). A
   * caller without the grant never gets here, so it cannot make Keyway wait or leak schema details.
   */
  readonly beforeCall?: (connection: Connection) => Promise<void>
  /**
   * The call's own cancellation (the MCP request's signal): when it aborts, the call ends and its
   * upstream requests are aborted, as on shutdown. The fast path passes none: reading the HTTP
   * request's signal would build the full `Request` it exists to avoid; its calls end at their deadline.
   */
  readonly signal?: AbortSignal
  /**
   * Notifications an upstream MCP server sends while it works on the call (progress, log
   * messages), relayed to the caller when its request asked for progress. HTTP connections send none.
   */
  readonly onNotification?: (n: { readonly method: string; readonly params?: Record<string, unknown> }) => void
  /** Request `_meta` entries passed on to an upstream MCP server (the caller's `progressToken`). */
  readonly meta?: Readonly<Record<string, unknown>>
}

const USER_AGENT = 'keyway/0.1'

/** What the one audit line of a call says about how it ended. */
interface Ending {
  status?: number
  error?: string
  /** Secret occurrences replaced in what the caller got back (README "Security model"). */
  redacted?: number
  /** Why the call was stopped before its end: refused while draining, aborted at shutdown, or cancelled. */
  stopped?: StopReason
}

/**
 * One `tools/call` of a connection, in this order: `decide` (a caller without the grant gets
 * `PERMISSION_DENIED` before anything else happens, whatever its arguments), the consent wait of
 * a retry (`hooks.beforeCall`), argument bounds and parsing, the credential, `decide` again on
 * the live snapshot when it changed meanwhile, the upstream request (HTTP, or `tools/call` on an
 * upstream MCP server), one forced refresh on an upstream 401. Exactly one audit line is written
 * per call, however it ends (README "Security model"), including a call refused while the server
 * drains or stopped by its shutdown or cancellation (`stopped`).
 */
export async function callTool(
  deps: CallDeps,
  caller: Caller,
  connection: Connection,
  args: unknown,
  hooks: CallHooks = {},
  target: CallTarget = HTTP_TARGET,
): Promise<CallOutcome> {
  const started = deps.now()
  let decision = decide(caller, connection, deps.snapshot.grants)
  let request: { method: string; path: string } = target.kind === 'mcp' ? { method: 'tools/call', path: '' } : requestOf(args)
  const ending: Ending = {}
  // The secrets of the credential once resolved: redacted from the result and from error texts.
  let forms: Forms | undefined
  let outcome: CallOutcome
  try {
    // Shutdown or cancellation answers at once; what `run` still does afterwards is kept by
    // `deps.shutdown` and its outcome dropped (this call's audit line is already written).
    outcome = await deps.shutdown.race(run(), hooks.signal)
  } catch (e) {
    outcome = result(failure(deps, e, caller, connection, forms))
    ending.error = errorCodeOf(e)
    if (e instanceof CallStopped) ending.stopped = e.stopped
  }
  deps.audit.record({
    type: 'tool.call',
    ...(caller.kind === 'service_principal' ? { servicePrincipal: caller.user } : { user: caller.user }),
    via: caller.via,
    connection: connection.name,
    ...(target.kind === 'mcp' ? { tool: target.upstreamName } : {}),
    method: request.method,
    path: auditPath(request.path),
    decision: decision.effect,
    ...(decision.effect === 'allow' ? { rule: decision.via === 'owner' ? 'owner' : `grant to ${describePrincipal(decision.principal)}` } : {}),
    authMethod: connection.auth.type,
    ...ending,
    durationMs: deps.now() - started,
  })
  return outcome

  async function run(): Promise<CallOutcome> {
    if (decision.effect === 'deny') {
      ending.error = 'PERMISSION_DENIED'
      return result(permissionDenied(caller, connection, decision))
    }
    if (deps.shutdown.draining) {
      // Refused before anything is sent, so the client may safely retry on another replica.
      ending.error = 'UPSTREAM_UNAVAILABLE'
      ending.stopped = 'draining'
      return result(toolError('UPSTREAM_UNAVAILABLE', new CallStopped('draining').message))
    }
    await hooks.beforeCall?.(connection)
    const outOfBounds = argumentLimitProblem(args, deps.snapshot.server.maxRequestBytes)
    if (outOfBounds) {
      ending.error = 'INVALID_REQUEST'
      return result(toolError('INVALID_REQUEST', outOfBounds))
    }
    const session: CallSession = {
      credentials: deps.credentials,
      limits: deps.limits,
      egress: deps.egress,
      caller,
      connection,
      signals: hooks.signal ? [deps.shutdown.signal, hooks.signal] : [deps.shutdown.signal],
      onCredential: (secrets) => (forms = formsOf(secrets)),
      stillAllowed: () => {
        // Decide last: whatever waited (consent, a lock, a token request), the grant must still hold
        // in the config live now. Same snapshot object, same grants: nothing to decide again.
        const live = deps.live()
        if (live === deps.snapshot) return true
        const current = live.connections.get(connection.name)
        decision = current ? decide(rebaseCaller(caller, live), current, live.grants) : { effect: 'deny', reason: 'no-grant' }
        return decision.effect === 'allow'
      },
    }
    if (target.kind === 'mcp') {
      const upstream = deps.upstream
      if (!upstream) throw new AppError('INTERNAL', 'upstream MCP calls are not wired')
      if (args !== undefined && !isRecord(args)) {
        ending.error = 'INVALID_REQUEST'
        return result(toolError('INVALID_REQUEST', 'arguments must be an object'))
      }
      const answered = await callUpstreamTool(session, upstream, target.upstreamName, args, hooks)
      return settle(answered, (answer) => {
        const shown = upstreamResult(answer, connection, forms)
        if (shown.error) ending.error = shown.error
        if (shown.redacted > 0) ending.redacted = shown.redacted
        return shown.result
      })
    }
    const parsed = ToolInputSchema.safeParse(args ?? {})
    if (!parsed.success) {
      ending.error = 'INVALID_REQUEST'
      return result(toolError('INVALID_REQUEST', describeIssues(parsed.error.issues)))
    }
    const input = parsed.data
    request = { method: input.method, path: input.path }
    return settle(await forward(session, input), (response) => {
      ending.status = response.status
      const shown = toToolResult(response, { forms, maxBytes: connection.maxResponseBytes })
      if (shown.redacted > 0) ending.redacted = shown.redacted
      return shown.result
    })
  }

  function settle<T>(sent: Sent<T>, show: (value: T) => ToolResult): CallOutcome {
    switch (sent.kind) {
      case 'revoked':
        ending.error = 'PERMISSION_DENIED'
        return result(permissionDenied(caller, connection, decision))
      case 'consent-required':
        ending.error = 'CONSENT_REQUIRED'
        return sent
      case 'sent':
        return result(show(sent.value))
      default: {
        const never: never = sent
        throw new Error(`unexpected send result ${String(never)}`)
      }
    }
  }
}

function permissionDenied(caller: Caller, connection: Connection, decision: Decision): ToolResult {
  if (decision.effect === 'deny' && decision.reason === 'needs-person') {
    return toolError(
      'PERMISSION_DENIED',
      `${describeCaller(caller)} cannot use connection "${connection.name}": it is ${connection.auth.type}, which calls with each person's own account, and a service principal has none`,
    )
  }
  const kind = caller.kind === 'service_principal' ? 'SERVICE PRINCIPAL' : 'USER'
  return toolError(
    'PERMISSION_DENIED',
    `${describeCaller(caller)} does not hold USE CONNECTION on connection "${connection.name}"; ` +
      `its owner (${describePrincipal(connection.owner)}) can grant it: ` +
      `keyway sql 'GRANT USE CONNECTION ON CONNECTION ${connection.name} TO ${kind} \`${caller.user}\`'`,
  )
}

/**
 * A thrown failure as the model sees it: the exposed `AppError` message, redacted of the call's
 * secrets in case a provider or network error quoted one, or a generic text.
 */
function failure(deps: CallDeps, e: unknown, caller: Caller, connection: Connection, forms: Forms | undefined): ToolResult {
  if (isAppError(e) && e.expose) return toolError(e.code as ToolErrorCode, forms ? redactText(e.message, forms).value : e.message)
  deps.log.error('tool call failed unexpectedly', { connection: connection.name, caller: describeCaller(caller), error: errorMessage(e) })
  return { content: [{ type: 'text', text: 'INTERNAL: unexpected failure; the server log has details' }], isError: true }
}

function errorCodeOf(e: unknown): string {
  return isAppError(e) && e.expose ? e.code : 'INTERNAL'
}

function result(r: ToolResult): CallOutcome {
  return { kind: 'result', result: r }
}

/** Method and path as far as the raw arguments tell (for the audit line of a refused call). */
function requestOf(args: unknown): { method: string; path: string } {
  const a = typeof args === 'object' && args !== null ? (args as Record<string, unknown>) : {}
  const method = typeof a.method === 'string' ? a.method.slice(0, 16) : 'GET'
  const path = typeof a.path === 'string' ? a.path : ''
  return { method, path }
}

async function forward(s: CallSession, input: ToolInput): Promise<Sent<OutboundResponse>> {
  const { connection } = s
  if (connection.readOnly && input.method !== 'GET') throw new AppError('INVALID_REQUEST', `connection "${connection.name}" is read-only: only GET is allowed`)
  const built = buildUpstreamUrl(connection, input.path, input.query)
  if (!built.ok) throw new AppError('EGRESS_BLOCKED', `path refused: ${built.reason}`)
  const filtered = filterCallerHeaders(input.headers)
  if (!filtered.ok) throw new AppError('INVALID_REQUEST', filtered.reason)
  const { body, contentType } = encodeBody(input)
  const send = (authorization: string): Promise<OutboundResponse> =>
    s.egress.send({
      url: built.url,
      method: input.method,
      headers: {
        'user-agent': USER_AGENT,
        accept: 'application/json, */*;q=0.5',
        ...(contentType ? { 'content-type': contentType } : {}),
        ...filtered.headers,
        // Set last so no caller header can replace them (README "Security model"): the injected
        // credential, and an uncompressed answer, which redaction can read byte by byte.
        'accept-encoding': 'identity',
        authorization,
      },
      ...(body === undefined ? {} : { body }),
      timeoutMs: connection.timeoutMs,
      maxResponseBytes: connection.maxResponseBytes,
      pool: connection.name,
      signals: s.signals,
    })
  return withCredential(s, send, (response) => response.status === 401)
}

function encodeBody(input: ToolInput): { body?: string; contentType?: string } {
  if (input.body === undefined || input.body === null) return {}
  if (input.method === 'GET') throw new AppError('INVALID_REQUEST', 'a GET request cannot carry a body')
  if (typeof input.body === 'string') return { body: input.body }
  return { body: JSON.stringify(input.body), contentType: 'application/json' }
}

/**
 * Deepest upstream JSON body handed to the model as parsed JSON. Real API answers nest a dozen
 * levels; a few hundred is far beyond any of them and far below a stack overflow.
 */
export const MAX_RESULT_JSON_DEPTH = 256

const TEXT_TYPES = /^(text\/|application\/(json|[\w.+-]+\+json|xml|[\w.+-]+\+xml|javascript|x-www-form-urlencoded|yaml|x-yaml|graphql))/i

const NO_FORMS: Forms = { text: [], bytes: [] }
const BACKSLASH_U = Buffer.from('\\u')

/**
 * Upstream response → `{ status, headers, body, truncated, redacted? }`; status >= 400 sets
 * `isError`. The body is redacted of `forms` as bytes, before it is decoded, and so are the
 * values of the headers passed on; `redacted` counts the replacements and appears only when
 * there were some.
 */
export function toToolResult(
  res: OutboundResponse,
  opts: { readonly forms?: Forms | undefined; readonly maxBytes: number },
): { result: ToolResult; redacted: number } {
  const forms = opts.forms ?? NO_FORMS
  const decoded = decodeContent(res, opts.maxBytes)
  const scrubbed = redactBytes(decoded.body, forms, decoded.truncated)
  let redacted = scrubbed.count
  const bytes = scrubbed.value
  const contentType = res.headers['content-type'] ?? ''
  let body: unknown
  if (bytes.length === 0) body = decoded.note ?? null
  else if (TEXT_TYPES.test(contentType) || contentType === '') {
    const text = bytes.toString('utf8')
    body = text
    // Too deep a JSON body stays text: parsed, it would overflow the stack of whatever walks it next.
    if (/json/i.test(contentType) && !decoded.truncated && !exceedsJsonDepth(text, MAX_RESULT_JSON_DEPTH)) {
      try {
        body = JSON.parse(text)
        // A `\u` escape can spell a secret the byte scan did not see; look again once decoded.
        if (forms.text.length > 0 && bytes.includes(BACKSLASH_U)) {
          const again = redactJsonValue(body, forms)
          body = again.value
          redacted += again.count
        }
      } catch {
        body = text
      }
    }
  } else body = bytes.toString('base64')
  const headers = selectResponseHeaders(res.headers)
  if (forms.text.length > 0)
    for (const name of Object.keys(headers)) {
      const r = redactText(headers[name] as string, forms)
      headers[name] = r.value
      redacted += r.count
    }
  const structured: ToolOutput = { status: res.status, headers, body, truncated: decoded.truncated, ...(redacted > 0 ? { redacted } : {}) }
  return {
    result: {
      content: [{ type: 'text', text: JSON.stringify(structured) }],
      structuredContent: structured,
      ...(res.status >= 400 ? { isError: true } : {}),
    },
    redacted,
  }
}

/** The path as audited: no query string or fragment, bounded length. */
function auditPath(p: string): string {
  const cut = p.split(/[?#]/, 1)[0] ?? ''
  return cut.length > 512 ? `${cut.slice(0, 512)}…` : cut
}

/** Zod issues as one line naming each bad argument (never its value). */
function describeIssues(issues: readonly { path: readonly PropertyKey[]; message: string; code: string; keys?: readonly string[] }[]): string {
  return issues
    .map((i) => {
      const at = i.path.length ? i.path.map(String).join('.') : 'arguments'
      return i.code === 'unrecognized_keys' && i.keys ? `${at}: unknown argument ${i.keys.join(', ')}` : `${at}: ${i.message}`
    })
    .join('; ')
}
