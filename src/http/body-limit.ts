/**
 * Request bodies, bounded (README "Security model"): every route has a body cap, and a body is
 * only ever read here, counted as its bytes arrive, so neither a chunked body nor a lying
 * `Content-Length` can make Keyway hold more than the cap. `limitBody` is the gate in front of
 * every route: it refuses from the headers alone a body announced on a route that takes none or
 * declared larger than the route's cap, without reading a byte. `readBody` is how a route that
 * takes a body reads it: chunk by chunk, abandoned the moment it passes the cap. A refusal is 413
 * with `Connection: close` (`closeAfterAnswer`). This module decides nothing about what a body means.
 * @module
 */
import { IncomingMessage } from 'node:http'
import type { Context, MiddlewareHandler } from 'hono'

/** Largest browser form post: the consent confirmation form carries one short token. */
export const FORM_MAX_BYTES = 16 * 1024

/**
 * After a 413 the connection lingers half-closed this long before it is cut. Closing a socket
 * with unread bytes makes the kernel reset the connection at once, and a client still uploading
 * then loses the answer it had not read yet; a moment of grace lets it read the 413 and stop.
 */
export const LINGER_MS = 2_000
/** What a client may still push during the linger (discarded unread) before it is cut anyway. */
export const LINGER_MAX_BYTES = 1024 * 1024

/** What reading a body gave: its text, or why there is none. */
export type BodyRead =
  | { readonly kind: 'ok'; readonly text: string }
  | { readonly kind: 'too-large' }
  /** The client went away or broke the framing mid-body. */
  | { readonly kind: 'unreadable' }

/** Builds the 413 of a route; `maxBytes` 0 means the route takes no body at all. */
export type TooLarge = (c: Context, maxBytes: number) => Response

/** The default 413: a small JSON error naming the cap. */
export const tooLargeJson: TooLarge = (c, maxBytes) => c.json({ error: 'payload_too_large', message: describeCap(maxBytes) }, 413, closeAfterAnswer(c))

/** `request body exceeds N bytes`, or that the route takes none. */
export function describeCap(maxBytes: number): string {
  return maxBytes === 0 ? 'this route takes no request body' : `request body exceeds ${maxBytes} bytes`
}

/**
 * The gate in front of every route: `capOf` says how many body bytes the request's route may
 * receive (0: none). Refuses, from the headers alone, any body on a route whose cap is 0 and any
 * `Content-Length` above the cap. A chunked body within a nonzero cap passes; the route reads it
 * through `readBody`, which counts.
 */
export function limitBody(capOf: (c: Context) => number, tooLarge: TooLarge = tooLargeJson): MiddlewareHandler {
  return async function limitBody(c, next) {
    const cap = capOf(c)
    const headers = c.req.raw.headers
    const declared = declaredLength(headers)
    if (declared === undefined ? headers.has('transfer-encoding') && cap === 0 : declared > cap) return tooLarge(c, cap)
    await next()
    return undefined
  }
}

/**
 * Reads the body as UTF-8 text, never holding more than `maxBytes` of it. A declared length above
 * the cap is refused without reading; otherwise the bytes are counted as they arrive and reading
 * stops as soon as they pass the cap (the rest is never read). Answer a `too-large` with a 413
 * whose headers come from `closeAfterAnswer`.
 */
export async function readBody(c: Context, maxBytes: number): Promise<BodyRead> {
  const declared = declaredLength(c.req.raw.headers)
  if (declared !== undefined && declared > maxBytes) return { kind: 'too-large' }
  if (declared === 0) return { kind: 'ok', text: '' }
  const incoming = nodeRequest(c)
  return incoming ? readIncoming(incoming, maxBytes) : readStream(c.req.raw.body, maxBytes)
}

/**
 * The headers of a refusal that leaves the body unread (`Connection: close`), and, on a Node
 * listener, a lingering close: once the answer is written the socket's write side ends, anything
 * still arriving is discarded unread, and the socket is cut when the client hangs up, after
 * `LINGER_MAX_BYTES` more, or after `LINGER_MS`, whichever comes first.
 */
export function closeAfterAnswer(c: Context): Record<string, string> {
  const incoming = nodeRequest(c)
  const socket = incoming?.socket
  if (incoming && socket && !socket.destroyed) {
    // Node ends a `Connection: close` answer with socket.destroySoon(): close once written.
    let lingering = false
    socket.destroySoon = function lingeringClose(): void {
      if (lingering) return
      lingering = true
      socket.end()
      const timer = setTimeout(() => socket.destroy(), LINGER_MS)
      timer.unref()
      socket.once('close', () => clearTimeout(timer))
      let discarded = 0
      incoming.on('data', (chunk: Buffer) => {
        discarded += chunk.length
        if (discarded > LINGER_MAX_BYTES) socket.destroy()
      })
      incoming.once('end', () => socket.destroy())
      incoming.resume()
    }
  }
  return { connection: 'close' }
}

/** The Node request behind the context, when served by `@hono/node-server` (not `app.request()`). */
function nodeRequest(c: Context): IncomingMessage | undefined {
  const env = c.env as { incoming?: unknown } | undefined
  return env?.incoming instanceof IncomingMessage ? env.incoming : undefined
}

/** Counts the Node request's body as it arrives; past the cap it is paused and left unread. */
function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<BodyRead> {
  if (incoming.readableEnded) return Promise.resolve({ kind: 'ok', text: '' })
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    const finish = (r: BodyRead): void => {
      incoming.off('data', onData)
      incoming.off('end', onEnd)
      incoming.off('error', onFailure)
      incoming.off('close', onFailure)
      resolve(r)
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > maxBytes) {
        incoming.pause()
        chunks.length = 0
        finish({ kind: 'too-large' })
      } else chunks.push(chunk)
    }
    const onEnd = (): void => finish({ kind: 'ok', text: Buffer.concat(chunks, size).toString('utf8') })
    const onFailure = (): void => finish({ kind: 'unreadable' })
    incoming.on('data', onData)
    incoming.once('end', onEnd)
    incoming.once('error', onFailure)
    incoming.once('close', onFailure)
  })
}

/** The same count over a web stream (requests made in process with `app.request()`). */
async function readStream(stream: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<BodyRead> {
  if (!stream) return { kind: 'ok', text: '' }
  const reader = stream.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > maxBytes) {
        await reader.cancel()
        return { kind: 'too-large' }
      }
      chunks.push(value)
    }
  } catch {
    return { kind: 'unreadable' }
  }
  return { kind: 'ok', text: Buffer.concat(chunks, size).toString('utf8') }
}

/**
 * The declared `Content-Length` (0 when it is absent or meaningless), or undefined when the body
 * is chunked, or not announced at all (a web `Request` made in process), and only counting tells.
 */
function declaredLength(headers: Headers): number | undefined {
  if (headers.has('transfer-encoding')) return undefined
  const length = headers.get('content-length')
  if (length === null) return undefined
  // Node refuses a malformed Content-Length before routing; anything else unparseable counts as none.
  const n = Number(length)
  return Number.isSafeInteger(n) && n > 0 ? n : 0
}
