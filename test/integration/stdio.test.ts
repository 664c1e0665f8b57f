/**
 * `keyway serve --stdio` as an MCP client host (Claude Desktop, IDEs) runs it: a spawned
 * process of the built bin, spoken to over stdin/stdout by the official clients of both eras.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import path from 'node:path'
import { Client as ModernClient } from '@modelcontextprotocol/client'
import { StdioClientTransport as ModernStdio } from '@modelcontextprotocol/client/stdio'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport as LegacyStdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { writeTempConfig } from '../helpers/config.js'
import { startUpstream, type Upstream } from '../helpers/start-upstream.js'

const BIN = path.resolve('dist/tools/keyway.js')
const TOKEN = 'sk-CANARY-stdio-token-42'
let upstream: Upstream
let configFile: string

beforeAll(async () => {
  upstream = await startUpstream()
  const { file } = await writeTempConfig(
    `
version: 1
server: { port: 0 }
identity: { stdioUser: alice@example.com }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
groups: { team: [bob@example.com] }
connections:
  notes:
    host: ${upstream.origin}
    basePath: /api
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { file: ./token.txt } }
  team_only:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { file: ./token.txt } }
grants:
  - { privilege: USE CONNECTION, on: team_only, to: { group: team } }
`,
    { 'token.txt': `${TOKEN}\n` },
  )
  configFile = file
})

afterAll(async () => {
  await upstream?.close()
})

interface StdioClient {
  listTools(): Promise<{ tools: { name: string }[] }>
  callTool(p: { name: string; arguments: Record<string, unknown> }): Promise<unknown>
  close(): Promise<void>
}

async function spawnClient(kind: 'modern' | 'legacy-v2' | 'legacy-v1', extraArgs: string[]): Promise<{ client: StdioClient; stderr: () => string }> {
  const args = [BIN, 'serve', '--stdio', '--no-watch', '--config', configFile, ...extraArgs]
  let err = ''
  const info = { name: `stdio-${kind}`, version: '1.0.0' }
  if (kind === 'legacy-v1') {
    const transport = new LegacyStdio({ command: process.execPath, args, stderr: 'pipe' })
    transport.stderr?.on('data', (d: Buffer) => (err += d.toString()))
    const client = new LegacyClient(info, { capabilities: {} })
    await client.connect(transport)
    return { client, stderr: () => err }
  }
  const transport = new ModernStdio({ command: process.execPath, args, stderr: 'pipe' })
  transport.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  const client = new ModernClient(info, { capabilities: {}, versionNegotiation: { mode: kind === 'modern' ? 'auto' : 'legacy' } })
  await client.connect(transport)
  return { client, stderr: () => err }
}

describe.each(['modern', 'legacy-v2', 'legacy-v1'] as const)('stdio with the %s client', (kind) => {
  test('runs as identity.stdioUser: lists its tools and calls with the injected token [identity:stdio]', async () => {
    const { client, stderr } = await spawnClient(kind, [])
    try {
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['notes'])
      const before = upstream.requests.length
      const r = (await client.callTool({ name: 'notes', arguments: { path: '/list' } })) as { isError?: boolean; structuredContent?: unknown }
      expect(r.isError).toBeFalsy()
      expect(upstream.requests.length).toBe(before + 1)
      expect(upstream.last()?.headers.authorization).toBe(`Bearer ${TOKEN}`)
      expect(upstream.last()?.path).toBe('/api/list')
      expect(stderr()).toContain('serving MCP on stdio as alice@example.com')
      expect(stderr()).not.toContain(TOKEN)
    } finally {
      await client.close()
    }
  })

  test("--user overrides the configured stdio user, with that user's grants", async () => {
    const { client } = await spawnClient(kind, ['--user', 'bob@example.com'])
    try {
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['team_only'])
      const denied = (await client.callTool({ name: 'notes', arguments: { path: '/x' } })) as { isError?: boolean; content: { text: string }[] }
      expect(denied.isError).toBe(true)
      expect(denied.content[0]?.text).toMatch(/^PERMISSION_DENIED: user bob@example\.com/)
    } finally {
      await client.close()
    }
  })
})

describe('the browser port of stdio mode', () => {
  test('serves the consent routes, /healthz and /readyz, and no /mcp [serve:stdio-browser-only]', async () => {
    const { client, stderr } = await spawnClient('modern', [])
    try {
      // The ready line names the port; it is written once the listener is up (polled, no fixed wait).
      const deadline = Date.now() + 10_000
      let origin: string | undefined
      while (!(origin = /browser routes on (http:\/\/\S+)/.exec(stderr())?.[1]) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      expect(origin, stderr()).toBeDefined()
      const status = async (path: string, init?: RequestInit): Promise<number> => (await fetch(`${origin}${path}`, init)).status
      expect(await status('/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).toBe(404)
      expect(await status('/mcp')).toBe(404)
      expect(await status('/.well-known/oauth-protected-resource/mcp')).toBe(404)
      expect(await status('/healthz')).toBe(200)
      expect(await status('/readyz')).toBe(200)
      // An unknown consent link is answered by the consent routes (their page), not by the router's 404.
      const link = await fetch(`${origin}/connect/unknown-flow`)
      expect(await link.text()).toContain('<html')
    } finally {
      await client.close()
    }
  })
})
