/**
 * An incremental Server-Sent Events parser (WHATWG HTML "Server-sent events", §9.2.6 "Interpreting an
 * event stream") for the streams of upstream MCP servers: bytes go in as they arrive, in chunks cut
 * anywhere (inside a line, a CRLF pair or a UTF-8 sequence), and each complete event comes out once its
 * blank line is seen. It owns only the framing; it must not interpret the data (JSON-RPC is the
 * client's business, `client.ts`) nor keep events it has handed out. A line longer than the cap is
 * dropped with the event it belongs to, so a stream without line breaks cannot grow memory without bound.
 * @module
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */

export interface SseEvent {
  /** The `event:` field, `message` when none was given. */
  readonly event: string
  /** The `data:` lines joined with `\n`. */
  readonly data: string
  /** The last `id:` seen on the stream, if any. */
  readonly id: string | undefined
}

export interface SseParser {
  /** Feeds the next chunk of the stream; `onEvent` runs synchronously for each event it completes. */
  push(chunk: Uint8Array): void
}

/** Longest line kept (characters); an MCP message larger than the egress size cap never arrives anyway. */
export const SSE_MAX_LINE_CHARS = 16 * 1024 * 1024

export function createSseParser(onEvent: (e: SseEvent) => void, maxLineChars = SSE_MAX_LINE_CHARS): SseParser {
  const decoder = new TextDecoder('utf-8')
  let pending = '' // text of the line not yet ended
  let skipLf = false // the previous chunk ended with CR: a leading LF belongs to that line end
  let overlong = false // the current line passed the cap: ignore it and the event it is in
  let started = false // a BOM is skipped only at the very start
  let data: string[] = []
  let eventType = ''
  let lastId: string | undefined
  let discardEvent = false

  const dispatch = (): void => {
    if (!discardEvent && data.length > 0) onEvent({ event: eventType === '' ? 'message' : eventType, data: data.join('\n'), id: lastId })
    data = []
    eventType = ''
    discardEvent = false
  }

  const line = (text: string): void => {
    if (text === '') return dispatch()
    if (text.startsWith(':')) return // comment (keep-alive)
    const colon = text.indexOf(':')
    const field = colon === -1 ? text : text.slice(0, colon)
    let value = colon === -1 ? '' : text.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'data':
        data.push(value)
        break
      case 'event':
        eventType = value
        break
      case 'id':
        if (!value.includes('\0')) lastId = value
        break
      default: // `retry` and unknown fields: nothing for us
    }
  }

  return {
    push(chunk) {
      let text = decoder.decode(chunk, { stream: true })
      if (!started && text.length > 0) {
        started = true
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
      }
      let from = 0
      if (skipLf && text.startsWith('\n')) from = 1
      skipLf = false
      for (let i = from; i < text.length; i++) {
        const c = text.charCodeAt(i)
        if (c !== 10 && c !== 13) continue
        const whole = overlong ? '' : pending + text.slice(from, i)
        if (overlong || whole.length > maxLineChars) discardEvent = true
        else line(whole)
        overlong = false
        pending = ''
        if (c === 13) {
          if (i + 1 === text.length) skipLf = true
          else if (text.charCodeAt(i + 1) === 10) i++
        }
        from = i + 1
      }
      if (overlong) return
      pending += text.slice(from)
      if (pending.length > maxLineChars) {
        pending = ''
        overlong = true
        discardEvent = true
      }
    },
  }
}
