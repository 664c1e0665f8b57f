/**
 * `keyway validate [--config F]`: loads the file exactly as `serve` would and prints every
 * problem at once as `file:line path: problem`; exit 1 if there is any.
 * @module
 */
import { parseArgs } from 'node:util'
import { configPath, loadOrReport, type Command } from './cli.js'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true })
  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const tools = snapshot.tools.length
  io.out(`${file}: ok (${snapshot.connections.size} connection${snapshot.connections.size === 1 ? '' : 's'}, ${tools} tool${tools === 1 ? '' : 's'}, ${snapshot.grants.length} grant${snapshot.grants.length === 1 ? '' : 's'})`)
  return 0
}
