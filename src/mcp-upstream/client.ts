/**
 * Keyway as an MCP client of the upstream MCP servers behind `protocol: mcp` connections: it speaks
 * Streamable HTTP to them in either protocol era (2026-07-28 statelessly after `server/discover`, or
 * the 2025 `initialize` handshake with a session), keeps one upstream session per (connection,
 * credential), and hands results back exactly as received. It is written by hand rather than on the
 * SDK's client because every request must go through Keyway's egress (allowlist, SSRF guard with DNS
 * pinning, deadline, size cap, per-connection socket pool) with a credential chosen per call, and
 * because the SDK client re-parses results through its schemas, where Keyway must pass them through
 * unchanged. It owns the wire format, the era of each connection and the session pool; it must not
 * decide which credential to send (the caller gives the whole Authorization value), nor put a header
 * value, token or body in an error. Requests the upstream sends on a stream (elicitation, sampling,
 * roots) are not relayed: they get no answer and are ignored, as are responses to ids not ours.
 * @module
 * @see https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#streamable-http
 */
import type { Connection } from '../config/load.js'
import type { Egress, OutboundResponse } from '../egress/safe-fetch.js'
import { sha256Hex } from '../encoding.js'
import { AppError } from '../errors.js'
import { isRecord } from '../is-record.js'
import { createSseParser } from './sse.js'

export interface UpstreamTarget {
  /** The endpoint is `connection.origin + connection.basePath`, used as is (trailing slash included). */
  readonly connection: Connection
  /** The whole Authorization header value to send, e.g. `Bearer abc`. */
  readonly authorization: string
}

export interface UpstreamRequestOptions {
  /** Any abort cuts the upstream request (passed to egress). */
  readonly signals?: readonly AbortSignal[]
  /** Upstream notifications that arrive on this request's SSE stream (notifications/progress, notifications/message), in order, as they arrive. */
  readonly onNotification?: (n: { readonly method: string; readonly params?: Record<string, unknown> }) => void
  /** Extra params._meta entries to forward (e.g. { progressToken }). */
  readonly meta?: Readonly<Record<string, unknown>>
}

export type UpstreamAnswer =
  | { readonly kind: 'result'; readonly result: Record<string, unknown> }
  | { readonly kind: 'error'; readonly code: number; readonly message: string; readonly data?: unknown }
  | { readonly kind: 'http'; readonly status: number; readonly headers: Readonly<Record<string, string>> }

export interface UpstreamMcpClient {
  /** tools/list, following nextCursor (bounded: at most 50 pages) and concatenating `tools`; result = { tools: [...] } (other fields of the last page kept). */
  listTools(target: UpstreamTarget, opts?: UpstreamRequestOptions): Promise<UpstreamAnswer>
  callTool(target: UpstreamTarget, name: string, args: Record<string, unknown> | undefined, opts?: UpstreamRequestOptions): Promise<UpstreamAnswer>
  /** Whether the upstream declared tools.listChanged (after the first request to it); undefined before. */
  declaresListChanged(connection: Connection): boolean | undefined
  /**
   * Opens the upstream's change stream (2025-era: GET on the session; 2026-07-28: a `subscriptions/listen` POST asking for toolsListChanged)
   * and calls onToolsChanged for each notifications/tools/list_changed. Resolves when the stream ends (upstream closed it, deadline, abort);
   * the caller reopens it. Never rejects (a failure just resolves). An upstream that refuses the stream (a 2025-era server without
   * sessions answers 405) makes it resolve at once, so the caller paces its reopening.
   */
  listen(target: UpstreamTarget, onToolsChanged: () => void, signal: AbortSignal): Promise<void>
  /** Forgets sessions of a connection (it left the config or changed); best effort DELETE on 2025-era sessions. */
  forget(connectionName: string): void
  close(): Promise<void>
}

/** The stateless protocol revision tried first (`server/discover`). */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'
/** Offered in `initialize`; the others are accepted when the upstream answers with them. */
export const LEGACY_PROTOCOL_VERSIONS: readonly string[] = ['2025-11-25', '2025-06-18', '2025-03-26']
/** Bound on pages of one tools/list: a cursor loop of a broken upstream ends here. */
export const MAX_TOOL_LIST_PAGES = 50
/** Bound on pooled sessions; the oldest is dropped (its upstream session just expires there). */
export const MAX_SESSIONS = 10_000
/** One change stream lasts at most this long, then `listen` resolves and the caller reopens it (proxies cut idle streams anyway). */
export const LISTEN_DEADLINE_MS = 5 * 60_000
/** Deadline of the best-effort DELETE of a forgotten session. */
const DELETE_TIMEOUT_MS = 5_000

const META_PROTOCOL_VERSION = 'io.modelcontextprotocol/protocolVersion'
const META_CLIENT_CAPABILITIES = 'io.modelcontextprotocol/clientCapabilities'
const META_CLIENT_INFO = 'io.modelcontextprotocol/clientInfo'
// HTTP answers to `server/discover` that mean "not a 2026-07-28 server" (a 2025-era server without
// the request's session, or without POST routing for it); 401, 403 and 5xx decide nothing.
const PROBE_LEGACY_STATUSES: ReadonlySet<number> = new Set([400, 404, 405])

type JsonRpcMessage = Record<string, unknown>

interface Session {
  readonly key: string
  readonly connection: string
  readonly version: string
  readonly sessionId: string | undefined
  readonly target: UpstreamTarget
}

interface ConnectionState {
  era: 'modern' | 'legacy' | undefined
  listChanged: boolean | undefined
  probing: Promise<'modern' | 'legacy' | UpstreamAnswer> | undefined
}

/** What one POST or GET brought back: the answer to our id, or an HTTP answer, plus the session header. */
interface Exchange {
  readonly answer: UpstreamAnswer
  readonly status: number
  readonly sessionId: string | undefined
}

export function createUpstreamMcpClient(deps: { readonly egress: Egress; readonly clientInfo: { name: string; version: string } }): UpstreamMcpClient {
  const { egress, clientInfo } = deps
  const connections = new Map<string, ConnectionState>()
  // Insertion order is age: the first entry is the oldest, dropped when the pool is full.
  const sessions = new Map<string, Session>()
  const initializing = new Map<string, Promise<Session | UpstreamAnswer>>()
  let nextId = 1

  const stateOf = (name: string): ConnectionState => {
    let s = connections.get(name)
    if (s === undefined) connections.set(name, (s = { era: undefined, listChanged: undefined, probing: undefined }))
    return s
  }
  const sessionKey = (t: UpstreamTarget): string => `${t.connection.name}\0${sha256Hex(t.authorization)}`

  function endpoint(c: Connection): URL {
    return new URL(c.origin + c.basePath)
  }

  function baseHeaders(t: UpstreamTarget, extra: Readonly<Record<string, string>>): Record<string, string> {
    // authorization last, so nothing before can replace it
    return {
      'user-agent': 'keyway/0.1',
      accept: 'application/json, text/event-stream',
      'content-type': 'application/json',
      ...extra,
      authorization: t.authorization,
    }
  }

  /**
   * POSTs one JSON-RPC message (or GETs a stream, `body` undefined) and reads the answer to `id`:
   * from a JSON body, or from an SSE stream parsed as it arrives, handing notifications on it to
   * `onNotification` in order.
   */
  async function exchange(
    t: UpstreamTarget,
    method: 'POST' | 'GET',
    headers: Readonly<Record<string, string>>,
    body: JsonRpcMessage | undefined,
    id: number | undefined,
    opts: {
      readonly signals?: readonly AbortSignal[] | undefined
      readonly onNotification?: UpstreamRequestOptions['onNotification']
      readonly timeoutMs?: number
      readonly keepBody?: boolean
    },
  ): Promise<Exchange> {
    const c = t.connection
    const url = endpoint(c)
    let streamed: UpstreamAnswer | undefined
    let sniffed: 'sse' | 'other' | undefined
    const parser = createSseParser((e) => {
      if (e.event !== 'message' || streamed !== undefined) return
      let msg: unknown
      try {
        msg = JSON.parse(e.data)
      } catch {
        return // not JSON: not an MCP message, skipped like any unknown event
      }
      if (!isRecord(msg) || msg['jsonrpc'] !== '2.0') return
      if (typeof msg['method'] === 'string') {
        // A notification is relayed; a request from the server (it has an id) is ignored, unanswered.
        if (!('id' in msg) && opts.onNotification !== undefined) {
          const params = msg['params']
          try {
            opts.onNotification(isRecord(params) ? { method: msg['method'], params } : { method: msg['method'] })
          } catch {
            // the caller's relay failing must not break the stream
          }
        }
        return
      }
      if (id !== undefined && msg['id'] === id) streamed = toAnswer(msg)
    })
    const res = await egress.send({
      url,
      method,
      headers: baseHeaders(t, headers),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      timeoutMs: opts.timeoutMs ?? c.timeoutMs,
      maxResponseBytes: c.maxResponseBytes,
      pool: c.name,
      ...(opts.signals === undefined ? {} : { signals: opts.signals }),
      ...(opts.keepBody === false ? { keepBody: false } : {}),
      onChunk: (chunk) => {
        if (sniffed === undefined) {
          const first = chunk.toString('latin1').trimStart()[0]
          if (first === undefined) return
          sniffed = first === '{' || first === '[' ? 'other' : 'sse'
        }
        if (sniffed === 'sse') parser.push(chunk)
      },
    })
    const sessionId = res.headers['mcp-session-id']
    return { answer: readAnswer(res, url, id, streamed), status: res.status, sessionId: sessionId === undefined || sessionId === '' ? undefined : sessionId }
  }

  /** The 2026-07-28 probe: which era the upstream speaks, or the HTTP answer that stops us finding out (401…). */
  async function probe(t: UpstreamTarget): Promise<'modern' | 'legacy' | UpstreamAnswer> {
    const id = nextId++
    const msg = { jsonrpc: '2.0', id, method: 'server/discover', params: { _meta: envelope() } }
    const ex = await exchange(t, 'POST', modernHeaders('server/discover', undefined), msg, id, {})
    const a = ex.answer
    if (a.kind === 'http') return PROBE_LEGACY_STATUSES.has(a.status) ? 'legacy' : a
    // -32601 (no such method) and -32022 (unsupported version) are the usual answers; like the SDK's
    // probe classifier, any other JSON-RPC error is no evidence of 2026-07-28 either.
    if (a.kind === 'error') return 'legacy'
    const versions = a.result['supportedVersions']
    if (!Array.isArray(versions) || !versions.includes(MODERN_PROTOCOL_VERSION)) return 'legacy'
    stateOf(t.connection.name).listChanged = listChangedOf(a.result['capabilities'])
    return 'modern'
  }

  /**
   * The connection's era, probing once for all callers. Shared steps (the probe, `initialize`) do not
   * follow one caller's signals, so one caller giving up never fails the others; each caller stops
   * waiting on its own signals ({@link untilAborted}), and the step's deadline bounds it.
   */
  async function eraOf(t: UpstreamTarget): Promise<'modern' | 'legacy' | UpstreamAnswer> {
    const state = stateOf(t.connection.name)
    for (;;) {
      if (state.era !== undefined) return state.era
      if (state.probing === undefined) break
      const shared = await state.probing.catch(() => undefined)
      // Another credential's probe gave an HTTP answer (401 …) or failed: probe with ours.
      if (typeof shared !== 'string' && state.era === undefined && state.probing === undefined) break
    }
    const p = probe(t)
    state.probing = p
    try {
      const era = await p
      if (typeof era === 'string' && connections.get(t.connection.name) === state) state.era = era
      return era
    } finally {
      if (state.probing === p) state.probing = undefined
    }
  }

  /** The 2025 handshake for one (connection, credential): `initialize`, then `notifications/initialized`. */
  async function initialize(t: UpstreamTarget, key: string): Promise<Session | UpstreamAnswer> {
    const id = nextId++
    const msg = {
      jsonrpc: '2.0',
      id,
      method: 'initialize',
      params: { protocolVersion: LEGACY_PROTOCOL_VERSIONS[0], capabilities: {}, clientInfo },
    }
    const ex = await exchange(t, 'POST', {}, msg, id, {})
    if (ex.answer.kind !== 'result') return ex.answer
    const version = ex.answer.result['protocolVersion']
    const host = endpoint(t.connection).host
    if (typeof version !== 'string' || !LEGACY_PROTOCOL_VERSIONS.includes(version))
      throw new AppError('UPSTREAM_UNAVAILABLE', `upstream MCP server ${host} answered initialize with a protocol version Keyway does not speak`)
    const session: Session = { key, connection: t.connection.name, version, sessionId: ex.sessionId, target: t }
    const state = stateOf(t.connection.name)
    state.listChanged = listChangedOf(ex.answer.result['capabilities'])
    await egress.send({
      url: endpoint(t.connection),
      method: 'POST',
      headers: baseHeaders(t, legacyHeaders(session)),
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
      timeoutMs: t.connection.timeoutMs,
      maxResponseBytes: t.connection.maxResponseBytes,
      pool: t.connection.name,
    })
    return session
  }

  async function sessionFor(t: UpstreamTarget): Promise<Session | UpstreamAnswer> {
    const key = sessionKey(t)
    const known = sessions.get(key)
    if (known !== undefined) return known
    let p = initializing.get(key)
    if (p === undefined) {
      const started = initialize(t, key)
      p = started
      initializing.set(key, started)
      started
        .then(
          (s) => {
            if ('key' in s && connections.has(t.connection.name)) remember(s)
          },
          () => undefined,
        )
        .finally(() => {
          if (initializing.get(key) === started) initializing.delete(key)
        })
        .catch(() => undefined)
    }
    return p
  }

  function remember(s: Session): void {
    sessions.delete(s.key)
    sessions.set(s.key, s)
    while (sessions.size > MAX_SESSIONS) {
      const oldest = sessions.keys().next().value
      if (oldest === undefined) break
      sessions.delete(oldest)
    }
  }

  /** One request in whichever era the connection speaks; a lost 2025 session is re-initialised once and the request retried once. */
  async function request(
    t: UpstreamTarget,
    method: string,
    params: Record<string, unknown>,
    opts: UpstreamRequestOptions,
    name?: string,
  ): Promise<UpstreamAnswer> {
    for (let attempt = 0; ; attempt++) {
      const era = await untilAborted(eraOf(t), opts.signals)
      if (typeof era !== 'string') return era
      const id = nextId++
      const passOn = { signals: opts.signals, onNotification: opts.onNotification }
      if (era === 'modern') {
        const msg = { jsonrpc: '2.0', id, method, params: { ...params, _meta: { ...opts.meta, ...envelope() } } }
        return (await exchange(t, 'POST', modernHeaders(method, name), msg, id, passOn)).answer
      }
      const session = await untilAborted(sessionFor(t), opts.signals)
      if (!('key' in session)) return session
      const msg = { jsonrpc: '2.0', id, method, params: opts.meta === undefined ? params : { ...params, _meta: { ...opts.meta } } }
      const ex = await exchange(t, 'POST', legacyHeaders(session), msg, id, passOn)
      if (attempt === 0 && isSessionLost(session, ex)) {
        if (sessions.get(session.key) === session) sessions.delete(session.key)
        continue
      }
      return ex.answer
    }
  }

  function envelope(): Record<string, unknown> {
    return { [META_PROTOCOL_VERSION]: MODERN_PROTOCOL_VERSION, [META_CLIENT_CAPABILITIES]: {}, [META_CLIENT_INFO]: clientInfo }
  }

  function deleteSession(s: Session): void {
    if (s.sessionId === undefined) return
    egress
      .send({
        url: endpoint(s.target.connection),
        method: 'DELETE',
        headers: baseHeaders(s.target, legacyHeaders(s)),
        timeoutMs: Math.min(DELETE_TIMEOUT_MS, s.target.connection.timeoutMs),
        maxResponseBytes: 4096,
        pool: s.connection,
      })
      .catch(() => undefined)
  }

  function forget(name: string): void {
    connections.delete(name)
    for (const [key, s] of sessions) {
      if (s.connection !== name) continue
      sessions.delete(key)
      deleteSession(s)
    }
  }

  return {
    async listTools(t, opts = {}) {
      const tools: unknown[] = []
      let cursor: string | undefined
      for (let page = 0; page < MAX_TOOL_LIST_PAGES; page++) {
        const a = await request(t, 'tools/list', cursor === undefined ? {} : { cursor }, opts)
        if (a.kind !== 'result') return a
        const list = a.result['tools']
        if (Array.isArray(list)) tools.push(...(list as unknown[]))
        const next = a.result['nextCursor']
        if (typeof next !== 'string' || next === '' || page === MAX_TOOL_LIST_PAGES - 1) return { kind: 'result', result: { ...a.result, tools } }
        cursor = next
      }
      return { kind: 'result', result: { tools } }
    },

    callTool(t, name, args, opts = {}) {
      return request(t, 'tools/call', args === undefined ? { name } : { name, arguments: args }, opts, name)
    },

    declaresListChanged(c) {
      return connections.get(c.name)?.listChanged
    },

    async listen(t, onToolsChanged, signal) {
      const onNotification = (n: { readonly method: string }): void => {
        if (n.method === 'notifications/tools/list_changed') onToolsChanged()
      }
      const streamOpts = { signals: [signal], onNotification, timeoutMs: LISTEN_DEADLINE_MS, keepBody: false }
      try {
        if (signal.aborted) return
        const era = await untilAborted(eraOf(t), [signal])
        if (era === 'modern') {
          const id = nextId++
          const msg = { jsonrpc: '2.0', id, method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true }, _meta: envelope() } }
          await exchange(t, 'POST', modernHeaders('subscriptions/listen', undefined), msg, id, streamOpts)
          return
        }
        if (era !== 'legacy') return
        const session = await untilAborted(sessionFor(t), [signal])
        if (!('key' in session)) return
        const ex = await exchange(t, 'GET', legacyHeaders(session), undefined, undefined, streamOpts)
        if (isSessionLost(session, ex) && sessions.get(session.key) === session) sessions.delete(session.key)
      } catch {
        // deadline, abort, network: the stream ended; the caller reopens
      }
    },

    forget,

    close() {
      for (const s of sessions.values()) deleteSession(s)
      sessions.clear()
      connections.clear()
      return Promise.resolve()
    },
  }
}

/** `p`, or the reason of the first of `signals` to abort, whichever comes first (`p` itself goes on). */
function untilAborted<T>(p: Promise<T>, signals: readonly AbortSignal[] | undefined): Promise<T> {
  if (signals === undefined || signals.length === 0) return p
  const aborted = signals.find((s) => s.aborted)
  if (aborted !== undefined) return Promise.reject(aborted.reason as Error)
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => {
      for (const s of signals) s.removeEventListener('abort', onAbort)
    }
    const onAbort = (e: Event): void => {
      stop()
      reject((e.target as AbortSignal).reason as Error)
    }
    for (const s of signals) s.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        stop()
        resolve(v)
      },
      (e: unknown) => {
        stop()
        reject(e)
      },
    )
  })
}

function modernHeaders(method: string, name: string | undefined): Record<string, string> {
  const h: Record<string, string> = { 'mcp-protocol-version': MODERN_PROTOCOL_VERSION, 'mcp-method': method }
  if (name !== undefined) h['mcp-name'] = encodeHeaderValue(name)
  return h
}

function legacyHeaders(s: Session): Record<string, string> {
  return s.sessionId === undefined ? { 'mcp-protocol-version': s.version } : { 'mcp-protocol-version': s.version, 'mcp-session-id': s.sessionId }
}

/**
 * A value as the 2026-07-28 transport carries it in an `Mcp-Name` header: as is when it is plain
 * visible ASCII without edge spaces, else `=?base64?<UTF-8 as base64>?=` (the SDK's `encodeMcpParamValue`).
 */
export function encodeHeaderValue(value: string): string {
  const plain = value.length > 0 && value === value.trim() && !(value.startsWith('=?base64?') && value.endsWith('?=')) && /^[\t\x20-\x7e]*$/.test(value)
  return plain ? value : `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`
}

/** A request that carried a session id and came back 404, or 400 with a JSON-RPC error about the session (the reference server's answer). */
function isSessionLost(s: Session, ex: Exchange): boolean {
  if (s.sessionId === undefined) return false
  if (ex.status === 404) return true
  return ex.status === 400 && ex.answer.kind === 'error' && /session/i.test(ex.answer.message)
}

function listChangedOf(capabilities: unknown): boolean {
  return isRecord(capabilities) && isRecord(capabilities['tools']) && capabilities['tools']['listChanged'] === true
}

function toAnswer(msg: JsonRpcMessage): UpstreamAnswer | undefined {
  const result = msg['result']
  if (isRecord(result)) return { kind: 'result', result }
  const error = msg['error']
  if (isRecord(error) && typeof error['code'] === 'number') {
    const message = typeof error['message'] === 'string' ? error['message'] : ''
    return 'data' in error ? { kind: 'error', code: error['code'], message, data: error['data'] } : { kind: 'error', code: error['code'], message }
  }
  return undefined
}

/**
 * The answer in a response: the message with our id (from the stream, or a JSON body); a JSON-RPC
 * error with a null id also answers us (transports answer a request they could not route that way).
 * A response with no such message is an HTTP answer, except a 2xx one, which is a broken upstream.
 */
function readAnswer(res: OutboundResponse, url: URL, id: number | undefined, streamed: UpstreamAnswer | undefined): UpstreamAnswer {
  if (streamed !== undefined) return streamed
  const type = (res.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  if (type === 'application/json' && !res.truncated && res.body.length > 0) {
    let msg: unknown
    try {
      msg = JSON.parse(res.body.toString('utf8'))
    } catch {
      msg = undefined
    }
    if (isRecord(msg) && msg['jsonrpc'] === '2.0' && (msg['id'] === id || (msg['id'] === null && 'error' in msg))) {
      const a = toAnswer(msg)
      if (a !== undefined) return a
    }
  }
  const ok = res.status >= 200 && res.status < 300
  // 202 to a notification, or a stream (GET, listen) that ended: nothing to answer, nothing wrong.
  if (!ok || id === undefined) return { kind: 'http', status: res.status, headers: res.headers }
  const what = res.truncated
    ? `more than the response size cap`
    : type === 'text/event-stream'
      ? 'a stream that ended without the response'
      : `status ${res.status} with ${type === '' ? 'no content type' : `content type ${type}`}`
  throw new AppError('UPSTREAM_UNAVAILABLE', `upstream MCP server ${url.host} answered ${what} instead of an MCP message`, {
    detail: { host: url.host, reason: res.truncated ? 'response-too-large' : 'network-error' },
  })
}
