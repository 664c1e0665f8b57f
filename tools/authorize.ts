/**
 * `keyway authorize CONNECTION [--config F] [--timeout 10m]`: the owner's one sign-in for an
 * `oauth_u2m_shared` connection (design.md §3), or the owner's own connection to a per-user
 * `protocol: mcp` connection whose tool list is read with the owner's account (design.md §12). It records a consent flow for the owner in the
 * token store, prints the link, serves the browser routes itself on `server.host:port` when the
 * port is free (otherwise the Keyway already listening there completes the flow, which it can
 * only do on the same store and key, so that is checked first), waits until the tokens land, and
 * reports the scopes, the expiry and whether a refresh token came. The link goes to stdout on a
 * line of its own; everything else goes to stderr. It never prints a token.
 * @module
 */
import { Hono } from 'hono'
import { parseArgs } from 'node:util'
import type { ConfigSnapshot, Connection } from '../src/config/load.js'
import { createConsentFlow, FLOW_TTL_MS, waitForOutcome, type FlowOutcome } from '../src/consent/records.js'
import { completedBy } from '../src/consent/complete.js'
import { describeOwner } from '../src/credentials/oauth-u2m-shared.js'
import { NO_REFRESH_TOKEN_WARNING } from '../src/credentials/token-record.js'
import { isAppError } from '../src/errors.js'
import { limitBody } from '../src/http/body-limit.js'
import { browserBodyCap, browserRouteDeps, mountBrowserRoutes } from '../src/http/browser-routes.js'
import { listen, type Listening } from '../src/http/listen.js'
import { formatExpiry } from '../src/consent/pages.js'
import { createLogger } from '../src/log.js'
import { createRuntime, type Runtime } from '../src/runtime.js'
import { configPath, loadOrReport, type CliIo, type Command } from './cli.js'

/** A progress line this often while waiting: alive, not noisy. */
const PROGRESS_EVERY_MS = 30_000
/** How long the probe of a Keyway already on the port may take. */
const PROBE_TIMEOUT_MS = 3_000

export const run: Command = async (argv, io) => {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { config: { type: 'string' }, timeout: { type: 'string', default: '10m' } },
      strict: true,
    })
  } catch (e) {
    io.err(`keyway authorize: ${(e as Error).message}\nusage: keyway authorize CONNECTION [--config F] [--timeout 10m]`)
    return 2
  }
  const { values, positionals } = parsed
  const name = positionals[0]
  if (!name || positionals.length > 1) {
    io.err('usage: keyway authorize CONNECTION [--config F] [--timeout 10m]')
    return 2
  }
  const timeoutMs = parseDuration(values.timeout)
  if (timeoutMs === undefined || timeoutMs <= 0 || timeoutMs > FLOW_TTL_MS) {
    io.err(`keyway authorize: --timeout must be a duration such as 90s or 5m, at most the link's ${FLOW_TTL_MS / 60_000}-minute lifetime`)
    return 2
  }
  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const connection = snapshot.connections.get(name)
  const refusal = connection ? refuse(connection, snapshot) : `connection "${name}" is not in ${file}`
  if (refusal || !connection) {
    io.err(`keyway authorize: ${refusal}`)
    return 1
  }

  let runtime: Runtime
  try {
    runtime = await createRuntime(snapshot, { log: createLogger({ level: 'warn' }) })
  } catch (e) {
    io.err(`keyway authorize: ${e instanceof Error ? e.message : String(e)}`)
    return 1
  }
  let http: Listening | undefined
  const abort = new AbortController()
  const onInterrupt = (): void => abort.abort()
  process.once('SIGINT', onInterrupt)
  try {
    // A per-user connection's owner connects their own account (it reads the MCP catalog); a shared one's signs in for everyone.
    const ownerUser = connection.auth.type === 'oauth_u2m_per_user' && 'user' in connection.owner ? connection.owner.user : undefined
    const method = connection.auth.type === 'oauth_u2m_per_user' ? 'oauth_u2m_per_user' : 'oauth_u2m_shared'
    const flow = await createConsentFlow(
      runtime.store,
      { connection: name, method, tokenUser: ownerUser ?? null, completer: connection.owner },
      { publicUrl: snapshot.server.publicUrl, now: runtime.now() },
    )
    runtime.audit.record({ type: 'consent.started', user: completedBy({ completer: connection.owner }), connection: name })

    const served = await serveOrFindServer(runtime, snapshot, flow.flowId, io)
    if (served.kind === 'refused') return 1
    http = served.http

    io.err(
      ownerUser
        ? `keyway: sign-in of ${ownerUser}'s own account to "${name}" (oauth_u2m_per_user), which reads its MCP tool list; it must be completed by ${ownerUser}`
        : `keyway: sign-in for connection "${name}" (oauth_u2m_shared); it must be completed by its owner, ${describeOwner(connection.owner)}`,
    )
    io.err(`keyway: open this link in a browser within ${Math.round(timeoutMs / 60_000) || 1} minute(s) (it works once):`)
    io.out(flow.url)
    let lastProgress = Date.now()
    const outcome = await waitForOutcome(runtime.store, flow.flowId, {
      timeoutMs,
      signal: abort.signal,
      onPoll: (left) => {
        if (Date.now() - lastProgress < PROGRESS_EVERY_MS) return
        lastProgress = Date.now()
        io.err(`keyway: waiting for the sign-in… ${formatLeft(left)} left`)
      },
    })
    if (!outcome) {
      io.err(
        abort.signal.aborted
          ? 'keyway authorize: cancelled; the link stops working within 10 minutes'
          : `keyway authorize: no sign-in within ${values.timeout}; run it again for a new link`,
      )
      return 1
    }
    return report(outcome, name, runtime.now(), io)
  } catch (e) {
    io.err(`keyway authorize: ${isAppError(e) ? e.message : `failed unexpectedly (${e instanceof Error ? e.message : String(e)})`}`)
    return 1
  } finally {
    process.off('SIGINT', onInterrupt)
    await http?.close(1_000)
    await runtime.close()
  }
}

/** Why this connection cannot be authorized from here, or undefined. */
function refuse(connection: Connection, snapshot: ConfigSnapshot): string | undefined {
  const type = connection.auth.type
  // The owner of a per-user MCP connection connects once so its tool list can be read (README "Upstream MCP servers").
  const ownerCatalog = type === 'oauth_u2m_per_user' && connection.mcp?.catalogCredential === 'owner' && 'user' in connection.owner
  if (type !== 'oauth_u2m_shared' && !ownerCatalog) {
    const hint =
      type === 'oauth_m2m'
        ? 'oauth_m2m needs no sign-in: Keyway fetches its tokens itself'
        : type === 'oauth_u2m_per_user'
          ? 'with oauth_u2m_per_user each user connects on first use from their agent; only the owner of a protocol: mcp connection whose catalog.credential is owner signs in here'
          : 'a bearer_token connection uses its configured secret'
    return `keyway authorize is for oauth_u2m_shared connections; "${connection.name}" uses ${type} (${hint})`
  }
  if (snapshot.store.url === 'memory://')
    return 'store.url is memory://: a sign-in stored by this command would vanish when it exits and no keyway serve could read it; use the sqlite:// or redis:// store that keyway serve uses'
  if (snapshot.store.dangerouslyUseEphemeralKey && !snapshot.store.encryptionKey)
    return 'store.dangerouslyUseEphemeralKey is set without store.encryptionKey: tokens sealed by this command would be unreadable by keyway serve; set store.encryptionKey'
  return undefined
}

type Served = { readonly kind: 'serving'; readonly http: Listening } | { readonly kind: 'delegated'; readonly http: undefined } | { readonly kind: 'refused' }

/**
 * Serves the browser routes on `server.host:port`; when that port is taken, checks that whoever
 * holds it sees this flow (same store and key) with a side-effect-free `HEAD /connect/<id>`.
 */
async function serveOrFindServer(runtime: Runtime, snapshot: ConfigSnapshot, flowId: string, io: CliIo): Promise<Served> {
  const app = new Hono()
  app.use('*', limitBody(browserBodyCap))
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  mountBrowserRoutes(app, browserRouteDeps(runtime))
  const { host, port } = snapshot.server
  try {
    const http = await listen(app, host, port, { maxConnections: snapshot.server.maxConnections })
    io.err(`keyway: serving the sign-in pages on ${http.url} (public URL ${snapshot.server.publicUrl})`)
    return { kind: 'serving', http }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e
  }
  const probeHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host
  const probe = await fetch(`http://${probeHost}:${port}/connect/${flowId}`, { method: 'HEAD', signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) }).catch(
    () => undefined,
  )
  if (probe?.status === 204) {
    io.err(`keyway: the Keyway already listening on ${host}:${port} completes the sign-in (it uses the same store)`)
    return { kind: 'delegated', http: undefined }
  }
  io.err(
    `keyway authorize: port ${port} on ${host} is taken by something that cannot complete this sign-in ` +
      `(${probe ? `it answered ${probe.status}: another store or encryption key?` : 'no answer'}); stop it, or point it at the same store.url and store.encryptionKey`,
  )
  return { kind: 'refused' }
}

function report(outcome: FlowOutcome, name: string, now: number, io: CliIo): number {
  if (outcome.status === 'failed') {
    io.err(`keyway authorize: the sign-in for "${name}" failed (${outcome.reason ?? 'unknown reason'}); the browser page says how to fix it`)
    return 1
  }
  io.err(`keyway: connection "${name}" is signed in`)
  io.err(`  scopes:        ${outcome.scope ?? '(not stated by the provider)'}`)
  io.err(`  expires:       ${formatExpiry(outcome.expiresAt, now)}`)
  io.err(`  refresh token: ${outcome.refreshToken ? 'yes (renewed automatically)' : 'NO'}`)
  if (!outcome.refreshToken) {
    io.err('')
    io.err('!!!!!!!!')
    io.err(`!!! WARNING: ${NO_REFRESH_TOKEN_WARNING}`)
    io.err('!!!!!!!!')
  }
  for (const w of outcome.warnings ?? []) if (w !== NO_REFRESH_TOKEN_WARNING) io.err(`  warning: ${w}`)
  return 0
}

/** `90s`, `10m`, `1h`, or plain milliseconds. */
export function parseDuration(v: string | undefined): number | undefined {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(v ?? '')
  if (!m) return undefined
  const n = Number(m[1])
  const unit = m[2] ?? 'ms'
  return n * (unit === 'h' ? 3_600_000 : unit === 'm' ? 60_000 : unit === 's' ? 1_000 : 1)
}

function formatLeft(ms: number): string {
  const s = Math.ceil(ms / 1000)
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`
}
