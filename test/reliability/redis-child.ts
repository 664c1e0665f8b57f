/**
 * A private `redis-server` child on a free loopback port for fault drills: no persistence, killed
 * on dispose, and frozen and thawed on demand with SIGSTOP / SIGCONT (a stall, as opposed to a
 * refusal: the socket stays open and commands wait). Never the shared Redis on 6379. A machine
 * without `redis-server` fails the drill; nothing is skipped.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { freePort } from '../helpers/free-port.js'

export interface RedisChild extends AsyncDisposable {
  readonly url: string
  readonly process: ChildProcess
  freeze(): void
  thaw(): void
  stop(): Promise<void>
}

export async function startRedisChild(): Promise<RedisChild> {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s:\n${out}`)), 10_000)
    child.once('error', (e) => {
      clearTimeout(timer)
      reject(new Error(`redis-server could not be started (is it installed?): ${e.message}`))
    })
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer)
        resolve()
      }
    })
    void exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`redis-server exited at start:\n${out}`))
    })
  })
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await exited
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    process: child,
    freeze: () => {
      child.kill('SIGSTOP')
    },
    thaw: () => {
      child.kill('SIGCONT')
    },
    stop,
    [Symbol.asyncDispose]: stop,
  }
}
