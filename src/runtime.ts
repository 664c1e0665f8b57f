/**
 * The long-lived parts of a running Keyway and the one place they are wired together: the
 * current config snapshot (swapped whole on reload), the token store, the egress client, OAuth
 * provider clients and credential providers, the audit log and the logger, and the shutdown state
 * (draining, calls in flight, the abort signal of upstream requests). It gathers the facts
 * `/readyz` reports (`readiness.ts` judges them). Transports (HTTP, stdio) and commands receive a
 * `Runtime` and never construct these themselves.
 * @module
 */
import { createAuditLog, type AuditLog } from './audit/audit-log.js'
import type { ConfigSnapshot } from './config/load.js'
import { startPerUserConsent } from './consent/records.js'
import { createCredentialProvider } from './credentials/provider.js'
import type { CredentialProvider } from './credentials/credential.js'
import { createOAuthClients, type OAuthClients } from './credentials/oauth-client.js'
import { createRefresher } from './credentials/refresh.js'
import { createConcurrencyLimiter } from './egress/limits.js'
import { createEgress, type Egress } from './egress/safe-fetch.js'
import type { Resolver } from './egress/guard.js'
import type { TokenVerifier } from './identity/authenticate.js'
import { createBrowserSignIn, type BrowserSignIn } from './identity/browser-sign-in.js'
import { createOidcVerifier, type OidcVerifier } from './identity/oidc.js'
import { createLogger, errorMessage, type Logger } from './log.js'
import type { CallDeps, UpstreamCalls } from './mcp/call-tool.js'
import { createBreakers } from './mcp-upstream/breaker.js'
import { createCatalog } from './mcp-upstream/catalog.js'
import { createUpstreamMcpClient } from './mcp-upstream/client.js'
import { createUpstreamTools } from './mcp-upstream/tools.js'
import type { ProbeResult, ReadinessFacts, ReloadState } from './readiness.js'
import { createShutdown, type Shutdown } from './shutdown.js'
import { deadline } from './deadline.js'
import { openTokenStore, type TokenStore } from './store/index.js'

/**
 * Longest wait for one readiness probe. Above the Redis client's own 2 s connect and command
 * limits, so a probe reports their answer; below the usual 5 s probe timeout of Kubernetes.
 */
export const PROBE_TIMEOUT_MS = 3_000

/**
 * On close, how long token work still running (a refresh holding a lease, a rotated token being
 * saved, whether a stopped call or nobody waits for it) may take before the store closes under it.
 */
export const LEFT_BEHIND_WAIT_MS = 1_000

/** On close, how long the egress pools may take to close (requests in flight were aborted already). */
export const EGRESS_CLOSE_WAIT_MS = 500

export interface Runtime {
  /** The live snapshot; a request keeps the one it started with. */
  snapshot(): ConfigSnapshot
  /** Replaces the live snapshot (hot reload); calls already running keep theirs. */
  swap(next: ConfigSnapshot): void
  readonly egress: Egress
  /** The token store opened from the initial `store` settings (a reload does not reopen it). */
  readonly store: TokenStore
  /** Per-connection OAuth clients (provider requests go through `egress`). */
  readonly oauth: OAuthClients
  readonly credentials: CredentialProvider
  readonly audit: AuditLog
  readonly log: Logger
  readonly now: () => number
  callDeps(snapshot: ConfigSnapshot): CallDeps
  /** The access-token verifier for a snapshot's `identity.oidc` (undefined without OIDC). */
  verifier(snapshot: ConfigSnapshot): TokenVerifier | undefined
  /** Keyway's relying party for consent links in OIDC mode (`identity.oidc.browserClient`), else undefined. */
  browserSignIn(snapshot: ConfigSnapshot): BrowserSignIn | undefined
  /**
   * Subscribe to changes of the tools a caller may see: a snapshot swap, or a change of an
   * upstream MCP server's tool list (tools/list_changed); returns an unsubscribe function.
   */
  onToolsChanged(listener: () => void): () => void
  /** Draining, calls in flight and the abort signal of their upstream requests (README "Shutdown and readiness"). */
  readonly shutdown: Shutdown
  /** Tells the runtime where the config file's state comes from (the watcher of `keyway serve`). */
  reportReloads(state: () => ReloadState): void
  /** Probes the store and the OIDC keys (each at most `PROBE_TIMEOUT_MS`) and returns what `/readyz` judges. */
  readinessFacts(): Promise<ReadinessFacts>
  /** Probes the store only (at most `PROBE_TIMEOUT_MS`). */
  probeStore(): Promise<ProbeResult>
  /** Probes the OIDC keys of the live snapshot; undefined without `identity.oidc`. */
  probeOidc(): Promise<ProbeResult | undefined>
  /**
   * Releases everything: waits up to `LEFT_BEHIND_WAIT_MS` for work left behind by stopped calls
   * (refresh leases are released when it ends), then closes egress, the audit log and the store.
   */
  close(): Promise<void>
}

export interface RuntimeOptions {
  readonly log?: Logger
  readonly audit?: AuditLog
  readonly now?: () => number
  /** DNS resolver for the egress guard (tests inject one). */
  readonly resolve?: Resolver
  /** An already open token store (tests); the runtime then neither opens nor closes one. */
  readonly store?: TokenStore
}

export async function createRuntime(initial: ConfigSnapshot, opts: RuntimeOptions = {}): Promise<Runtime> {
  let current = initial
  const log = opts.log ?? createLogger()
  const now = opts.now ?? Date.now
  // First, so that a missing encryption key stops start-up before anything else is opened.
  const store = opts.store ?? (await openTokenStore(initial.store, { warn: (message) => log.warn(message) }))
  let audit: AuditLog
  try {
    audit = opts.audit ?? createAuditLog(initial.audit.file, { now, onError: (e) => log.error('audit log write failed', { error: e.message }) })
  } catch (e) {
    if (!opts.store) await store.close()
    throw e
  }
  // The egress policy is read from the live snapshot at each send, so a reload that narrows
  // egress.allowedHosts applies to the next call without rebuilding connection pools.
  const egress = createEgress({
    policy: {
      get allowedHosts() {
        return current.egress.allowedHosts
      },
      get dangerouslyAllowPrivateNetworks() {
        return current.egress.dangerouslyAllowPrivateNetworks
      },
      get configuredPorts() {
        return current.egress.configuredPorts
      },
    },
    ...(opts.resolve ? { resolve: opts.resolve } : {}),
  })
  const oauth = createOAuthClients({
    fetchFor: (timeoutMs) => egress.fetchFor(timeoutMs),
    allowInsecure: () => current.egress.dangerouslyAllowPrivateNetworks,
    now,
  })
  const refresher = createRefresher({ store, now, audit, log })
  const credentials = createCredentialProvider({
    clients: oauth,
    refresher,
    now,
    consent: {
      startConsent: (connection, user, reason) =>
        startPerUserConsent({ store, now, publicUrl: () => current.server.publicUrl, audit }, connection, user, reason),
    },
  })
  const limits = createConcurrencyLimiter()
  const upstreamClient = createUpstreamMcpClient({ egress, clientInfo: { name: 'keyway', version: '0.1.0' } })
  const breakers = createBreakers({ now })
  const catalog = createCatalog({ client: upstreamClient, credentials, breakers, store, log, now, live: () => current })
  const upstream: UpstreamCalls = { client: upstreamClient, breakers, tools: createUpstreamTools({ catalog, log }) }
  const signIns = new WeakMap<object, BrowserSignIn | undefined>()
  const listeners = new Set<() => void>()
  catalog.onChange(() => {
    upstream.tools.warm(current)
    for (const l of listeners) l()
  })
  const depsCache = new WeakMap<ConfigSnapshot, CallDeps>()
  // One verifier per identity.oidc settings object: a reload that keeps the same issuer
  // settings still gets a new object, so JWKS and token caches restart; that is rare and cheap.
  const verifiers = new WeakMap<object, OidcVerifier>()
  const oidcVerifier = (snapshot: ConfigSnapshot): OidcVerifier | undefined => {
    const oidc = snapshot.identity.oidc
    if (!oidc) return undefined
    let v = verifiers.get(oidc)
    if (!v) {
      // The identity provider is the admin's own infrastructure, often on a private network:
      // its discovery and JWKS fetches do not go through the connection egress guard.
      v = createOidcVerifier(oidc, { now, allowInsecure: snapshot.egress.dangerouslyAllowPrivateNetworks })
      verifiers.set(oidc, v)
    }
    return v
  }
  const shutdown = createShutdown()
  let reloadState: (() => ReloadState) | undefined
  const probeStore = async (): Promise<ProbeResult> => {
    try {
      await deadline(store.ping(), PROBE_TIMEOUT_MS, 'no answer')
      return { ok: true }
    } catch (e) {
      return { ok: false, error: withCause(e) }
    }
  }
  const probeOidc = async (): Promise<ProbeResult | undefined> => {
    const v = oidcVerifier(current)
    if (!v) return undefined
    try {
      const status = await deadline(v.keysStatus(), PROBE_TIMEOUT_MS, 'no answer')
      return status.ok ? { ok: true } : { ok: false, error: status.reason }
    } catch (e) {
      return { ok: false, error: errorMessage(e) }
    }
  }

  return {
    snapshot: () => current,
    swap(next) {
      // Settings that need a restart (the store's among them) are reported by the reloader (config/reload-rules.ts).
      const previous = current
      current = next
      // A removed connection's sockets close once its calls in flight have finished.
      for (const name of previous.connections.keys())
        if (!next.connections.has(name))
          egress.dropPool(name).catch((e: unknown) => log.warn('closing a connection pool failed', { connection: name, error: errorMessage(e) }))
      for (const c of previous.mcpConnections) if (next.connections.get(c.name)?.protocol !== 'mcp') upstreamClient.forget(c.name)
      upstream.tools.warm(next)
      for (const l of listeners) l()
    },
    egress,
    store,
    oauth,
    credentials,
    audit,
    log,
    now,
    callDeps(snapshot) {
      let deps = depsCache.get(snapshot)
      if (!deps) depsCache.set(snapshot, (deps = { snapshot, live: () => current, credentials, egress, limits, audit, log, now, shutdown, upstream }))
      return deps
    },
    verifier(snapshot) {
      return oidcVerifier(snapshot)?.verify
    },
    browserSignIn(snapshot) {
      const oidc = snapshot.identity.oidc
      if (!oidc?.browserClient) return undefined
      if (!signIns.has(oidc)) signIns.set(oidc, createBrowserSignIn(oidc, { allowInsecure: snapshot.egress.dangerouslyAllowPrivateNetworks }))
      return signIns.get(oidc)
    },
    onToolsChanged(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    shutdown,
    reportReloads(state) {
      reloadState = state
    },
    async readinessFacts() {
      const snapshot = current
      const [storeResult, oidcResult] = await Promise.all([probeStore(), probeOidc()])
      return {
        draining: shutdown.draining,
        connections: snapshot.connections.size,
        storeNeeded: [...snapshot.connections.values()].some((c) => c.auth.type !== 'bearer_token'),
        storeBackend: store.kind,
        store: storeResult,
        oidc: oidcResult,
        apiKeys: snapshot.identity.apiKeys.size > 0,
        reload: reloadState?.(),
      }
    },
    probeStore,
    probeOidc,
    async close() {
      // Refreshes nobody waits for (refresh ahead, a save retried after the caller had its answer) count too.
      const refreshesDone = deadline(refresher.idle(), LEFT_BEHIND_WAIT_MS, 'refreshes not done').then(
        () => true,
        () => false,
      )
      const [stopped, refreshed] = await Promise.all([shutdown.settled(LEFT_BEHIND_WAIT_MS), refreshesDone])
      if (!stopped || !refreshed)
        log.warn('token work still running at close (a refresh lease may be left to expire; an unsaved rotated token is lost with this process)')
      catalog.close()
      await upstreamClient.close()
      await deadline(egress.close(), EGRESS_CLOSE_WAIT_MS, 'egress not closed').catch(() => log.debug('egress pools still closing at exit'))
      await audit.close()
      if (!opts.store) await store.close()
    },
  }
}

/** An error's message and its cause's (`token store (redis) failed during ping (connect ECONNREFUSED …)`), for logs. */
function withCause(e: unknown): string {
  const cause = e instanceof Error ? e.cause : undefined
  const inner = cause === undefined ? '' : errorMessage(cause)
  return inner === '' ? errorMessage(e) : `${errorMessage(e)} (${inner})`
}
