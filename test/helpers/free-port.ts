/**
 * A free TCP port on 127.0.0.1 for tests that must put a port into a config file before the
 * process that binds it starts (a spawned `keyway serve`). The port is released before it is
 * returned, so another process could take it first; retry the spawn if that ever shows up.
 * @module
 */
import { createServer } from 'node:net'

/** Asks the OS for a free loopback port and releases it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port was assigned'))))
    })
  })
}
