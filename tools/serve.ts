/**
 * `keyway serve [--config F] [--no-watch]` and `keyway serve --stdio [--user ID]`: starts Keyway,
 * reloads the config when the file changes (unless `--no-watch`) and on SIGHUP (always), warns
 * when a reload removed connections that still hold stored credentials, and keeps running until
 * SIGINT/SIGTERM (or, in stdio mode, the end of stdin), then drains in-flight calls for up to
 * `server.drainTimeoutMs` and exits within 2 s after that (README "Shutdown and readiness"). The
 * ready line on stderr says so when the token store or the OIDC issuer's keys are unreachable.
 * @module
 */
import { parseArgs } from 'node:util'
import { loadConfigText, type ConfigSnapshot } from '../src/config/load.js'
import { createConfigReloader, hashConfigFile, REJECTED_LOG_INTERVAL_MS, watchConfig, type ConfigReloader } from '../src/config/watch.js'
import { countStoredCredentials, removedConnectionsWarning } from '../src/credentials/orphans.js'
import { errorMessage } from '../src/log.js'
import type { Runtime } from '../src/runtime.js'
import { describeStoreUrl } from '../src/store/index.js'
import { oneLine } from '../src/safe-text.js'
import { startHttp, startStdio, type HttpKeyway } from '../src/start.js'
import { configPath, loadOrReport, type Command } from './cli.js'

/**
 * After the drain, what closing may take at most before the process exits anyway: answers being
 * written, refresh work finishing (its lease is then released), pools and the store closing.
 */
export const EXIT_MARGIN_MS = 1_900

/** Once everything is closed, a handle still open (a reconnect timer, a socket) may delay the exit this long at most. */
const LINGER_MS = 200

/** Environment variable overriding how often a rejected config file is warned about (ms; tests). */
export const REJECTED_LOG_ENV = 'KEYWAY_REJECTED_CONFIG_LOG_MS'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      stdio: { type: 'boolean', default: false },
      user: { type: 'string' },
      port: { type: 'string' },
      'no-watch': { type: 'boolean', default: false },
    },
    strict: true,
  })
  const file = configPath(values.config, io)
  const rejectedLogIntervalMs = rejectedLogInterval(io.env[REJECTED_LOG_ENV])
  if (typeof rejectedLogIntervalMs === 'string') {
    io.err(`keyway: ${rejectedLogIntervalMs}`)
    return 2
  }
  // Listening for the signals before anything starts: a stdio client may call a tool (and its host
  // send SIGTERM) before the ready line, and whoever waits for that line may signal at once. A
  // signal during start-up drains once started. The first one starts the drain; a second exits at once.
  let signalled: ((why: string) => void) | undefined
  const stopped = new Promise<string>((resolve) => (signalled = resolve))
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) {
      signalled(sig)
      signalled = undefined
      return
    }
    io.err(`keyway: ${sig} during shutdown; exiting without waiting`)
    process.exit(1)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  if (values.stdio) process.stdin.once('end', () => signalled?.('end of stdin'))
  // Hashed before loading: if the file changes in between, the first check reloads it (never misses it).
  const initialHash = await hashConfigFile(file)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const port = values.port === undefined ? undefined : Number(values.port)
  let keyway: HttpKeyway
  let listening: string
  if (values.stdio) {
    // stdout carries the MCP stream: a library that prints (node-redis reports a lost Sentinel with
    // console.log) would corrupt it, so anything printed goes to stderr instead.
    console.log = console.info = console.debug = console.error
    const s = await startStdio(snapshot, { ...(values.user ? { user: values.user } : {}), ...(port === undefined ? {} : { port }) })
    listening = `keyway: serving MCP on stdio as ${s.user}${s.http ? `; browser routes on ${s.http.url}` : ''} (config ${file})`
    keyway = s
  } else {
    keyway = await startHttp(snapshot, port === undefined ? {} : { port })
    listening = `keyway: listening on ${keyway.http?.url}/mcp (public URL ${snapshot.server.publicUrl}, config ${file})`
  }
  const runtime = keyway.runtime
  const reloaderOptions = {
    load: (text: string, f: string) => loadConfigText(text, f, { env: io.env }),
    onLoad: (next: ConfigSnapshot) => runtime.swap(next),
    // Credentials stored under a removed (or renamed-away) name are orphaned: say which and how many.
    onConnectionsRemoved: (names: readonly string[]) => warnAboutOrphans(runtime, names),
    initial: snapshot,
    rejectedLogIntervalMs,
    ...(initialHash === undefined ? {} : { initialHash }),
    log: runtime.log,
    audit: runtime.audit,
  }
  let reloader: ConfigReloader
  if (values['no-watch']) reloader = createConfigReloader(file, reloaderOptions)
  else {
    const watcher = watchConfig(file, reloaderOptions)
    await watcher.ready
    reloader = watcher
  }
  runtime.reportReloads(() => reloader.state())
  // SIGHUP re-reads even unchanged content (secret files referenced by the config may have changed).
  const onHangup = (): void => void reloader.reload('SIGHUP', { force: true })
  process.on('SIGHUP', onHangup)
  io.err(`${listening}${await startupWarnings(runtime)}`)
  const signal = await stopped
  signalled = undefined
  const drainMs = runtime.snapshot().server.drainTimeoutMs
  io.err(`keyway: shutting down (${signal}); tool calls in flight get up to ${drainMs} ms`)
  // Whatever hangs while closing, the process is gone shortly after the drain.
  exitAfter(drainMs + EXIT_MARGIN_MS, 1, () => io.err('keyway: closing took too long; exiting now'))
  process.off('SIGHUP', onHangup)
  await reloader.close()
  await keyway.close()
  io.err('keyway: stopped')
  exitAfter(LINGER_MS, 0)
  return 0
}

/** Exits with `code` after `ms` unless the process has ended by then (the timer keeps nothing alive). */
function exitAfter(ms: number, code: number, before?: () => void): void {
  setTimeout(() => {
    before?.()
    process.exit(code)
  }, ms).unref()
}

/** The warning interval from the environment, or the problem with its value. */
function rejectedLogInterval(raw: string | undefined): number | string {
  if (raw === undefined || raw === '') return REJECTED_LOG_INTERVAL_MS
  const ms = Number(raw)
  if (!Number.isInteger(ms) || ms < 10) return `${REJECTED_LOG_ENV} must be a whole number of milliseconds, at least 10 (got "${oneLine(raw, 40)}")`
  return ms
}

/**
 * What the ready line adds when a dependency does not answer at start: `; WARNING token store …
 * is not reachable: …` and `; WARNING OIDC issuer … keys are not available: …`. Keyway serves
 * anyway (the store may come back; `/readyz` says what stops service).
 */
async function startupWarnings(runtime: Runtime): Promise<string> {
  const snapshot = runtime.snapshot()
  const [store, oidc] = await Promise.all([runtime.probeStore(), runtime.probeOidc()])
  const warnings: string[] = []
  if (!store.ok) warnings.push(`token store ${describeStoreUrl(snapshot.store.url)} is not reachable: ${oneLine(store.error, 200)}`)
  if (oidc && !oidc.ok) warnings.push(`OIDC issuer ${snapshot.identity.oidc?.issuer ?? ''} keys are not available: ${oneLine(oidc.error, 200)}`)
  return warnings.map((w) => `; WARNING ${w}`).join('')
}

/**
 * After a reload removed connections: looks them up in the token store and warns, naming each
 * one that still holds credentials and how many, with the command that prunes them.
 */
async function warnAboutOrphans(runtime: Runtime, names: readonly string[]): Promise<void> {
  let counts: Map<string, number>
  try {
    counts = await countStoredCredentials(runtime.store, names)
  } catch (e) {
    runtime.log.warn('connections removed from the config; could not check the token store for credentials stored under them (keyway credentials lists them)', {
      connections: names,
      error: errorMessage(e),
    })
    return
  }
  const message = removedConnectionsWarning(counts)
  if (message) runtime.log.warn(message, { connections: [...counts.keys()], credentials: Object.fromEntries(counts) })
}
