/**
 * A `CliIo` for running a command's `run` in-process: what it prints is kept line by line.
 * @module
 */
import type { Env } from '../../src/config/load.js'
import type { CliIo } from '../../tools/cli.js'

export interface CapturedIo extends CliIo {
  readonly outLines: string[]
  readonly errLines: string[]
}

export function captureIo(env: Env, cwd: string): CapturedIo {
  const outLines: string[] = []
  const errLines: string[] = []
  return { out: (l) => outLines.push(l), err: (l) => errLines.push(l), env, cwd, outLines, errLines }
}
