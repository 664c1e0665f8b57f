/**
 * A real loopback upstream API for tests: a node:http server on 127.0.0.1:0 that records every
 * request it receives (method, path, query, headers, body) and answers from a handler the test
 * gives, by default 200 with a JSON echo of what it saw (never the Authorization value).
 * @module
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly query: string
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly body: string
}

export type UpstreamHandler = (req: RecordedRequest, res: ServerResponse) => void | Promise<void>

export interface Upstream {
  readonly url: string
  readonly origin: string
  readonly requests: RecordedRequest[]
  last(): RecordedRequest | undefined
  setHandler(h: UpstreamHandler | undefined): void
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export async function startUpstream(handler?: UpstreamHandler): Promise<Upstream> {
  const requests: RecordedRequest[] = []
  let current = handler
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x')
      const rec: RecordedRequest = {
        method: req.method ?? '',
        path: u.pathname,
        query: u.search,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }
      requests.push(rec)
      if (current) {
        Promise.resolve(current(rec, res)).catch(() => res.destroy())
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: true, method: rec.method, path: rec.path, query: rec.query, gotAuthorization: rec.headers.authorization !== undefined }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  const origin = `http://127.0.0.1:${port}`
  const close = (): Promise<void> =>
    new Promise((r) => {
      server.closeAllConnections()
      server.close(() => r())
    })
  return {
    url: origin,
    origin,
    requests,
    last: () => requests.at(-1),
    setHandler: (h) => {
      current = h
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
