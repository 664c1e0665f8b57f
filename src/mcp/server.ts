/**
 * The MCP face of Keyway: a factory of low-level SDK `Server` instances with two handlers,
 * `tools/list` (only the connections this caller may use, in name order) and `tools/call`
 * (argument parsing, then the orchestrator). The same factory serves HTTP (a fresh instance per
 * request, both protocol eras) and stdio (one instance per connection). Tool definitions are
 * built once per config snapshot, not per request. How a missing consent is asked for depends
 * on the client and is decided here.
 * @module
 */
import {
  ProtocolError,
  ProtocolErrorCode,
  Server,
  type CallToolResult,
  type ClientCapabilities,
  type Tool,
  type InputRequiredResult,
  type McpRequestContext,
  type McpServerFactory,
  type ServerContext,
} from '@modelcontextprotocol/server'
import type { ConfigSnapshot } from '../config/load.js'
import { decide } from '../grants/decide.js'
import { callerKey, type Caller } from '../identity/caller.js'
import { callTool, type CallDeps, type CallHooks, type CallOutcome } from './call-tool.js'
import { toolError } from './tool-result.js'
import { toolDefinition, type ToolDefinition } from './tool-schema.js'

export const SERVER_INFO = { name: 'keyway', version: '0.1.0' } as const

/** Who is calling and on which config, as fixed for one request (HTTP) or read live (stdio). */
export interface CallScope {
  readonly caller: Caller
  readonly snapshot: ConfigSnapshot
}

export interface ServerDeps {
  /** The caller and snapshot for a request; undefined means unauthenticated (never happens behind the HTTP gate). */
  readonly scopeOf: (ctx: McpRequestContext, reqCtx?: ServerContext) => CallScope | undefined
  readonly callDeps: (snapshot: ConfigSnapshot) => CallDeps
  /** Turns "consent required" into what this client understands (design.md §7 step 2). */
  readonly askForConsent?: (
    outcome: Extract<CallOutcome, { kind: 'consent-required' }>,
    scope: CallScope,
    ctx: ServerContext,
    era: McpRequestContext['era'],
    call: ConsentCall,
  ) => Promise<ToolResultOrInput>
  /**
   * Runs once a `tools/call` is known to be allowed, before its arguments are read: when the
   * request is a retry answering Keyway's own consent question, waits a bounded time for the
   * consent to land, so the call then finds the token (README "Per-user connections").
   */
  readonly awaitConsent?: (scope: CallScope, ctx: ServerContext, connection: string) => Promise<void>
}

/** What the consent hook gets besides the outcome: what the client declared. */
export interface ConsentCall {
  /**
   * What the client declared: at `initialize` on a live 2025-era connection (stdio), from the
   * request envelope on the 2026-07-28 era; undefined on per-request 2025-era HTTP serving.
   */
  readonly clientCapabilities: ClientCapabilities | undefined
}

type ToolResultOrInput = CallToolResult | InputRequiredResult

const listCache = new WeakMap<ConfigSnapshot, Map<string, readonly ToolDefinition[]>>()

/** The tools a caller may use, cached per snapshot and set of (user, groups). */
export function visibleTools(scope: CallScope): readonly ToolDefinition[] {
  const { caller, snapshot } = scope
  let perSnapshot = listCache.get(snapshot)
  if (!perSnapshot) listCache.set(snapshot, (perSnapshot = new Map<string, readonly ToolDefinition[]>()))
  const key = `${callerKey(caller)}\u0000${[...caller.groups].sort().join('\u0000')}`
  let tools = perSnapshot.get(key)
  if (!tools) {
    tools = snapshot.tools.filter((c) => decide(caller, c, snapshot.grants).effect === 'allow').map(toolDefinition)
    if (perSnapshot.size > 10_000) perSnapshot.clear()
    perSnapshot.set(key, tools)
  }
  return tools
}

export function createServerFactory(deps: ServerDeps): McpServerFactory {
  return (factoryCtx) => {
    const server = new Server(SERVER_INFO, {
      capabilities: { tools: { listChanged: true } },
      instructions:
        'Each tool is one external API connection. Call it with { method, path, query, headers, body }; ' +
        'Keyway adds the credential. Errors start with a code such as PERMISSION_DENIED or CONSENT_REQUIRED.',
      cacheHints: { 'tools/list': { ttlMs: 0, cacheScope: 'private' } },
    })
    const scopeFor = (ctx: ServerContext): CallScope => {
      const scope = deps.scopeOf(factoryCtx, ctx)
      if (!scope) throw new ProtocolError(ProtocolErrorCode.InvalidRequest, 'unauthenticated')
      return scope
    }
    server.setRequestHandler('tools/list', async (_req, ctx) => ({ tools: (await listTools(deps.callDeps, scopeFor(ctx))) as Tool[] }))
    server.setRequestHandler('tools/call', async (req, ctx) => {
      const scope = scopeFor(ctx)
      const awaitConsent = deps.awaitConsent
      const progressToken = ctx.mcpReq._meta?.progressToken
      const step = await runToolCall(deps.callDeps(scope.snapshot), scope, req.params.name, req.params.arguments, {
        ...(awaitConsent ? { beforeCall: (connection) => awaitConsent(scope, ctx, connection.name) } : {}),
        // A cancelled request (notifications/cancelled, a closed connection) aborts its upstream request.
        signal: ctx.mcpReq.signal,
        // A caller that asked for progress gets what an upstream MCP server reports while it works.
        ...(progressToken === undefined
          ? {}
          : {
              meta: { progressToken },
              onNotification: (n) => {
                ctx.mcpReq.notify(n as Parameters<typeof ctx.mcpReq.notify>[0]).catch(() => undefined)
              },
            }),
      })
      switch (step.kind) {
        case 'unknown-tool':
          throw new ProtocolError(ProtocolErrorCode.InvalidParams, `unknown tool "${req.params.name}"`)
        case 'result':
          return step.result as CallToolResult
        case 'consent-required':
          if (deps.askForConsent) return deps.askForConsent(step, scope, ctx, factoryCtx.era, { clientCapabilities: server.getClientCapabilities() })
          return consentText(step.url, step.connection.name)
        default: {
          const never: never = step
          throw new Error(`unexpected step ${String(never)}`)
        }
      }
    })
    return server
  }
}

export type ToolCallStep = { readonly kind: 'unknown-tool' } | CallOutcome

/**
 * One `tools/call` up to the point where the client's way of asking for consent matters: tool
 * lookup, then the orchestrator (which decides before it parses the arguments or waits for a
 * consent). Shared by the SDK handler above and the fast path, so both answer with the same
 * result for the same request.
 */
export async function runToolCall(callDeps: CallDeps, scope: CallScope, name: string, args: unknown, hooks: CallHooks = {}): Promise<ToolCallStep> {
  const connection = scope.snapshot.connections.get(name)
  if (connection?.isMcpConnection && connection.protocol === 'http') return callTool(callDeps, scope.caller, connection, args, hooks)
  // Tools of upstream MCP servers: looked up by exposed name in the index, never parsed back.
  const entry = scope.snapshot.mcpConnections.length > 0 ? await callDeps.upstream?.tools.find(scope, name) : undefined
  if (!entry) return { kind: 'unknown-tool' }
  return callTool(callDeps, scope.caller, entry.connection, args, hooks, { kind: 'mcp', upstreamName: entry.upstreamName })
}

/**
 * `tools/list` for a caller: its HTTP tools, then the tools of the upstream MCP servers it may
 * use. An unavailable upstream leaves the others listed, unless its `mcp.onUnavailable` is
 * `error`; a caller all of whose tools come from upstreams that failed gets an error, not an
 * empty list, so a client does not conclude it has no tools.
 */
export async function listTools(callDeps: (snapshot: ConfigSnapshot) => CallDeps, scope: CallScope): Promise<readonly unknown[]> {
  const own = visibleTools(scope)
  const upstream = callDeps(scope.snapshot).upstream
  if (scope.snapshot.mcpConnections.length === 0 || !upstream) return own
  const listing = await upstream.tools.list(scope)
  const failing = listing.unavailable.find((u) => u.connection.mcp?.onUnavailable === 'error')
  const describe = (u: (typeof listing.unavailable)[number]): string => `tools of "${u.connection.name}" are unavailable: ${u.problem}`
  if (failing) throw listError(describe(failing))
  if (own.length === 0 && listing.sources > 0 && listing.unavailable.length === listing.sources) throw listError(listing.unavailable.map(describe).join('; '))
  return [...own, ...listing.tools]
}

function listError(message: string): ProtocolError {
  return new ProtocolError(ProtocolErrorCode.InternalError, `UPSTREAM_UNAVAILABLE: ${message}`)
}

/**
 * What every consent fallback says: the `CONSENT_REQUIRED` result's text, and the -32042 error's
 * message (the same words, so a client that shows only the message still shows the link).
 */
export function consentErrorMessage(url: string, connection: string): string {
  return `connect your account to "${connection}" first: open ${url} in a browser, sign in, then retry after authorizing`
}

/** The fallback every client understands: a tool error carrying the link. */
export function consentText(url: string, connection: string): CallToolResult {
  return toolError('CONSENT_REQUIRED', consentErrorMessage(url, connection))
}
