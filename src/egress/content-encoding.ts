/**
 * Undoing an upstream's `Content-Encoding` before a body is shown to the model. Keyway asks for
 * `identity`, but an upstream may compress anyway, and a compressed echo of the request would
 * carry the credential past redaction, which reads bytes (README "Security model"). Decoding is
 * bounded by the connection's response cap; an encoding that cannot be decoded here withholds
 * the body instead of passing bytes nobody checked. Pure: no I/O.
 * @module
 */
import { brotliDecompressSync, constants, gunzipSync, inflateSync } from 'node:zlib'
import type { OutboundResponse } from './safe-fetch.js'

export interface DecodedBody {
  readonly body: Buffer
  readonly truncated: boolean
  /** Set when the body was withheld; says why, for the tool result. */
  readonly note?: string
}

const DECODERS: Readonly<Record<string, (buf: Buffer, maxOutputLength: number) => Buffer>> = {
  gzip: (buf, maxOutputLength) => gunzipSync(buf, { maxOutputLength, finishFlush: constants.Z_SYNC_FLUSH }),
  'x-gzip': (buf, maxOutputLength) => gunzipSync(buf, { maxOutputLength, finishFlush: constants.Z_SYNC_FLUSH }),
  deflate: (buf, maxOutputLength) => inflateSync(buf, { maxOutputLength, finishFlush: constants.Z_SYNC_FLUSH }),
  br: (buf, maxOutputLength) => brotliDecompressSync(buf, { maxOutputLength, finishFlush: constants.BROTLI_OPERATION_FLUSH }),
}

/** The body as the upstream meant it, decoded from every listed content coding (RFC 9110 §8.4), at most `maxBytes`. */
export function decodeContent(res: OutboundResponse, maxBytes: number): DecodedBody {
  const header = res.headers['content-encoding']
  if (header === undefined || res.body.length === 0) return { body: res.body, truncated: res.truncated }
  // Codings are listed in the order they were applied; undo them last first.
  const codings = header
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity')
    .reverse()
  let body = res.body
  for (const coding of codings) {
    const decode = DECODERS[coding]
    if (decode === undefined) return withheld(`the upstream sent content-encoding ${coding.slice(0, 32)}, which Keyway cannot check for credentials`)
    try {
      body = decode(body, maxBytes)
    } catch (e) {
      const tooLarge = e instanceof RangeError || (e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE'
      return withheld(tooLarge ? `the decoded body exceeds ${maxBytes} bytes` : `the ${coding} body does not decode`)
    }
  }
  return { body, truncated: res.truncated }
}

function withheld(reason: string): DecodedBody {
  return { body: Buffer.alloc(0), truncated: true, note: `[body withheld: ${reason}]` }
}
