/**
 * Starting Keyway: the HTTP server (`keyway serve`) and the stdio server (`keyway serve
 * --stdio`), each from a loaded snapshot. Used by the command line and by integration tests,
 * so both start Keyway exactly the same way. Holds no policy.
 * @module
 */
import { serveStdio } from '@modelcontextprotocol/server/stdio'
import type { Server } from '@modelcontextprotocol/server'
import type { Readable, Writable } from 'node:stream'
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio'
import type { ConfigSnapshot } from './config/load.js'
import { AppError } from './errors.js'
import { createApp, type AppOptions, type KeywayApp } from './http/app.js'
import { browserRouteDeps, mountBrowserRoutes } from './http/browser-routes.js'
import { listen, type ListenerLimits, type Listening } from './http/listen.js'
import { createCaller } from './identity/caller.js'
import { errorMessage } from './log.js'
import { requestStateKey } from './consent/client-memory.js'
import { createConsentAsker } from './mcp/consent.js'
import { createServerFactory } from './mcp/server.js'
import { createRuntime, type Runtime, type RuntimeOptions } from './runtime.js'

export interface HttpKeyway {
  readonly runtime: Runtime
  readonly app: KeywayApp
  /** Undefined when the port was taken by another Keyway (stdio mode only). */
  readonly http: Listening | undefined
  close(): Promise<void>
}

export interface StartOptions extends RuntimeOptions {
  readonly app?: AppOptions
  /** Override `server.port` (0 picks a free port; tests). */
  readonly port?: number
  /** Override the listener's time limits or connection cap (tests shorten the timeouts). */
  readonly listener?: Partial<ListenerLimits>
}

/** The listener limits of a snapshot: `server.maxConnections`, then any test override. */
function listenerLimits(snapshot: ConfigSnapshot, opts: StartOptions): Partial<ListenerLimits> {
  return { maxConnections: snapshot.server.maxConnections, ...opts.listener }
}

/**
 * The app options every Keyway gets: readiness includes the token store, the consent routes are
 * mounted, and consent is asked for each client its own way (`mcp/consent.ts`) unless the
 * caller brings its own `askForConsent`.
 */
export function appOptions(runtime: Runtime, opts: AppOptions = {}): AppOptions {
  const asker = opts.askForConsent
    ? undefined
    : createConsentAsker({ store: runtime.store, key: requestStateKey(runtime.snapshot().store), log: runtime.log, now: runtime.now })
  return {
    ...opts,
    ...(asker
      ? {
          askForConsent: asker.askForConsent,
          awaitConsent: asker.awaitConsent,
          // Remembered per person for per-user consent; a service principal never consents (and must not overwrite a namesake's entry).
          onLegacyInitialize: opts.onLegacyInitialize ?? (async (caller, params) => (caller.kind === 'user' ? asker.rememberInitialize(caller.user, params) : undefined)),
        }
      : {}),
    ready: async () => {
      await runtime.store.ping()
      await opts.ready?.()
    },
    extraRoutes: (app) => {
      mountBrowserRoutes(app, browserRouteDeps(runtime))
      opts.extraRoutes?.(app)
    },
  }
}

export async function startHttp(snapshot: ConfigSnapshot, opts: StartOptions = {}): Promise<HttpKeyway> {
  const runtime = await createRuntime(snapshot, opts)
  const app = createApp(runtime, appOptions(runtime, opts.app))
  let http: Listening
  try {
    http = await listen(app.app, snapshot.server.host, opts.port ?? snapshot.server.port, listenerLimits(snapshot, opts))
  } catch (e) {
    await runtime.close()
    throw e
  }
  return {
    runtime,
    app,
    http,
    async close() {
      // MCP first: it ends open subscription streams, so the HTTP server can drain promptly.
      await app.mcp.close()
      await http.close()
      await runtime.close()
    },
  }
}

export interface StdioKeyway extends HttpKeyway {
  readonly user: string
}

export interface StdioOptions extends StartOptions {
  readonly user?: string
  readonly stdin?: Readable
  readonly stdout?: Writable
}

/**
 * Serves MCP on stdin/stdout as one user, and the browser routes on `server.host:port`, since
 * consent happens in a browser. When that port is held by another Keyway on the same store,
 * that one completes the flows (design.md §4), so a taken port is not an error here.
 */
export async function startStdio(snapshot: ConfigSnapshot, opts: StdioOptions = {}): Promise<StdioKeyway> {
  const user = opts.user ?? snapshot.identity.stdioUser
  if (!user) throw new AppError('CONFIG_INVALID', 'stdio mode needs a user: pass --user ID or set identity.stdioUser in the config')
  const runtime = await createRuntime(snapshot, opts)
  const options = appOptions(runtime, opts.app)
  const servers = new Set<Server>()
  const factory = createServerFactory({
    scopeOf: () => {
      const live = runtime.snapshot()
      return { caller: createCaller(live, user, 'stdio'), snapshot: live }
    },
    callDeps: (s) => runtime.callDeps(s),
    ...(options.askForConsent ? { askForConsent: options.askForConsent } : {}),
    ...(options.awaitConsent ? { awaitConsent: options.awaitConsent } : {}),
  })
  const stdio = serveStdio(
    async (ctx) => {
      const server = (await factory(ctx)) as Server
      servers.add(server)
      server.onclose = () => servers.delete(server)
      return server
    },
    {
      ...(opts.stdin || opts.stdout ? { transport: new StdioServerTransport(opts.stdin, opts.stdout) } : {}),
      onerror: (e) => runtime.log.debug('stdio request rejected', { error: e.message }),
    },
  )
  runtime.onSwap(() => {
    for (const s of servers) s.sendToolListChanged().catch((e: unknown) => runtime.log.debug('list_changed not sent', { error: errorMessage(e) }))
  })
  const app = createApp(runtime, options)
  let http: Listening | undefined
  try {
    http = await listen(app.app, snapshot.server.host, opts.port ?? snapshot.server.port, listenerLimits(snapshot, opts))
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
      await stdio.close()
      await runtime.close()
      throw e
    }
    runtime.log.info('browser routes are served by another Keyway on this port', { port: snapshot.server.port })
  }
  return {
    user,
    runtime,
    app,
    http,
    async close() {
      await stdio.close()
      await app.mcp.close()
      await http?.close()
      await runtime.close()
    },
  }
}
