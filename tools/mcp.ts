/**
 * `keyway mcp sync CONNECTION [--config F]`: asks every running replica to refetch the tool list
 * of a `protocol: mcp` connection now (design.md §12), by bumping its sync generation in the token
 * store; each replica polls those every few seconds. Only the `store` settings' secrets are
 * resolved, so it runs where the connections' secrets are not set. It never contacts the upstream.
 * @module
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { storeSettingsFromText } from '../src/credentials/store-access.js'
import { errorMessage } from '../src/log.js'
import { requestSync, SYNC_POLL_MS } from '../src/mcp-upstream/catalog.js'
import { openTokenStore } from '../src/store/index.js'
import { configPath, loadOrReport, type CliIo, type Command } from './cli.js'

const USAGE = 'usage: keyway mcp sync CONNECTION [--config F]'

export const run: Command = async (argv, io) => {
  const { values, positionals } = parseArgs({ args: argv, options: { config: { type: 'string' } }, allowPositionals: true, strict: true })
  const [sub, connection, ...extra] = positionals
  if (sub !== 'sync' || connection === undefined || extra.length > 0) {
    io.err(USAGE)
    return 2
  }
  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io, { skipSecrets: true })
  if (!snapshot) return 1
  const mcp = [...snapshot.connections.values()].filter((c) => c.protocol === 'mcp').map((c) => c.name)
  const c = snapshot.connections.get(connection)
  if (!c || c.protocol !== 'mcp') {
    const what = c ? `connection "${connection}" is protocol: http` : `no connection "${connection}" in ${file}`
    io.err(`keyway: ${what}; connections with protocol: mcp: ${mcp.length > 0 ? mcp.join(', ') : '(none)'}`)
    return 1
  }
  return sync(connection, await readFile(file, 'utf8'), file, io)
}

async function sync(connection: string, text: string, file: string, io: CliIo): Promise<number> {
  const settings = await storeSettingsFromText(text, file, io.env)
  if (!settings.ok) return fail(io, settings.reason)
  const store = settings.settings
  if (store.url.startsWith('memory://')) return fail(io, 'store.url is memory://: replicas share nothing through it, so a sync cannot reach them')
  if (store.encryptionKey === undefined && store.dangerouslyUseEphemeralKey)
    return fail(io, 'store.dangerouslyUseEphemeralKey without store.encryptionKey: only the server process can read its store')
  try {
    const opened = await openTokenStore(store, { warn: (m) => io.err(`keyway: warning: ${m}`) })
    try {
      await requestSync(opened, connection)
    } finally {
      await opened.close().catch(() => undefined)
    }
  } catch (e) {
    return fail(io, errorMessage(e))
  }
  io.out(`synced "${connection}": every replica refetches its tool list within ${SYNC_POLL_MS / 1000} s`)
  return 0
}

function fail(io: CliIo, reason: string): number {
  io.err(`keyway: cannot sync: ${reason}`)
  return 1
}
