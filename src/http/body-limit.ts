/**
 * Request bodies, bounded (README "Security model"): every route has a body cap, and a body is
 * only ever read here, counted as its bytes arrive, so neither a chunked body nor a lying
 * `Content-Length` can make Keyway hold more than the cap. `limitBody` is the gate in front of
 * every route: it refuses from the headers alone a body announced on a route that takes none or
 * declared larger than the route's cap, without reading a byte. `readBody` is how a route that
 * takes a body reads it: a declared length is already bounded by Node's parser (it never reads
 * past `Content-Length`), and a chunked body is read chunk by chunk and abandoned at the cap.
 * A refusal is 413 with `Connection: close`, so Node closes the socket instead of reading the
 * rest. This module decides nothing about what a body means.
 * @module
 */
import type { Context, MiddlewareHandler } from 'hono'

/** Largest browser form post: the consent confirmation form carries one short token. */
export const FORM_MAX_BYTES = 16 * 1024

/** What reading a body gave: its text, or why there is none. */
export type BodyRead =
  | { readonly kind: 'ok'; readonly text: string }
  | { readonly kind: 'too-large' }
  /** The client went away or broke the framing mid-body. */
  | { readonly kind: 'unreadable' }

/** Builds the 413 of a route; `maxBytes` 0 means the route takes no body at all. */
export type TooLarge = (c: Context, maxBytes: number) => Response

/** Headers every 413 carries: the rest of the body is never read, so the connection cannot be reused. */
export const TOO_LARGE_HEADERS: Readonly<Record<string, string>> = { connection: 'close' }

/** The default 413: a small JSON error naming the cap. */
export const tooLargeJson: TooLarge = (c, maxBytes) =>
  c.json({ error: 'payload_too_large', message: describeCap(maxBytes) }, 413, TOO_LARGE_HEADERS)

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
 * the cap is refused without reading; a chunked body is counted chunk by chunk and abandoned (not
 * drained) as soon as it passes the cap. The caller answers a `too-large` with a 413 carrying
 * `TOO_LARGE_HEADERS`.
 */
export async function readBody(c: Context, maxBytes: number): Promise<BodyRead> {
  const declared = declaredLength(c.req.raw.headers)
  if (declared !== undefined) {
    if (declared > maxBytes) return { kind: 'too-large' }
    if (declared === 0) return { kind: 'ok', text: '' }
    // Node's HTTP parser delivers exactly Content-Length bytes (a request with both a length and
    // chunked framing is refused before it gets here), so this read is bounded by the check above.
    let text: string
    try {
      text = await c.req.text()
    } catch {
      return { kind: 'unreadable' }
    }
    return Buffer.byteLength(text) > maxBytes ? { kind: 'too-large' } : { kind: 'ok', text }
  }
  const stream = c.req.raw.body
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
        // Not cancelled: cancelling destroys the socket before the 413 is written. Left unread,
        // the stream pauses (backpressure), and `Connection: close` ends the socket after the answer.
        reader.releaseLock()
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
 * is chunked and only counting tells its size.
 */
function declaredLength(headers: Headers): number | undefined {
  if (headers.has('transfer-encoding')) return undefined
  const length = headers.get('content-length')
  if (length === null) return undefined
  // Node refuses a malformed Content-Length before routing; anything else unparseable counts as none.
  const n = Number(length)
  return Number.isSafeInteger(n) && n > 0 ? n : 0
}
