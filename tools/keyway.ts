#!/usr/bin/env node
/**
 * The `keyway` command: dispatches to one file per subcommand (design.md §3). Each subcommand
 * is loaded only when used, so `keyway validate` does not pay for the server's imports.
 * @module
 */
import { processIo, type Command } from './cli.js'

const COMMANDS: Readonly<Record<string, { summary: string; load: () => Promise<{ run: Command }> }>> = {
  serve: { summary: 'run the MCP server (HTTP, or --stdio)', load: () => import('./serve.js') },
  validate: { summary: 'check the config file; every problem at once', load: () => import('./validate.js') },
  'hash-key': { summary: 'make a new API key and its config line', load: () => import('./hash-key.js') },
  'redirect-uri': { summary: 'print the OAuth redirect URI to register at providers', load: () => import('./redirect-uri.js') },
  sql: { summary: 'GRANT / REVOKE / SHOW / DESCRIBE / ALTER on connections', load: () => import('./sql.js') },
  authorize: { summary: 'sign in the owner of an oauth_u2m_shared connection: prints a link, waits', load: () => import('./authorize.js') },
  credentials: { summary: 'stored credentials: list (--connection, --user, --json) or revoke CONNECTION [--user U]', load: () => import('./credentials.js') },
  audit: { summary: 'read the audit log: --user, --connection, --since, --decision, --type, --json', load: () => import('./audit.js') },
  'check-provider': { summary: 'check an OAuth provider against the six per-user connection prerequisites', load: () => import('./check-provider.js') },
}

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length))
  return [
    'usage: keyway <command> [options]',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Common option: --config FILE (default: $KEYWAY_CONFIG or config/connections.yaml)',
  ].join('\n')
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    processIo.out(usage())
    return name ? 0 : 2
  }
  const cmd = COMMANDS[name]
  if (!cmd) {
    processIo.err(`keyway: unknown command "${name}"\n\n${usage()}`)
    return 2
  }
  return (await cmd.load()).run(rest, processIo)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    processIo.err(`keyway: ${e instanceof Error ? e.message : String(e)}`)
    process.exitCode = 1
  },
)
