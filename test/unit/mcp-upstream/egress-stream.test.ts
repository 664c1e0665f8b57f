/** The egress streaming hook the upstream MCP client reads SSE through: `onChunk` and `keepBody: false`. */
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createEgress, type Egress } from '../../../src/egress/safe-fetch.js'
import { startUpstream, type Upstream } from '../../helpers/start-upstream.js'

let upstream: Upstream
let egress: Egress

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: one\n\n')
    setImmediate(() => res.end('data: two\n\n'))
  })
  egress = createEgress({ policy: { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: true } })
})

afterAll(async () => {
  await egress.close()
  await upstream.close()
})

const request = { method: 'GET', headers: {}, timeoutMs: 5000 } as const

test('onChunk sees every body byte as it arrives; the body is kept by default', async () => {
  const chunks: Buffer[] = []
  const res = await egress.send({ ...request, url: new URL(upstream.url), maxResponseBytes: 1024, onChunk: (c) => chunks.push(c) })
  expect(Buffer.concat(chunks).toString()).toBe('data: one\n\ndata: two\n\n')
  expect(res.body.toString()).toBe('data: one\n\ndata: two\n\n')
})

test('keepBody: false hands chunks to onChunk only; the size cap still counts them', async () => {
  const chunks: Buffer[] = []
  const res = await egress.send({ ...request, url: new URL(upstream.url), maxResponseBytes: 1024, keepBody: false, onChunk: (c) => chunks.push(c) })
  expect(res.body.length).toBe(0)
  expect(Buffer.concat(chunks).toString()).toBe('data: one\n\ndata: two\n\n')

  const capped: Buffer[] = []
  const cut = await egress.send({ ...request, url: new URL(upstream.url), maxResponseBytes: 5, keepBody: false, onChunk: (c) => capped.push(c) })
  expect(cut.truncated).toBe(true)
  expect(Buffer.concat(capped).toString()).toBe('data:')
})
