/**
 * `keyway serve [--config F] [--no-watch]` and `keyway serve --stdio [--user ID]`: starts Keyway,
 * reloads the config when the file changes (unless `--no-watch`) and on SIGHUP (always), warns
 * when a reload removed connections that still hold stored credentials, and keeps running until
 * SIGINT/SIGTERM, then drains in-flight calls and exits.
 * @module
 */
import { parseArgs } from 'node:util'
import { loadConfigText, type ConfigSnapshot } from '../src/config/load.js'
import { createConfigReloader, hashConfigFile, watchConfig, type ConfigReloader } from '../src/config/watch.js'
import { countStoredCredentials, removedConnectionsWarning } from '../src/credentials/orphans.js'
import { errorMessage } from '../src/log.js'
import type { Runtime } from '../src/runtime.js'
import { startHttp, startStdio, type HttpKeyway } from '../src/start.js'
import { configPath, loadOrReport, type Command } from './cli.js'

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
  // Hashed before loading: if the file changes in between, the first check reloads it (never misses it).
  const initialHash = await hashConfigFile(file)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const port = values.port === undefined ? undefined : Number(values.port)
  let keyway: HttpKeyway
  let listening: string
  if (values.stdio) {
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
  // SIGHUP re-reads even unchanged content (secret files referenced by the config may have changed).
  const onHangup = (): void => void reloader.reload('SIGHUP', { force: true })
  process.on('SIGHUP', onHangup)
  io.err(listening)
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    if (values.stdio) process.stdin.once('end', stop)
  })
  io.err('keyway: shutting down')
  process.off('SIGHUP', onHangup)
  await reloader.close()
  await keyway.close()
  return 0
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
