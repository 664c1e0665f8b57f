/**
 * The orchestrator of one tool call, and the only place that knows the order (design.md §11):
 * grants, then credentials, then egress, then audit. It returns either a finished
 * `CallToolResult` or the fact that the caller must consent first; how consent is asked for
 * depends on the client and is decided in `server.ts`. Tool-facing failures become results
 * whose text starts with a stable code (design.md §6); nothing here touches the MCP wire.
 * @module
 */
import type { ConfigSnapshot, Connection } from '../config/load.js'
import { AppError, isAppError, type ToolErrorCode } from '../errors.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { CredentialProvider, Credential } from '../credentials/credential.js'
import { decide, describePrincipal } from '../grants/decide.js'
import type { Caller } from '../identity/caller.js'
import type { Logger } from '../log.js'
import { errorMessage } from '../log.js'
import { buildUpstreamUrl, filterCallerHeaders, selectResponseHeaders } from '../egress/build-url.js'
import type { Egress, OutboundResponse } from '../egress/safe-fetch.js'
import type { ToolInput, ToolOutput } from './tool-schema.js'

export interface CallDeps {
  readonly snapshot: ConfigSnapshot
  readonly credentials: CredentialProvider
  readonly egress: Egress
  readonly audit: AuditLog
  readonly log: Logger
  readonly now: () => number
}

export interface ToolResult {
  readonly [key: string]: unknown
  readonly content: { type: 'text'; text: string }[]
  readonly structuredContent?: ToolOutput
  readonly isError?: boolean
}

export type CallOutcome =
  | { readonly kind: 'result'; readonly result: ToolResult }
  | { readonly kind: 'consent-required'; readonly url: string; readonly flowId: string; readonly connection: Connection }

const USER_AGENT = 'keyway/0.1'

/** A tool result that reports a failure the model can act on; the text starts with the code. */
export function toolError(code: ToolErrorCode, message: string): ToolResult {
  return { content: [{ type: 'text', text: `${code}: ${message}` }], isError: true }
}

export async function callTool(deps: CallDeps, caller: Caller, connection: Connection, input: ToolInput): Promise<CallOutcome> {
  const started = deps.now()
  const decision = decide(caller, connection, deps.snapshot.grants)
  const audit = (fields: { status?: number; error?: string }): void =>
    deps.audit.record({
      type: 'tool.call',
      user: caller.user,
      via: caller.via,
      connection: connection.name,
      method: input.method,
      path: auditPath(input.path),
      decision: decision.effect,
      ...(decision.effect === 'allow'
        ? { rule: decision.via === 'owner' ? 'owner' : `grant to ${describePrincipal(decision.principal)}` }
        : {}),
      authMethod: connection.auth.type,
      ...fields,
      durationMs: deps.now() - started,
    })

  if (decision.effect === 'deny') {
    audit({ error: 'PERMISSION_DENIED' })
    return result(
      toolError(
        'PERMISSION_DENIED',
        `user ${caller.user} does not hold USE CONNECTION on connection "${connection.name}"; ` +
          `its owner (${describePrincipal(connection.owner)}) can grant it: ` +
          `keyway sql 'GRANT USE CONNECTION ON CONNECTION ${connection.name} TO USER \`${caller.user}\`'`,
      ),
    )
  }
  try {
    const outcome = await forward(deps, caller, connection, input)
    if (outcome.kind === 'consent-required') audit({ error: 'CONSENT_REQUIRED' })
    else audit({ status: outcome.status })
    return outcome.kind === 'consent-required' ? outcome : result(toToolResult(outcome.response))
  } catch (e) {
    if (isAppError(e) && e.expose) {
      audit({ error: e.code })
      return result(toolError(e.code as ToolErrorCode, e.message))
    }
    deps.log.error('tool call failed unexpectedly', { connection: connection.name, user: caller.user, error: errorMessage(e) })
    audit({ error: 'INTERNAL' })
    return result({ content: [{ type: 'text', text: 'INTERNAL: unexpected failure; the server log has details' }], isError: true })
  }
}

function result(r: ToolResult): CallOutcome {
  return { kind: 'result', result: r }
}

type Forwarded =
  | { readonly kind: 'response'; readonly status: number; readonly response: OutboundResponse }
  | { readonly kind: 'consent-required'; readonly url: string; readonly flowId: string; readonly connection: Connection }

async function forward(deps: CallDeps, caller: Caller, connection: Connection, input: ToolInput): Promise<Forwarded> {
  if (connection.readOnly && input.method !== 'GET')
    throw new AppError('INVALID_REQUEST', `connection "${connection.name}" is read-only: only GET is allowed`)
  const built = buildUpstreamUrl(connection, input.path, input.query)
  if (!built.ok) throw new AppError('EGRESS_BLOCKED', `path refused: ${built.reason}`)
  const filtered = filterCallerHeaders(input.headers)
  if (!filtered.ok) throw new AppError('INVALID_REQUEST', filtered.reason)
  const { body, contentType } = encodeBody(input)

  let credential: Credential = await deps.credentials.resolve(connection, caller)
  if (credential.kind === 'consent-required') return { ...credential, connection }
  const send = (authorization: string): Promise<OutboundResponse> =>
    deps.egress.send({
      url: built.url,
      method: input.method,
      headers: {
        'user-agent': USER_AGENT,
        accept: 'application/json, */*;q=0.5',
        ...(contentType ? { 'content-type': contentType } : {}),
        ...filtered.headers,
        // Set last so no caller header can replace the injected credential (design.md §9).
        authorization,
      },
      ...(body === undefined ? {} : { body }),
      timeoutMs: connection.timeoutMs,
      maxResponseBytes: connection.maxResponseBytes,
    })

  let response = await send(credential.authorization)
  if (response.status === 401 && credential.refreshable) {
    // One forced refresh and one retry for a token the provider no longer accepts; never a loop.
    credential = await deps.credentials.resolve(connection, caller, { forceRefresh: true })
    if (credential.kind === 'consent-required') return { ...credential, connection }
    response = await send(credential.authorization)
  }
  return { kind: 'response', status: response.status, response }
}

function encodeBody(input: ToolInput): { body?: string; contentType?: string } {
  if (input.body === undefined || input.body === null) return {}
  if (input.method === 'GET') throw new AppError('INVALID_REQUEST', 'a GET request cannot carry a body')
  if (typeof input.body === 'string') return { body: input.body }
  return { body: JSON.stringify(input.body), contentType: 'application/json' }
}

const TEXT_TYPES = /^(text\/|application\/(json|[\w.+-]+\+json|xml|[\w.+-]+\+xml|javascript|x-www-form-urlencoded|yaml|x-yaml|graphql))/i

/** Upstream response → `{ status, headers, body, truncated }`; status >= 400 sets `isError`. */
export function toToolResult(res: OutboundResponse): ToolResult {
  const contentType = res.headers['content-type'] ?? ''
  let body: unknown
  if (res.body.length === 0) body = null
  else if (TEXT_TYPES.test(contentType) || contentType === '') {
    const text = res.body.toString('utf8')
    body = text
    if (/json/i.test(contentType) && !res.truncated) {
      try {
        body = JSON.parse(text)
      } catch {
        body = text
      }
    }
  } else body = res.body.toString('base64')
  const structured: ToolOutput = { status: res.status, headers: selectResponseHeaders(res.headers), body, truncated: res.truncated }
  return {
    content: [{ type: 'text', text: JSON.stringify(structured) }],
    structuredContent: structured,
    ...(res.status >= 400 ? { isError: true } : {}),
  }
}

/** The path as audited: no query string or fragment, bounded length. */
function auditPath(p: string): string {
  const cut = p.split(/[?#]/, 1)[0] ?? ''
  return cut.length > 512 ? `${cut.slice(0, 512)}…` : cut
}
