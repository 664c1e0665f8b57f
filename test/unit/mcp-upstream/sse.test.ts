import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { createSseParser, type SseEvent } from '../../../src/mcp-upstream/sse.js'

function parseAll(chunks: readonly Uint8Array[], maxLineChars?: number): SseEvent[] {
  const out: SseEvent[] = []
  const p = createSseParser((e) => out.push(e), maxLineChars)
  for (const c of chunks) p.push(c)
  return out
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** Cuts `bytes` at the given offsets (sorted, deduplicated, inside the buffer). */
function cut(bytes: Uint8Array, offsets: readonly number[]): Uint8Array[] {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b)
  const parts: Uint8Array[] = []
  let from = 0
  for (const p of points) {
    parts.push(bytes.subarray(from, p))
    from = p
  }
  parts.push(bytes.subarray(from))
  return parts
}

const STREAM =
  '\uFEFF: keep-alive\r\n' +
  'event: message\r\nid: 1\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"message":"é ✓ 𝄞"}}\r\n\r\n' +
  'data: line one\ndata:line two\n\n' +
  'retry: 1000\revent: other\rdata: x\r\r' +
  'data: {"jsonrpc":"2.0","id":7,"result":{}}\n\n' +
  'data: no blank line after me'

const EXPECTED: SseEvent[] = [
  { event: 'message', id: '1', data: '{"jsonrpc":"2.0","method":"notifications/progress","params":{"message":"é ✓ 𝄞"}}' },
  { event: 'message', id: '1', data: 'line one\nline two' },
  { event: 'other', id: '1', data: 'x' },
  { event: 'message', id: '1', data: '{"jsonrpc":"2.0","id":7,"result":{}}' },
]

describe('createSseParser', () => {
  test('parses a whole stream: comments, CRLF/CR/LF line ends, multi-line data, event types, ids, a BOM; an unterminated event is not dispatched', () => {
    expect(parseAll([enc(STREAM)])).toEqual(EXPECTED)
  })

  test('gives the same events whatever the chunk boundaries (inside CRLF pairs and UTF-8 sequences too)', () => {
    const bytes = enc(STREAM)
    fc.assert(
      fc.property(fc.array(fc.nat(bytes.length), { maxLength: 40 }), (offsets) => {
        expect(parseAll(cut(bytes, offsets))).toEqual(EXPECTED)
      }),
      { numRuns: 500 },
    )
  })

  test('one byte at a time', () => {
    const bytes = enc(STREAM)
    expect(parseAll([...bytes].map((b) => Uint8Array.of(b)))).toEqual(EXPECTED)
  })

  test('a CR at the end of one chunk and an LF at the start of the next are one line end, not an empty line', () => {
    expect(parseAll([enc('data: a\r'), enc('\ndata: b\r\n\r\n')])).toEqual([{ event: 'message', id: undefined, data: 'a\nb' }])
  })

  test('an event with a line over the cap is dropped; the next event is kept', () => {
    const long = 'data: ' + 'x'.repeat(100)
    const events = parseAll([enc(long.slice(0, 50)), enc(long.slice(50) + '\ndata: tail\n\n'), enc('data: next\n\n')], 64)
    expect(events).toEqual([{ event: 'message', id: undefined, data: 'next' }])
  })

  test('an event without data is not dispatched', () => {
    expect(parseAll([enc('event: ping\n\n: comment\n\n')])).toEqual([])
  })
})
