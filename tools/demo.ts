/**
 * `npm start`: the quick start. Runs the offline demo API on 127.0.0.1:8789 and Keyway on the
 * demo config (config/demo.yaml), then prints the demo users' keys and how to connect clients.
 * @module
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { loadConfigFile } from '../src/config/load.js'
import { listen } from '../src/http/listen.js'
import { startHttp } from '../src/start.js'
import { createDemoApi } from './demo-api.js'
import { packageRoot } from './paths.js'

const root = packageRoot()
const configFile = path.join(root, 'config/demo.yaml')
const DEMO_KEYS = {
  'alice@example.com': 'kw_demo_alice_0000000000000000000000000000',
  'bob@example.com': 'kw_demo_bob_00000000000000000000000000000000',
  'carol@example.com': 'kw_demo_carol_000000000000000000000000000000',
} as const

async function main(): Promise<void> {
  const loaded = await loadConfigFile(configFile)
  if (!loaded.ok) throw new Error(`demo config is invalid:\n${loaded.problems.join('\n')}`)
  const token = readFileSync(path.join(root, 'config/demo/api-token.txt'), 'utf8').trim()
  const api = await listen(createDemoApi(token), '127.0.0.1', 8789)
  const keyway = await startHttp(loaded.snapshot)
  const mcpUrl = `${loaded.snapshot.server.publicUrl}/mcp`
  const keywayBin = path.join(root, 'dist/tools/keyway.js')
  const out = [
    '',
    `Keyway is running: ${mcpUrl}   (demo API on ${api.url}, config ${path.relative(process.cwd(), configFile)})`,
    '',
    'Demo users and their API keys (send as "Authorization: Bearer <key>"):',
    ...Object.entries(DEMO_KEYS).map(([u, k]) => `  ${u.padEnd(18)} ${k}`),
    '  alice owns both connections; bob uses demo_notes through the demo-team group; carol has no grant.',
    '',
    'MCP Inspector (HTTP):',
    `  npx @modelcontextprotocol/inspector --cli ${mcpUrl} --transport http --header "Authorization: Bearer ${DEMO_KEYS['alice@example.com']}" --method tools/list`,
    '',
    'Claude Desktop (stdio), in claude_desktop_config.json (keep this demo running for the demo API):',
    JSON.stringify(
      { mcpServers: { keyway: { command: process.execPath, args: [keywayBin, 'serve', '--stdio', '--config', configFile, '--user', 'alice@example.com'] } } },
      null,
      2,
    )
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
    '',
    'Press Ctrl+C to stop.',
  ]
  process.stderr.write(`${out.join('\n')}\n`)
  const stop = async (): Promise<void> => {
    await keyway.close()
    await api.close(1000)
    process.exit(0)
  }
  process.once('SIGINT', () => void stop())
  process.once('SIGTERM', () => void stop())
}

main().catch((e: unknown) => {
  process.stderr.write(`keyway demo: ${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})
