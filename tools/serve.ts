/**
 * `keyway serve [--config F]` and `keyway serve --stdio [--user ID]`: starts Keyway and keeps
 * it running until SIGINT/SIGTERM, then drains in-flight calls and exits.
 * @module
 */
import { parseArgs } from 'node:util'
import { startHttp, startStdio, type HttpKeyway } from '../src/start.js'
import { configPath, loadOrReport, type Command } from './cli.js'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, stdio: { type: 'boolean', default: false }, user: { type: 'string' }, port: { type: 'string' } },
    strict: true,
  })
  const file = configPath(values.config, io)
  const snapshot = await loadOrReport(file, io)
  if (!snapshot) return 1
  const port = values.port === undefined ? undefined : Number(values.port)
  let keyway: HttpKeyway
  if (values.stdio) {
    const s = await startStdio(snapshot, { ...(values.user ? { user: values.user } : {}), ...(port === undefined ? {} : { port }) })
    io.err(`keyway: serving MCP on stdio as ${s.user}${s.http ? `; browser routes on ${s.http.url}` : ''} (config ${file})`)
    keyway = s
  } else {
    keyway = await startHttp(snapshot, port === undefined ? {} : { port })
    io.err(`keyway: listening on ${keyway.http?.url}/mcp (public URL ${snapshot.server.publicUrl}, config ${file})`)
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    if (values.stdio) process.stdin.once('end', stop)
  })
  io.err('keyway: shutting down')
  await keyway.close()
  return 0
}
