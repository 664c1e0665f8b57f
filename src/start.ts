/**
 * Starting Keyway: the HTTP server (`keyway serve`) and the stdio server (`keyway serve
 * --stdio`), each from a loaded snapshot, and stopping them: drain the tool calls in flight for up
 * to `server.drainTimeoutMs`, abort what is left, then close (README "Shutdown and readiness").
 * Used by the command line and by integration tests, so both start and stop Keyway exactly the
 * same way. Holds no policy.
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
  /**
   * Drains (readiness 503, new tool calls refused, calls in flight get `server.drainTimeoutMs`,
   * then their upstream requests are aborted and they answer `UPSTREAM_UNAVAILABLE: server
   * shutting down`), then closes the listener and the runtime.
   */
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
 * The first half of stopping: from now on `/readyz` answers 503, new tool calls are refused and
 * answers close their connections; calls in flight get up to `server.drainTimeoutMs` (of the live
 * config) to finish, and then are aborted. Resolves once no call is in flight.
 */
export async function drainCalls(runtime: Runtime, http: Listening | undefined): Promise<void> {
  const { shutdown, log } = runtime
  const drainMs = runtime.snapshot().server.drainTimeoutMs
  shutdown.begin()
  http?.endKeepAlive()
  if (shutdown.inFlight === 0) return
  log.info('draining tool calls in flight', { calls: shutdown.inFlight, drainTimeoutMs: drainMs })
  if (await shutdown.idle(drainMs)) return
  log.warn('drain time is up; aborting the tool calls still in flight', { calls: shutdown.inFlight, drainTimeoutMs: drainMs })
  shutdown.abort()
}

/**
 * The app options every Keyway gets: the consent routes are
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
          onLegacyInitialize:
            opts.onLegacyInitialize ?? (async (caller, params) => (caller.kind === 'user' ? asker.rememberInitialize(caller.user, params) : undefined)),
        }
      : {}),
    extraRoutes: (app) => {
      mountBrowserRoutes(app, browserRouteDeps(runtime))
      opts.extraRoutes?.(app)
    },
  }
}

export async function startHttp(snapshot: ConfigSnapshot, opts: StartOptions = {}): Promise<HttpKeyway> {
  const runtime = await createRuntime(snapshot, opts)
  warmUpstreamTools(runtime)
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
      await drainCalls(runtime, http)
      // The listener before the MCP handler: closing the handler tears down requests still being
      // answered, so the answers of aborted calls are written first (open streams are cut after a grace).
      await http.close()
      await app.mcp?.close()
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
  warmUpstreamTools(runtime)
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
  runtime.onToolsChanged(() => {
    for (const s of servers) s.sendToolListChanged().catch((e: unknown) => runtime.log.debug('list_changed not sent', { error: errorMessage(e) }))
  })
  // MCP is on stdin/stdout: the port serves the browser routes (consent, sign-in callback) and health only.
  const app = createApp(runtime, { ...options, browserOnly: true })
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
      await drainCalls(runtime, http)
      // One turn of the event loop: the SDK writes the answers of aborted calls before its transport closes.
      await new Promise((resolve) => setImmediate(resolve))
      await stdio.close()
      await http?.close()
      await runtime.close()
    },
  }
}

/** A serving Keyway reads the upstream MCP catalogs at start, so the first call does not wait for them (commands never do). */
function warmUpstreamTools(runtime: Runtime): void {
  const snapshot = runtime.snapshot()
  runtime.callDeps(snapshot).upstream?.tools.warm(snapshot)
}
