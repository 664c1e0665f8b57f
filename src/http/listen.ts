/**
 * Binds the hono app to a Node HTTP server and closes it gracefully: stop accepting, let
 * in-flight requests finish up to a deadline, then cut what is left (open SSE streams would
 * otherwise hold `close()` for ever).
 * @module
 */
import { serve } from '@hono/node-server'
import type { Server } from 'node:http'
import type { Hono } from 'hono'

export interface Listening {
  /** `http://host:port` as actually bound (port 0 resolves to the real port). */
  readonly url: string
  readonly port: number
  close(drainMs?: number): Promise<void>
}

/** How long in-flight requests may take to finish on shutdown before connections are cut. */
export const DRAIN_TIMEOUT_MS = 10_000

export function listen(app: Hono, host: string, port: number): Promise<Listening> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port, serverOptions: { keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 300_000 } }) as Server
    server.once('error', reject)
    server.once('listening', () => {
      server.off('error', reject)
      const addr = server.address()
      const bound = typeof addr === 'object' && addr ? addr.port : port
      const h = host.includes(':') ? `[${host}]` : host
      resolve({
        url: `http://${h}:${bound}`,
        port: bound,
        close: (drainMs = DRAIN_TIMEOUT_MS) =>
          new Promise<void>((done) => {
            const deadline = setTimeout(() => server.closeAllConnections(), drainMs)
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
