/**
 * `keyway redirect-uri [--config F]`: prints the exact OAuth redirect URI to register at
 * providers: `<server.publicUrl>/login/oauth/http.html`, no trailing slash (design.md §1).
 * @module
 */
import { parseArgs } from 'node:util'
import { redirectUri } from '../src/credentials/redirect-uri.js'
import { configPath, loadOrReport, type Command } from './cli.js'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true })
  const snapshot = await loadOrReport(configPath(values.config, io), io)
  if (!snapshot) return 1
  io.out(redirectUri(snapshot.server.publicUrl))
  return 0
}
