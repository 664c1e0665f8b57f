/**
 * `keyway validate [--config F]`: loads the file exactly as `serve` would and prints every
 * problem at once as `file:line path: problem`; exit 1 if there is any. Load warnings (among
 * them exposed-name clashes of `protocol: mcp` prefixes, design.md §12) are printed as the file
 * loads; upstream tool names themselves are known only to a running server. A valid file is summed up
 * (counts, and the token store's topology without any password), gets the
 * consent-link advice (per-user connections in API-key mode without `auth.accountMatch`) as
 * warnings, and is then checked against the token store: credentials stored under a connection the file no longer has
 * (removed or renamed) or that now uses another auth type are warned about, with the command
 * that prunes them. That check only lists the store; when the store cannot be read from here (no
 * encryption key in this shell, Redis down) it says it was skipped and why, and never fails
 * validation.
 * @module
 */
import { parseArgs } from 'node:util'
import { consentWarnings, type ConfigSnapshot } from '../src/config/load.js'
import { findOrphans, groupOrphans, orphanWarnings } from '../src/credentials/orphans.js'
import { openStoreToInspect } from '../src/credentials/store-access.js'
import { errorMessage } from '../src/log.js'
import { describeStoreUrl } from '../src/store/index.js'
import { configPath, loadOrReport, type CliIo, type Command } from './cli.js'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true })
  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const tools = snapshot.tools.length
  const upstreams = snapshot.mcpConnections.length
  for (const w of consentWarnings(snapshot)) io.err(`keyway: warning: ${w}`)
  io.out(
    `${file}: ok (${snapshot.connections.size} connection${snapshot.connections.size === 1 ? '' : 's'}, ${tools} tool${tools === 1 ? '' : 's'}, ${upstreams > 0 ? `${upstreams} MCP upstream${upstreams === 1 ? '' : 's'}, ` : ''}${snapshot.grants.length} grant${snapshot.grants.length === 1 ? '' : 's'})`,
  )
  io.out(`store: ${describeStoreUrl(snapshot.store.url)}`)
  await checkStoredCredentials(snapshot, io)
  return 0
}

/** Warns about orphaned credentials in the store; notes why when the store cannot be read. */
async function checkStoredCredentials(snapshot: ConfigSnapshot, io: CliIo): Promise<void> {
  // Nothing outlives a memory store's process, so there is nothing to check.
  if (snapshot.store.url.startsWith('memory://')) return
  const skipped = (reason: string): void => io.err(`keyway: note: stored credentials were not checked against this config: ${reason}`)
  const opened = await openStoreToInspect(snapshot.store)
  if (opened.kind === 'empty') return
  if (opened.kind === 'unavailable') return skipped(opened.reason)
  try {
    const groups = groupOrphans(await findOrphans(opened.store, snapshot), snapshot)
    for (const w of orphanWarnings(groups)) io.err(`keyway: warning: ${w}`)
  } catch (e) {
    skipped(errorMessage(e))
  } finally {
    await opened.store.close().catch(() => undefined)
  }
}
