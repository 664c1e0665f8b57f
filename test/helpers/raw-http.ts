/**
 * HTTP/1.1 at the socket level, for attack tests that a well-behaved client (fetch) cannot make:
 * endless chunked bodies streamed without ever being held in memory, lying `Content-Length`s,
 * headers sent slowly, connections held open. Talks only to 127.0.0.1.
 * @module
 */
import { connect, type Socket } from 'node:net'

export interface RawSocket {
  readonly socket: Socket
  /** Everything the server sent so far, as latin1 text. */
  received(): string
  /** Resolves once the socket is closed (by either side); never rejects. */
  readonly closed: Promise<void>
  isClosed(): boolean
}

/** Opens a TCP connection to the origin's host and port and records what comes back. */
export async function openRaw(origin: string): Promise<RawSocket> {
  const u = new URL(origin)
  const socket = connect({ host: u.hostname, port: Number(u.port) })
  let data = ''
  let isClosed = false
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => {
    data += d
  })
  // Writes after the server hung up fail with EPIPE/ECONNRESET: that is the outcome under test, not an error.
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      isClosed = true
      resolve()
    }),
  )
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('close', () => reject(new Error(`connection to ${origin} closed before it opened`)))
  })
  return { socket, received: () => data, closed, isClosed: () => isClosed }
}

/** The status code of the first response in `raw`, or undefined when none arrived. */
export function statusOf(raw: string): number | undefined {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(raw)
  return m ? Number(m[1]) : undefined
}

/** The value of a header of the first response in `raw` (case-insensitive name). */
export function headerOf(raw: string, name: string): string | undefined {
  const head = raw.split('\r\n\r\n', 1)[0] ?? ''
  for (const line of head.split('\r\n').slice(1)) {
    const i = line.indexOf(':')
    if (i > 0 && line.slice(0, i).trim().toLowerCase() === name.toLowerCase()) return line.slice(i + 1).trim()
  }
  return undefined
}

/** The body of the first response in `raw` (everything after the header block). */
export function bodyOf(raw: string): string {
  const i = raw.indexOf('\r\n\r\n')
  return i < 0 ? '' : raw.slice(i + 4)
}

/** Sends `bytes` and waits until the server closes the connection; returns what it sent back. */
export async function exchange(origin: string, bytes: string | Buffer): Promise<string> {
  const raw = await openRaw(origin)
  raw.socket.write(bytes)
  await raw.closed
  return raw.received()
}

export interface StreamOutcome {
  /** What the server answered (latin1), possibly empty if it only hung up. */
  readonly response: string
  /** Body bytes the client managed to hand to the kernel before the server answered or hung up. */
  readonly bodyBytesWritten: number
}

/**
 * Streams a chunked body of up to `totalBytes` after `head` (a request line and headers, without
 * `Transfer-Encoding` and without the blank line), one reused chunk at a time, honouring
 * backpressure. Stops as soon as the server answers or hangs up, then waits for the close.
 */
export async function streamChunked(origin: string, head: string, totalBytes: number, chunkBytes = 64 * 1024): Promise<StreamOutcome> {
  const raw = await openRaw(origin)
  const { socket } = raw
  const frame = Buffer.concat([Buffer.from(`${chunkBytes.toString(16)}\r\n`), Buffer.alloc(chunkBytes, 0x61), Buffer.from('\r\n')])
  const overhead = frame.length - chunkBytes
  const headBytes = Buffer.byteLength(`${head}transfer-encoding: chunked\r\n\r\n`)
  socket.write(`${head}transfer-encoding: chunked\r\n\r\n`)
  const stopped = (): boolean => raw.isClosed() || raw.received().length > 0
  let sent = 0
  while (sent < totalBytes && !stopped()) {
    // Let the poll phase run first: a server that answered and hung up is heard before the next
    // write, which would otherwise fail (EPIPE) and drop the socket with the answer unread.
    await new Promise<void>((resolve) => setImmediate(resolve))
    if (stopped()) break
    sent += chunkBytes
    if (!socket.write(frame)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off('drain', done)
          socket.off('data', done)
          socket.off('close', done)
          resolve()
        }
        socket.once('drain', done)
        socket.once('data', done)
        socket.once('close', done)
      })
    }
  }
  if (!stopped()) socket.write('0\r\n\r\n')
  else socket.end()
  await raw.closed
  // bytesWritten counts what reached the kernel: the head, whole frames, and their framing.
  const frames = Math.max(0, socket.bytesWritten - headBytes)
  return { response: raw.received(), bodyBytesWritten: Math.round((frames * chunkBytes) / (chunkBytes + overhead)) }
}
