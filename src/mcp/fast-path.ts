/**
 * A narrow fast path for the one request that dominates traffic: a well-formed 2026-07-28
 * `tools/call` of a connection whose credential never needs the user's consent. It answers
 * exactly as the SDK would (same result via `runToolCall`, same JSON-RPC envelope, same
 * `resultType` and `_meta`), and declines everything else, before any side effect, so the SDK
 * serves it. `test/integration/fast-path.test.ts` proves the answers are byte-identical.
 *
 * Why it exists: per request the SDK builds a server instance, a transport, a stream response
 * and validation errors; measured, that is most of Keyway's own cost (README, Performance).
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import type { CallDeps } from './call-tool.js'
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

/** The JSON response body, or undefined when this request is not for the fast path. */
export async function tryFastToolCall(req: FastRequest, scope: CallScope, callDeps: CallDeps): Promise<string | undefined> {
  const call = eligible(req, scope.snapshot)
  if (!call) return undefined
  const step = await runToolCall(callDeps, scope, call.name, call.args)
  // Eligibility excluded unknown tools and consent-capable connections, so this is a result.
  if (step.kind !== 'result') throw new Error(`fast path reached a ${step.kind} step`)
  const result = { ...step.result, resultType: 'complete', _meta: RESULT_META }
  return JSON.stringify({ result, jsonrpc: '2.0', id: call.id })
}

export interface EligibleCall {
  readonly id: string | number
  readonly name: string
  readonly args: unknown
}

/** Whether the fast path answers this request (exported for the differential test). */
export function eligible(req: FastRequest, snapshot: ConfigSnapshot): EligibleCall | undefined {
  if (req.header('mcp-method') !== 'tools/call' || req.header('mcp-protocol-version') !== MODERN) return undefined
  const accept = req.header('accept') ?? ''
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) return undefined
  const body = req.body
  if (!isRecord(body) || body.jsonrpc !== '2.0' || body.method !== 'tools/call') return undefined
  if (Object.keys(body).length !== 4) return undefined
  const id = body.id
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id)))) return undefined
  const params = body.params
  if (!isRecord(params) || typeof params.name !== 'string' || req.header('mcp-name') !== params.name) return undefined
  for (const key of Object.keys(params)) if (key !== 'name' && key !== 'arguments' && key !== '_meta') return undefined
  if (params.arguments !== undefined && !isRecord(params.arguments)) return undefined
  const meta = isRecord(params._meta) ? params._meta : undefined
  const capabilities = meta?.[CLIENT_CAPABILITIES_KEY]
  if (!isRecord(meta) || meta[PROTOCOL_VERSION_KEY] !== MODERN || !isRecord(capabilities)) return undefined
  if (!Object.values(capabilities).every(isRecord)) return undefined
  for (const key of Object.keys(meta)) if (!ENVELOPE_KEYS.has(key)) return undefined
  if (meta[CLIENT_INFO_KEY] !== undefined && !isClientInfo(meta[CLIENT_INFO_KEY])) return undefined
  const connection = snapshot.connections.get(params.name)
  if (!connection || !connection.isMcpConnection) return undefined
  // Per-user connections may need consent, which is asked differently per client: SDK path.
  if (connection.auth.type === 'oauth_u2m_per_user') return undefined
  return { id, name: params.name, args: params.arguments }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isClientInfo(v: unknown): boolean {
  return isRecord(v) && typeof v.name === 'string' && typeof v.version === 'string'
}
