/**
 * What every `keyway` subcommand shares: the I/O seam (so tests run commands in-process),
 * locating the config file, and loading it with the problem report printed the same way
 * everywhere. Subcommands live one per file and export `run(argv, io)`.
 * @module
 */
import path from 'node:path'
import { loadConfigFile, type ConfigSnapshot, type Env } from '../src/config/load.js'
import { redactRemembered } from '../src/redact.js'

export interface CliIo {
  readonly out: (line: string) => void
  readonly err: (line: string) => void
  readonly env: Env
  readonly cwd: string
}

export type Command = (argv: string[], io: CliIo) => Promise<number>

export const DEFAULT_CONFIG = 'config/connections.yaml'

/** `--config F`, else `KEYWAY_CONFIG`, else `config/connections.yaml`, relative to the working directory. */
export function configPath(flag: string | undefined, io: CliIo): string {
  return path.resolve(io.cwd, flag ?? io.env.KEYWAY_CONFIG ?? DEFAULT_CONFIG)
}

/** Prints a headline and then each problem line indented, as `keyway validate` does. */
export function reportProblems(io: CliIo, headline: string, problems: readonly string[]): void {
  io.err(headline)
  for (const p of problems) io.err(`  ${p}`)
}

/** `keyway: FILE has N problems:`, the headline of a config that does not load. */
export function problemsHeadline(file: string, count: number): string {
  return `keyway: ${file} has ${count} problem${count === 1 ? '' : 's'}:`
}

/**
 * Loads the config or prints every problem and returns undefined. `skipSecrets` is for commands
 * that only read the file (audit, check-provider), so they work where the server's secrets are
 * not set.
 */
export async function loadOrReport(file: string, io: CliIo, opts: { readonly skipSecrets?: boolean } = {}): Promise<ConfigSnapshot | undefined> {
  const r = await loadConfigFile(file, { env: io.env, ...(opts.skipSecrets ? { skipSecrets: true } : {}) })
  if (!r.ok) {
    reportProblems(io, problemsHeadline(file, r.problems.length), r.problems)
    return undefined
  }
  if (!opts.skipSecrets) for (const w of r.warnings) io.err(`keyway: warning: ${w}`)
  return r.snapshot
}

/** The terminal. Every line is redacted of the secrets this process loaded or used (`src/redact.ts`). */
export const processIo: CliIo = {
  out: (line) => process.stdout.write(`${redactRemembered(line)}\n`),
  err: (line) => process.stderr.write(`${redactRemembered(line)}\n`),
  env: process.env,
  cwd: process.cwd(),
}
