/**
 * What every `keyway` subcommand shares: the I/O seam (so tests run commands in-process),
 * locating the config file, and loading it with the problem report printed the same way
 * everywhere. Subcommands live one per file and export `run(argv, io)`.
 * @module
 */
import path from 'node:path'
import { loadConfigFile, type ConfigSnapshot, type Env } from '../src/config/load.js'
import { SUPPORTED_AUTH_TYPES } from '../src/credentials/supported.js'

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

/** Loads the config or prints every problem and returns undefined. */
export async function loadOrReport(file: string, io: CliIo): Promise<ConfigSnapshot | undefined> {
  const r = await loadConfigFile(file, { env: io.env, supportedAuthTypes: SUPPORTED_AUTH_TYPES })
  if (!r.ok) {
    io.err(`keyway: ${file} has ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}:`)
    for (const p of r.problems) io.err(`  ${p}`)
    return undefined
  }
  for (const w of r.warnings) io.err(`keyway: warning: ${w}`)
  return r.snapshot
}

export const processIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
  cwd: process.cwd(),
}
