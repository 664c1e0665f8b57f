/**
 * Runs the built `keyway` bin (`dist/tools/keyway.js`, so `npm run build` first) as a child
 * process, the way an operator does: waits for the ready line on stderr ("listening on" or
 * "serving MCP on stdio"), collects stderr (human lines and JSON log lines), sends signals, and
 * kills the process on dispose. It never talks MCP itself; tests connect real clients.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The built bin, resolved from this file (test/helpers → repo root). */
export const KEYWAY_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/tools/keyway.js')

/** The line `keyway serve` prints on stderr once it accepts requests. */
export const READY_LINE = /keyway: (listening on (\S+)|serving MCP on stdio)/

export interface SpawnKeywayOptions {
  /** Added to the parent's environment. */
  readonly env?: Readonly<Record<string, string>>
  readonly cwd?: string
  /** Wait for this on stderr before resolving; false resolves at once. Default `READY_LINE`. */
  readonly ready?: RegExp | false
  /** Default 20 s. */
  readonly timeoutMs?: number
}

export interface SpawnedKeyway extends AsyncDisposable {
  readonly process: ChildProcess
  /** `http://host:port/mcp` from the "listening on" line, when there was one. */
  readonly mcpUrl: string | undefined
  /** Everything written to stderr so far. */
  stderr(): string
  /** Everything written to stdout so far. */
  stdout(): string
  /** The JSON log lines on stderr so far, parsed. */
  logs(): Record<string, unknown>[]
  /** Resolves with the first match of `pattern` in stderr (already written or yet to come). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>
  /** Resolves with the first JSON log line `match` accepts. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  /** Resolves with the exit code once the process has exited. */
  exited(): Promise<number | null>
  signal(sig: NodeJS.Signals): void
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. */
  stop(): Promise<number | null>
}

/** Spawns `node dist/tools/keyway.js ...args`; rejects with the collected stderr when it does not get ready. */
export async function spawnKeyway(args: readonly string[], opts: SpawnKeywayOptions = {}): Promise<SpawnedKeyway> {
  if (!existsSync(KEYWAY_BIN)) throw new Error(`${KEYWAY_BIN} does not exist; run npm run build first`)
  const child = spawn(process.execPath, [KEYWAY_BIN, ...args], {
    cwd: opts.cwd ?? process.cwd(),
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let err = ''
  let out = ''
  const waiters = new Set<() => void>()
  const notify = (): void => {
    for (const w of [...waiters]) w()
  }
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
    notify()
  })
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  let hasExited = false
  void exit.then(() => {
    hasExited = true
    notify()
  })

  const waitFor = <T>(probe: () => T | undefined, what: string, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = (): void => {
        const v = probe()
        if (v !== undefined) return done(() => resolve(v))
        if (hasExited) return done(() => reject(new Error(`keyway exited before ${what}; stderr:\n${err}`)))
      }
      const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${err}`))), timeoutMs)
      const done = (f: () => void): void => {
        clearTimeout(timer)
        waiters.delete(check)
        f()
      }
      waiters.add(check)
      check()
    })

  const logs = (): Record<string, unknown>[] =>
    err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>]
        } catch {
          return []
        }
      })

  const stop = async (): Promise<number | null> => {
    if (!hasExited) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      timer.unref()
      const code = await exit
      clearTimeout(timer)
      return code
    }
    return exit
  }

  const timeoutMs = opts.timeoutMs ?? 20_000
  let mcpUrl: string | undefined
  const ready = opts.ready ?? READY_LINE
  if (ready) {
    try {
      const m = await waitFor(() => ready.exec(err) ?? undefined, `${ready}`, timeoutMs)
      mcpUrl = m[2]
    } catch (e) {
      await stop()
      throw e
    }
  }

  return {
    process: child,
    mcpUrl,
    stderr: () => err,
    stdout: () => out,
    logs,
    waitForStderr: (pattern, ms = timeoutMs) => waitFor(() => pattern.exec(err) ?? undefined, `${pattern}`, ms),
    waitForLog: (match, ms = timeoutMs) => waitFor(() => logs().find(match), 'a matching log line', ms),
    exited: () => exit,
    signal: (sig) => {
      child.kill(sig)
    },
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop()
    },
  }
}

export interface KeywayRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a one-shot command (`validate`, `audit`, `check-provider`) of the built bin to completion
 * without blocking the event loop, so peers served by the test process itself keep answering.
 */
export async function runKeyway(args: readonly string[], opts: Omit<SpawnKeywayOptions, 'ready'> = {}): Promise<KeywayRun> {
  const k = await spawnKeyway(args, { ...opts, ready: false })
  k.process.stdin?.end()
  const timer = setTimeout(() => k.process.kill('SIGKILL'), opts.timeoutMs ?? 20_000)
  const code = await k.exited()
  clearTimeout(timer)
  // 'exit' can precede the last 'data' events of the pipes.
  await new Promise((r) => setImmediate(r))
  return { code, stdout: k.stdout(), stderr: k.stderr() }
}
