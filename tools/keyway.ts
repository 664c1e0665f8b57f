#!/usr/bin/env node
/**
 * The `keyway` command: dispatches to one file per subcommand (design.md §3). Each subcommand
 * is loaded only when used, so `keyway validate` does not pay for the server's imports.
 * @module
 */
import { processIo, type Command } from './cli.js'

interface CommandEntry {
  readonly summary: string
  /** The synopsis `keyway <command> --help` prints. */
  readonly synopsis: string
  readonly load: () => Promise<{ run: Command }>
}

const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  serve: {
    summary: 'run the MCP server (HTTP, or --stdio)',
    synopsis: 'keyway serve [--config F] [--port N] [--no-watch]\nkeyway serve --stdio [--user ID] [--config F] [--no-watch]',
    load: () => import('./serve.js'),
  },
  validate: { summary: 'check the config file; every problem at once', synopsis: 'keyway validate [--config F]', load: () => import('./validate.js') },
  'hash-key': {
    summary: 'make a new API key and its config line',
    synopsis: 'keyway hash-key [--user ID] [--groups a,b]',
    load: () => import('./hash-key.js'),
  },
  'redirect-uri': {
    summary: 'print the OAuth redirect URI to register at providers',
    synopsis: 'keyway redirect-uri [--config F]',
    load: () => import('./redirect-uri.js'),
  },
  sql: {
    summary: 'GRANT / REVOKE / SHOW / DESCRIBE / ALTER on connections',
    synopsis:
      "keyway sql [--config F] 'STATEMENT'   (single quotes: backticks run in double quotes)\n" +
      '  GRANT USE CONNECTION ON CONNECTION c TO `principal`\n  REVOKE USE CONNECTION ON CONNECTION c FROM `principal`\n' +
      '  SHOW GRANTS ON CONNECTION c | SHOW CONNECTIONS | DESCRIBE CONNECTION c\n  ALTER CONNECTION c OWNER TO `principal`',
    load: () => import('./sql.js'),
  },
  authorize: {
    summary: 'sign in the owner of an oauth_u2m_shared connection: prints a link, waits',
    synopsis: 'keyway authorize CONNECTION [--config F] [--timeout 10m]',
    load: () => import('./authorize.js'),
  },
  credentials: {
    summary: 'credentials of every method: list (--connection, --user, --json), --prune orphans, or revoke CONNECTION [--user U]',
    synopsis:
      'keyway credentials [--connection C] [--user U] [--json] [--config F]\nkeyway credentials --prune [--connection C] [--user U] [--json] [--config F]\n' +
      'keyway credentials revoke CONNECTION [--user U] [--config F]',
    load: () => import('./credentials.js'),
  },
  audit: {
    summary: 'read the audit log: --user, --connection, --since, --decision, --type, --json',
    synopsis: 'keyway audit [--user U] [--connection C] [--since 1h|30m|2d|ISO] [--decision allow|deny] [--type T[,T]] [--json] [--config F]',
    load: () => import('./audit.js'),
  },
  mcp: {
    summary: 'upstream MCP servers: sync CONNECTION makes every replica refetch its tool list now',
    synopsis: 'keyway mcp sync CONNECTION [--config F]',
    load: () => import('./mcp.js'),
  },
  'check-provider': {
    summary: 'check an OAuth provider against the six per-user connection prerequisites',
    synopsis: 'keyway check-provider ISSUER_URL|CONNECTION [--config F] [--json]',
    load: () => import('./check-provider.js'),
  },
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
  if (rest.includes('--help') || rest.includes('-h')) {
    processIo.out(`${cmd.summary}\n\nusage: ${cmd.synopsis}`)
    return 0
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
