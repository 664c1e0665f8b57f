/**
 * Binds the hono app to a Node HTTP server and closes it gracefully: stop accepting, let
 * in-flight requests finish up to a grace period, then cut what is left (open SSE streams would
 * otherwise hold `close()` for ever). The drain of tool calls happens before, in `start.ts`;
 * meanwhile `endKeepAlive` makes every answer close its connection. Every listener Keyway opens (`keyway serve`, the browser
 * port of stdio mode, `keyway authorize`) comes through here, so every one gets the same time
 * limits and connection cap (README "Security model"): a client that sends its headers or body
 * slowly, or idles, loses its socket, and connections beyond the cap are closed on arrival.
 * @module
 */
import { serve } from '@hono/node-server'
import type { Server, ServerOptions, ServerResponse } from 'node:http'
import type { Hono } from 'hono'

export interface Listening {
  /** `http://host:port` as actually bound (port 0 resolves to the real port). */
  readonly url: string
  readonly port: number
  /** The Node server, for its settings (tests read the limits back). */
  readonly server: Server
  /**
   * From now on every answer carries `Connection: close`, so clients open their next request on
   * a new connection (through a load balancer, to another replica). New connections are still
   * accepted: readiness probes must get their 503 (README "Shutdown and readiness").
   */
  endKeepAlive(): void
  /** Stops accepting, closes idle connections, and cuts the rest after `graceMs`. */
  close(graceMs?: number): Promise<void>
}

/**
 * How long requests still open may take to finish once the listener closes. Tool calls were
 * drained before (`server.drainTimeoutMs`); what is left is answers being written and streams.
 */
export const CLOSE_GRACE_MS = 500

/** The time limits and connection cap of a listener. */
export interface ListenerLimits {
  /** Until the request line and headers are in; against slow-header (slowloris) clients. */
  readonly headersTimeoutMs: number
  /** Until the whole request (headers and body) is in; against slow-body clients. */
  readonly requestTimeoutMs: number
  /** How long an idle keep-alive connection stays open between requests. */
  readonly keepAliveTimeoutMs: number
  /** How often Node checks the two request timeouts; they are enforced to within this. */
  readonly connectionsCheckingIntervalMs: number
  /** Open connections; more are closed as they arrive (`server.maxConnections`). */
  readonly maxConnections: number
}

export const DEFAULT_LISTENER_LIMITS: ListenerLimits = Object.freeze({
  // A real client sends its headers in one write; 10 s is generous even over a poor link.
  headersTimeoutMs: 10_000,
  // The largest body (server.maxRequestBytes, 1 MiB by default) takes well under this on any link
  // an agent runs on. It bounds receiving the request only, never a long answer (SSE, consent waits).
  requestTimeoutMs: 30_000,
  // Above the 60 s idle timeout of common load balancers, so a balancer never sends a request on a
  // connection Keyway is closing (a 502 for the caller). Idle sockets are bounded by maxConnections.
  keepAliveTimeoutMs: 65_000,
  // Node's default is 30 s, which would let a slow client overstay the timeouts above by that much.
  connectionsCheckingIntervalMs: 1_000,
  maxConnections: 1024,
})

/** Node server options and the connection cap for `limits`. */
export function serverOptions(limits: ListenerLimits): ServerOptions {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs,
  }
}

/** Serves `app` on `host:port` with `limits` (defaults: `DEFAULT_LISTENER_LIMITS`). */
export function listen(app: Hono, host: string, port: number, limits: Partial<ListenerLimits> = {}): Promise<Listening> {
  const l: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS, ...limits }
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port, serverOptions: serverOptions(l) }) as Server
    server.maxConnections = l.maxConnections
    server.once('error', reject)
    server.once('listening', () => {
      server.off('error', reject)
      const addr = server.address()
      const bound = typeof addr === 'object' && addr ? addr.port : port
      const h = host.includes(':') ? `[${host}]` : host
      resolve({
        url: `http://${h}:${bound}`,
        port: bound,
        server,
        endKeepAlive: () => {
          server.on('request', (_req, res: ServerResponse) => {
            // Runs right after the app's own listener, before any answer is written.
            res.shouldKeepAlive = false
          })
        },
        close: (graceMs = CLOSE_GRACE_MS) =>
          new Promise<void>((done) => {
            const deadline = setTimeout(() => server.closeAllConnections(), graceMs)
            // Connections become idle as their last response ends; close them as they do.
            const sweep = setInterval(() => server.closeIdleConnections(), 50)
            deadline.unref()
            sweep.unref()
            server.close(() => {
              clearTimeout(deadline)
              clearInterval(sweep)
              done()
            })
            server.closeIdleConnections()
          }),
      })
    })
  })
}
