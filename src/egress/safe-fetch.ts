/**
 * How Keyway sends HTTP to the connections' APIs and their OAuth providers (design.md §9): tool
 * calls through `send`, and token endpoints, discovery and the like through the fetch-compatible
 * `fetchFor`. The one other way out is the admin's own identity provider (`identity.oidc`:
 * discovery, keys, introspection, the browser sign-in), reached with the global `fetch` without
 * this guard, since it is often on a private network (`runtime.ts`, `identity/oidc.ts`).
 * Every request is first checked by the egress guard (`guard.ts`), then sent by undici
 * through keep-alive `Agent`s, one per connection plus one shared by provider requests, whose
 * `connect.lookup` hands the socket only addresses that
 * pass the same address check (DNS pinning: the hostname stays for SNI and `Host`, the socket
 * goes to a checked IP, so a rebinding answer between check and connect is refused too).
 * Redirects are returned, never followed. Every request has one total deadline (DNS, waiting
 * for a connection, connect, headers and body) and a response size cap. It owns the connection
 * pools and the short-lived DNS cache; it must not decide which credential to send, nor put a
 * query string, header value or body in an error (messages name method, host and reason only).
 * @module
 * @see https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
 */
import type { LookupAddress, LookupOptions } from 'node:dns'
import { isIPv6 } from 'node:net'
import { Agent, type Dispatcher } from 'undici'
import type { EgressPolicy } from '../config/load.js'
import { AppError, externalReason, isAppError } from '../errors.js'
import type { HttpMethod } from './build-url.js'
import { checkAddresses, checkTarget, systemResolver, type GuardResult, type Resolver } from './guard.js'

export interface OutboundRequest {
  readonly url: URL
  readonly method: HttpMethod | 'HEAD'
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string | Uint8Array
  /** Total deadline for connect, headers and body together. */
  readonly timeoutMs: number
  /** At most this many body bytes are read; the rest is discarded and `truncated` is set. */
  readonly maxResponseBytes: number
  /**
   * Socket pool key, the connection's name: requests with the same key share sockets, and no
   * key ever waits for another key's sockets, even to the same upstream address. Left out,
   * the shared pool (token endpoints, discovery).
   */
  readonly pool?: string
  /**
   * Abort signals the request follows (the runtime's shutdown signal, the call's own
   * cancellation): when one aborts, the socket is cut and `send` rejects with that signal's reason.
   */
  readonly signals?: readonly AbortSignal[]
  /**
   * Called with each body chunk as it arrives (within the size cap), for a caller that reads a
   * stream incrementally (Server-Sent Events of an upstream MCP server, `mcp-upstream/`).
   */
  readonly onChunk?: (chunk: Buffer) => void
  /**
   * `false`: chunks go only to `onChunk` and the response's `body` is empty, so a stream that
   * stays open for minutes holds no memory; the size cap still counts every byte. Default `true`.
   */
  readonly keepBody?: boolean
}

export interface OutboundResponse {
  readonly status: number
  /** Every response header, names lowercased, repeated fields joined with ", " (internal use only). */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
  readonly truncated: boolean
}

/** The subset of `RequestInit` that `fetchFor` understands (enough for openid-client and jose). */
export interface FetchInit {
  readonly method?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | Headers | undefined
  readonly body?: string | URLSearchParams | Uint8Array | ArrayBuffer | ReadableStream | null | undefined
  /** Ignored: redirects are never followed, as if `'manual'`. */
  readonly redirect?: string | undefined
  readonly signal?: AbortSignal | null | undefined
}

/** A fetch-compatible function, e.g. openid-client's and jose's `customFetch`. */
export type EgressFetch = (url: string, init?: FetchInit) => Promise<Response>

export interface Egress {
  /**
   * Sends one request. Throws `AppError` with `EGRESS_BLOCKED` (guard refusal, before any
   * socket opens), `UPSTREAM_TIMEOUT` (deadline), `UPSTREAM_UNAVAILABLE` (refused, reset,
   * DNS failure, TLS failure) or `INVALID_REQUEST` (a header or body the HTTP client refuses).
   * Any HTTP status, including 3xx, is a response, not an error.
   */
  send(req: OutboundRequest): Promise<OutboundResponse>
  /** A fetch-compatible function through the same guard and pool, with its own `timeoutMs` deadline. */
  fetchFor(timeoutMs: number): EgressFetch
  /** Closes one connection's pool (its connection left the config); requests in flight finish first. */
  dropPool(key: string): Promise<void>
  /** Closes the pools; requests in flight finish first. */
  close(): Promise<void>
}

export interface EgressOptions {
  /** Read at every request, so a config reload applies to the next call. */
  readonly policy: EgressPolicy
  /** DNS resolver; the system resolver by default. Tests inject one. */
  readonly resolve?: Resolver
  /** Most sockets per origin in each pool (default {@link DEFAULT_MAX_SOCKETS_PER_ORIGIN}). */
  readonly maxSockets?: number
  /** How long one host's resolved addresses are reused (default {@link DNS_CACHE_TTL_MS}). */
  readonly dnsCacheTtlMs?: number
  /** Clock for the DNS cache (milliseconds). */
  readonly now?: () => number
}

/** Resolved addresses are reused this long: short enough to follow DNS changes, long enough that the hot path never waits on DNS. */
export const DNS_CACHE_TTL_MS = 30_000
/** Bound on cached host names; connections are configured, so this is only a safety net. */
export const DNS_CACHE_MAX_ENTRIES = 1024
/** Connections per origin; enough for a busy gateway without letting one upstream take every socket. */
export const DEFAULT_MAX_SOCKETS_PER_ORIGIN = 128
/** Cap of what `fetchFor` reads (token responses, metadata, JWKS are small). */
export const FETCH_MAX_RESPONSE_BYTES = 1024 * 1024

// RFC 9110 §9.2.2: requests a client may repeat automatically.
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'PUT', 'DELETE'])
const FETCH_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'])
// Errors of a socket that died under a request before any response byte: on a reused
// keep-alive connection this is the race of the upstream closing it as we write (see
// notes/performance-floor.md), which one retry on a fresh connection fixes.
const DEAD_SOCKET_CODES: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])
const TIMEOUT_CODES: ReadonlySet<string> = new Set(['ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
const EMPTY = Buffer.alloc(0)

/**
 * Creates the egress client. One per process; `close` it on shutdown.
 *
 * Hot path: the guard's DNS answer is cached per host name for {@link DNS_CACHE_TTL_MS} (IP
 * literals need none), requests go out with `Dispatcher.dispatch` and a handler that collects
 * the body directly, and connections are kept alive per origin in the request's pool (one
 * lookup in a Map; a pool is made on first use of its key).
 *
 * Retry: once, and only when the connection died (`ECONNRESET`, `EPIPE`, undici's "other
 * side closed") before any response byte. Idempotent methods (RFC 9110 §9.2.2) are retried on
 * any such failure; `POST` and `PATCH` only when the connection had carried an earlier
 * exchange, i.e. the upstream closed an idle keep-alive connection as the request was written.
 * Never after a response started.
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-9.2.2
 */
export function createEgress(opts: EgressOptions): Egress {
  const policy = opts.policy
  const resolve = createDnsCache(opts.resolve ?? systemResolver, opts.dnsCacheTtlMs ?? DNS_CACHE_TTL_MS, opts.now ?? Date.now)

  // Connect-time half of the guard. undici calls this for every new connection to a named
  // host; it sees the same cached answer checkTarget approved a moment ago, or, if that
  // expired, a fresh one that is checked again before the socket may use it.
  const lookup = (
    hostname: string,
    options: LookupOptions,
    callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    resolve(hostname).then(
      (addresses) => {
        const verdict = checkAddresses(hostname, addresses, policy.dangerouslyAllowPrivateNetworks)
        if (!verdict.ok) return callback(new ConnectRefused(verdict), '')
        const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0
        const list: LookupAddress[] = []
        for (const address of verdict.addresses) {
          const f = isIPv6(address) ? 6 : 4
          if (family === 0 || family === f) list.push({ address, family: f })
        }
        const first = list[0]
        if (first === undefined) return callback(Object.assign(new Error(`no usable address for ${hostname}`), { code: 'ENOTFOUND' }), '')
        if (options.all === true) callback(null, list)
        else callback(null, first.address, first.family)
      },
      (e: unknown) => callback(e instanceof Error ? e : new Error('dns lookup failed'), ''),
    )
  }

  const newAgent = (): Agent => new Agent({ connections: opts.maxSockets ?? DEFAULT_MAX_SOCKETS_PER_ORIGIN, connect: { lookup } })
  // One pool per connection, so slow calls on one connection cannot take the sockets another
  // connection to the same upstream address needs; provider requests share `shared`.
  const shared = newAgent()
  const pools = new Map<string, Agent>()
  const agentFor = (key: string | undefined): Agent => {
    if (key === undefined) return shared
    let agent = pools.get(key)
    if (agent === undefined) pools.set(key, (agent = newAgent()))
    return agent
  }

  function perform(req: OutboundRequest, external: readonly AbortSignal[] | undefined): Promise<OutboundResponse> {
    return new Promise<OutboundResponse>((resolvePromise, rejectPromise) => {
      // The deadline starts now, so it also bounds a DNS lookup that hangs.
      const exchange = new Exchange(agentFor(req.pool), req, resolvePromise, rejectPromise)
      if (external !== undefined) for (const signal of external) exchange.follow(signal)
      checkTarget(req.url, policy, resolve).then(
        (verdict) => {
          if (!verdict.ok) exchange.fail(refusal(verdict, req))
          else exchange.dispatch()
        },
        (e: unknown) => exchange.fail(toAppError(e, req, true)),
      )
    })
  }

  return {
    send: (req) => perform(req, req.signals),
    fetchFor(timeoutMs) {
      return async (input, init = {}) => {
        const signal = init.signal ?? undefined
        if (signal?.aborted) throw signal.reason
        const url = new URL(input)
        const method = (init.method ?? 'GET').toUpperCase()
        if (!FETCH_METHODS.has(method)) throw new TypeError(`method "${method}" is not supported by the egress client`)
        const headers = headersToRecord(init.headers)
        const body = await bodyToSend(init.body, headers)
        const res = await perform(
          {
            url,
            method: method as HttpMethod | 'HEAD',
            headers,
            ...(body === undefined ? {} : { body }),
            timeoutMs,
            maxResponseBytes: FETCH_MAX_RESPONSE_BYTES,
          },
          signal === undefined ? undefined : [signal],
        )
        if (res.truncated)
          throw new AppError('UPSTREAM_UNAVAILABLE', `${method} ${url.host} answered with more than ${FETCH_MAX_RESPONSE_BYTES} bytes`, {
            detail: { host: url.host, method, reason: 'response-too-large' },
          })
        return toResponse(res, method)
      }
    },
    dropPool(key) {
      const agent = pools.get(key)
      if (agent === undefined) return Promise.resolve()
      pools.delete(key)
      return agent.close()
    },
    async close() {
      const all = [shared, ...pools.values()]
      pools.clear()
      await Promise.all(all.map((a) => a.close()))
    },
  }
}

/**
 * One request and its at most one retry, as an undici dispatch handler: the body is
 * collected straight from the parser up to the cap (no stream), and the deadline aborts
 * through undici's controller (no AbortSignal, which costs more than the rest of the
 * bookkeeping together). Settles its promise exactly once.
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #agent: Agent
  readonly #req: OutboundRequest
  readonly #resolve: (res: OutboundResponse) => void
  readonly #reject: (e: unknown) => void
  readonly #timer: NodeJS.Timeout
  #settled = false
  #retried = false
  #controller: Dispatcher.DispatchController | undefined
  #abortReason: Error | undefined
  #responseStarted = false
  #status = 0
  #headers: Record<string, string | string[] | undefined> = {}
  #chunks: Buffer[] = []
  #size = 0
  #unfollow: (() => void)[] | undefined

  constructor(agent: Agent, req: OutboundRequest, resolve: (res: OutboundResponse) => void, reject: (e: unknown) => void) {
    this.#agent = agent
    this.#req = req
    this.#resolve = resolve
    this.#reject = reject
    this.#timer = setTimeout(() => this.#onDeadline(), req.timeoutMs)
  }

  /** Ends the exchange with the signal's own reason when it aborts (fetch semantics); may be called for several signals. */
  follow(signal: AbortSignal): void {
    if (signal.aborted) return this.#end(signal.reason, new RequestCancelled())
    const onAbort = (): void => this.#end(signal.reason, new RequestCancelled())
    signal.addEventListener('abort', onAbort, { once: true })
    this.#unfollow ??= []
    this.#unfollow.push(() => signal.removeEventListener('abort', onAbort))
  }

  dispatch(): void {
    if (this.#settled) return
    const url = this.#req.url
    this.#controller = undefined
    // Dispatcher.dispatch never follows redirects: following needs undici's redirect
    // interceptor, which this agent does not have.
    this.#agent.dispatch(
      { origin: url.origin, path: url.pathname + url.search, method: this.#req.method, headers: this.#req.headers, body: this.#req.body ?? null },
      this,
    )
  }

  fail(e: AppError): void {
    this.#end(e, undefined)
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    // Settled while queued for a connection (deadline, cancel): do not send it at all.
    if (this.#settled) controller.abort(this.#abortReason ?? new RequestCancelled())
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return // 1xx informational; the final response follows
    this.#responseStarted = true
    this.#status = statusCode
    this.#headers = headers
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return
    const room = this.#req.maxResponseBytes - this.#size
    if (chunk.length > room) {
      if (room > 0) {
        const part = chunk.subarray(0, room)
        if (this.#req.keepBody !== false) this.#chunks.push(part)
        this.#size += room
        this.#req.onChunk?.(part)
      }
      this.#finish(true)
      // Stop reading: the rest is never downloaded, and the connection is not reused.
      controller.abort(new BodyCapReached())
      return
    }
    if (this.#req.keepBody !== false) this.#chunks.push(chunk)
    this.#size += chunk.length
    this.#req.onChunk?.(chunk)
  }

  onResponseEnd(): void {
    if (!this.#settled) this.#finish(false)
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.#settled) return
    if (!this.#responseStarted && !this.#retried && isRetryable(err, this.#req.method)) {
      this.#retried = true
      this.#chunks = []
      this.#size = 0
      // Let undici finish tearing down the dead socket before the pool picks a connection.
      setImmediate(() => this.dispatch())
      return
    }
    this.#end(toAppError(err, this.#req, !this.#responseStarted), undefined)
  }

  #onDeadline(): void {
    const req = this.#req
    const host = req.url.host
    this.#end(
      new AppError('UPSTREAM_TIMEOUT', `${req.method} ${host} timed out after ${req.timeoutMs} ms`, {
        detail: { host, method: req.method, reason: 'deadline', timeoutMs: req.timeoutMs },
      }),
      new DeadlineExceeded(),
    )
  }

  #end(rejection: unknown, abortWith: Error | undefined): void {
    if (this.#settled) return
    this.#settle()
    this.#abortReason = abortWith
    if (abortWith !== undefined) this.#controller?.abort(abortWith)
    this.#reject(rejection)
  }

  #finish(truncated: boolean): void {
    this.#settle()
    const chunks = this.#chunks
    const body = chunks.length === 0 ? EMPTY : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.#size)
    this.#resolve({ status: this.#status, headers: flattenHeaders(this.#headers), body, truncated })
  }

  #settle(): void {
    this.#settled = true
    clearTimeout(this.#timer)
    if (this.#unfollow !== undefined) for (const unfollow of this.#unfollow) unfollow()
  }
}

/** Caches each host's addresses for `ttlMs` and shares lookups in flight; failures are not cached. */
function createDnsCache(lookupHost: Resolver, ttlMs: number, now: () => number): Resolver {
  const cache = new Map<string, { readonly expires: number; readonly addresses: Promise<readonly string[]> }>()
  return (hostname) => {
    const t = now()
    const hit = cache.get(hostname)
    if (hit !== undefined && hit.expires > t) return hit.addresses
    const addresses = lookupHost(hostname)
    const entry = { expires: t + ttlMs, addresses }
    if (cache.size >= DNS_CACHE_MAX_ENTRIES) cache.clear()
    cache.set(hostname, entry)
    addresses.catch(() => {
      if (cache.get(hostname) === entry) cache.delete(hostname)
    })
    return addresses
  }
}

/** Abort reason when the deadline fires. */
class DeadlineExceeded extends Error {
  constructor() {
    super('egress deadline exceeded')
  }
}

/** Abort reason when the caller's signal fires. */
class RequestCancelled extends Error {
  constructor() {
    super('egress request cancelled')
  }
}

/** Abort reason once `maxResponseBytes` were read. */
class BodyCapReached extends Error {
  constructor() {
    super('response size cap reached')
  }
}

/** The connect-time address check refused what DNS answered (e.g. rebinding). */
class ConnectRefused extends Error {
  readonly code = 'KEYWAY_EGRESS_REFUSED'
  readonly verdict: Extract<GuardResult, { ok: false }>
  constructor(verdict: Extract<GuardResult, { ok: false }>) {
    super(verdict.detail)
    this.verdict = verdict
  }
}

function isRetryable(e: unknown, method: string): boolean {
  const code = errorCode(e)
  if (code === undefined || !DEAD_SOCKET_CODES.has(code)) return false
  if (IDEMPOTENT.has(method)) return true
  // POST/PATCH: only when the socket had already carried an earlier exchange, i.e. the
  // upstream closed an idle keep-alive connection just as this request was written.
  const socket = typeof e === 'object' && e !== null && 'socket' in e ? e.socket : undefined
  const bytesRead = typeof socket === 'object' && socket !== null && 'bytesRead' in socket ? socket.bytesRead : undefined
  return typeof bytesRead === 'number' && bytesRead > 0
}

function refusal(verdict: Extract<GuardResult, { ok: false }>, req: OutboundRequest): AppError {
  const where = { host: req.url.host, method: req.method }
  // A name that does not resolve is an unreachable upstream, not a policy decision.
  if (verdict.reason === 'dns-failed')
    return new AppError('UPSTREAM_UNAVAILABLE', `${req.method} ${req.url.host} failed: ${verdict.detail}`, { detail: { ...where, reason: verdict.reason } })
  return new AppError('EGRESS_BLOCKED', `${req.method} ${req.url.host} refused: ${verdict.detail}`, { detail: { ...where, reason: verdict.reason } })
}

function toAppError(cause: unknown, req: OutboundRequest, beforeResponse: boolean): AppError {
  if (isAppError(cause)) return cause
  const host = req.url.host
  const method = req.method
  if (cause instanceof ConnectRefused) return refusal(cause.verdict, req)
  const code = errorCode(cause)
  if (code !== undefined && TIMEOUT_CODES.has(code))
    return new AppError('UPSTREAM_TIMEOUT', `${method} ${host} timed out (${code})`, { cause, detail: { host, method, reason: externalReason(code) } })
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED' || code === 'ERR_INVALID_CHAR' || code === 'ERR_INVALID_ARG_TYPE')
    // No cause: the client's message may quote what it refused.
    return new AppError('INVALID_REQUEST', `${method} ${host} has a header or body the http client refuses`, {
      detail: { host, method, reason: externalReason(code) },
    })
  const reason = describeNetworkError(code, beforeResponse)
  return new AppError('UPSTREAM_UNAVAILABLE', `${method} ${host} failed: ${reason}`, {
    cause,
    detail: { host, method, reason: code === undefined ? 'network-error' : externalReason(code) },
  })
}

function describeNetworkError(code: string | undefined, beforeResponse: boolean): string {
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused'
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
      return beforeResponse ? 'connection closed before a response' : 'connection closed during the response'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NODATA':
      return 'host not found'
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'network unreachable'
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      return 'egress client is closed'
    case undefined:
      return 'network error'
    default:
      return /CERT|SSL|TLS/.test(code) ? `tls handshake failed (${code})` : `network error (${code})`
  }
}

/** A safe error code (letters, digits, underscores) of an error or of what it wraps. */
function errorCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; typeof cur === 'object' && cur !== null && depth < 4; depth++) {
    const code = 'code' in cur ? cur.code : undefined
    if (typeof code === 'string' && /^[A-Z0-9_]{1,48}$/.test(code)) return code
    // Happy Eyeballs (autoSelectFamily) reports every failed address in an AggregateError.
    cur = cur instanceof AggregateError ? cur.errors[0] : 'cause' in cur ? cur.cause : undefined
  }
  return undefined
}

/** undici's header object, flattened in place: repeated fields joined with ", ". */
function flattenHeaders(h: Record<string, string | string[] | undefined>): Record<string, string> {
  for (const name of Object.keys(h)) {
    const v = h[name]
    if (v === undefined) delete h[name]
    else if (typeof v !== 'string') h[name] = v.join(', ')
  }
  return h as Record<string, string>
}

function headersToRecord(headers: FetchInit['headers']): Record<string, string> {
  const out: Record<string, string> = {}
  if (headers === undefined) return out
  if (headers instanceof Headers) headers.forEach((value, name) => (out[name] = value))
  else for (const name of Object.keys(headers)) out[name.toLowerCase()] = headers[name] ?? ''
  return out
}

async function bodyToSend(body: FetchInit['body'], headers: Record<string, string>): Promise<string | Uint8Array | undefined> {
  if (body === undefined || body === null) return undefined
  if (typeof body === 'string') return body
  if (body instanceof URLSearchParams) {
    headers['content-type'] ??= 'application/x-www-form-urlencoded;charset=UTF-8'
    return body.toString()
  }
  if (body instanceof Uint8Array) return body
  if (body instanceof ArrayBuffer) return new Uint8Array(body)
  return new Uint8Array(await new Response(body).arrayBuffer())
}

// Statuses whose response has no body (Fetch standard "null body status"); Response refuses one.
const NULL_BODY_STATUS: ReadonlySet<number> = new Set([101, 103, 204, 205, 304])

function toResponse(res: OutboundResponse, method: string): Response {
  const headers = new Headers()
  for (const name of Object.keys(res.headers)) {
    const value = res.headers[name]
    if (value !== undefined) headers.append(name, value)
  }
  if (res.status < 200 || res.status > 599)
    throw new AppError('UPSTREAM_UNAVAILABLE', `upstream answered with status ${res.status}, which fetch cannot represent`)
  const body = method === 'HEAD' || NULL_BODY_STATUS.has(res.status) ? null : res.body
  return new Response(body, { status: res.status, headers })
}
