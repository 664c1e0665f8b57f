/**
 * A narrow fast path for the one request that dominates traffic: a well-formed `tools/call`
 * (2026-07-28, or 2025-era served statelessly) of a connection whose credential never needs
 * the user's consent, an HTTP connection's or an upstream MCP server's tool alike. It answers
 * exactly as the SDK would (same result via `runToolCall`, same JSON-RPC envelope, same
 * `resultType` and `_meta`), and declines everything else, before any side effect, so the SDK
 * serves it. `test/integration/fast-path.test.ts` proves the answers are byte-identical.
 *
 * Why it exists: per request the SDK builds a server instance, a transport, a stream response
 * and validation errors; measured, that is most of Keyway's own cost (README, Performance).
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import { isRecord } from '../is-record.js'
import type { UpstreamEntry } from '../mcp-upstream/tools.js'
import { callTool, type CallDeps } from './call-tool.js'
import { runToolCall, SERVER_INFO, type CallScope } from './server.js'

const MODERN = '2026-07-28'
const PROTOCOL_VERSION_KEY = 'io.modelcontextprotocol/protocolVersion'
const CLIENT_CAPABILITIES_KEY = 'io.modelcontextprotocol/clientCapabilities'
const CLIENT_INFO_KEY = 'io.modelcontextprotocol/clientInfo'
/** Envelope keys a plain tools/call carries; anything else (progress tokens, log level, …) goes to the SDK. */
const ENVELOPE_KEYS: ReadonlySet<string> = new Set([PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY])
const RESULT_META = { 'io.modelcontextprotocol/serverInfo': SERVER_INFO }

export interface FastRequest {
  readonly header: (name: string) => string | undefined
  readonly body: unknown
}

/** The HTTP answer, or undefined when this request is not for the fast path. */
export interface FastAnswer {
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
}

/** What the SDK's stateless 2025-era transport sends with its one-event SSE answer. */
const LEGACY_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no' }
const MODERN_HEADERS = { 'content-type': 'application/json' }

export async function tryFastToolCall(req: FastRequest, scope: CallScope, callDeps: CallDeps): Promise<FastAnswer | undefined> {
  const upstream = callDeps.upstream
  const call = eligible(req, scope.snapshot, upstream ? (name) => upstream.tools.peek(scope.snapshot, name) : undefined)
  if (!call) return undefined
  // An upstream tool is called as the index said when it was peeked, so the answer is a result here too.
  const upstreamTool = call.upstream
  const step = upstreamTool
    ? await callTool(callDeps, scope.caller, upstreamTool.connection, call.args, {}, { kind: 'mcp', upstreamName: upstreamTool.upstreamName })
    : await runToolCall(callDeps, scope, call.name, call.args)
  // Eligibility excluded unknown tools and consent-capable connections, so this is a result.
  if (step.kind !== 'result') throw new Error(`fast path reached a ${step.kind} step`)
  if (call.era === 'legacy') {
    return { body: `event: message\ndata: ${JSON.stringify({ result: step.result, jsonrpc: '2.0', id: call.id })}\n\n`, headers: LEGACY_HEADERS }
  }
  const own = step.result._meta
  const result = { ...step.result, resultType: 'complete', _meta: isRecord(own) ? { ...own, ...RESULT_META } : RESULT_META }
  return { body: JSON.stringify({ result, jsonrpc: '2.0', id: call.id }), headers: MODERN_HEADERS }
}

export interface EligibleCall {
  readonly era: 'modern' | 'legacy'
  readonly id: string | number
  readonly name: string
  readonly args: unknown
  /** Set when the tool is an upstream MCP server's. */
  readonly upstream?: UpstreamEntry
}

/** 2025-era revisions whose tool results carry `structuredContent` unchanged. */
const LEGACY_VERSIONS: ReadonlySet<string> = new Set(['2025-11-25', '2025-06-18'])

/** Whether the fast path answers this request (exported for the differential test). */
export function eligible(req: FastRequest, snapshot: ConfigSnapshot, upstreamTool?: (name: string) => UpstreamEntry | undefined): EligibleCall | undefined {
  const version = req.header('mcp-protocol-version') ?? ''
  const era = version === MODERN ? 'modern' : LEGACY_VERSIONS.has(version) ? 'legacy' : undefined
  if (!era) return undefined
  if (era === 'modern' && req.header('mcp-method') !== 'tools/call') return undefined
  if (era === 'legacy' && (req.header('mcp-method') !== undefined || req.header('mcp-name') !== undefined)) return undefined
  const accept = req.header('accept') ?? ''
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) return undefined
  const body = req.body
  if (!isRecord(body) || body.jsonrpc !== '2.0' || body.method !== 'tools/call') return undefined
  if (Object.keys(body).length !== 4) return undefined
  const id = body.id
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id)))) return undefined
  const params = body.params
  if (!isRecord(params) || typeof params.name !== 'string') return undefined
  if (era === 'modern' && req.header('mcp-name') !== params.name) return undefined
  for (const key of Object.keys(params)) if (key !== 'name' && key !== 'arguments' && key !== '_meta') return undefined
  if (params.arguments !== undefined && !isRecord(params.arguments)) return undefined
  if (era === 'modern' ? !isPlainEnvelope(params._meta) : params._meta !== undefined) return undefined
  const own = snapshot.connections.get(params.name)
  // An upstream MCP server's tool is served here only once its index is built (a lookup, no wait).
  const upstream = own?.isMcpConnection && own.protocol === 'http' ? undefined : upstreamTool?.(params.name)
  const connection = upstream ? upstream.connection : own?.isMcpConnection && own.protocol === 'http' ? own : undefined
  if (!connection) return undefined
  // Per-user connections may need consent, which is asked differently per client: SDK path.
  if (connection.auth.type === 'oauth_u2m_per_user') return undefined
  return { era, id, name: params.name, args: params.arguments, ...(upstream ? { upstream } : {}) }
}

/** The 2026-07-28 request envelope with nothing else in `_meta` (no progress token, no log level). */
function isPlainEnvelope(meta: unknown): boolean {
  if (!isRecord(meta) || meta[PROTOCOL_VERSION_KEY] !== MODERN) return false
  const capabilities = meta[CLIENT_CAPABILITIES_KEY]
  if (!isRecord(capabilities) || !Object.values(capabilities).every(isRecord)) return false
  for (const key of Object.keys(meta)) if (!ENVELOPE_KEYS.has(key)) return false
  return meta[CLIENT_INFO_KEY] === undefined || isClientInfo(meta[CLIENT_INFO_KEY])
}

function isClientInfo(v: unknown): boolean {
  return isRecord(v) && typeof v.name === 'string' && typeof v.version === 'string'
}
