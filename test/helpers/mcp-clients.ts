/**
 * Real MCP clients for tests, one per protocol era: the v2 `@modelcontextprotocol/client`
 * speaking 2026-07-28 (or the 2025 handshake when asked), and the v1 `@modelcontextprotocol/sdk`
 * as the 2025-era client. Both talk Streamable HTTP to a listening Keyway with a bearer key.
 * @module
 */
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'

export type Era = 'modern' | 'legacy-v2' | 'legacy-v1'
export const ERAS: readonly Era[] = ['modern', 'legacy-v2', 'legacy-v1']

export interface ToolCallResult {
  readonly isError?: boolean
  readonly content: readonly { type: string; text?: string }[]
  readonly structuredContent?: Record<string, unknown>
  readonly [k: string]: unknown
}

export interface TestClient {
  readonly era: Era
  listToolNames(): Promise<string[]>
  callTool(name: string, args: Record<string, unknown>): Promise<ToolCallResult>
  close(): Promise<void>
}

export interface ConnectOptions {
  readonly bearer?: string
  readonly capabilities?: Record<string, unknown>
}

export async function connectClient(era: Era, mcpUrl: string, opts: ConnectOptions = {}): Promise<TestClient> {
  const headers: Record<string, string> = opts.bearer ? { authorization: `Bearer ${opts.bearer}` } : {}
  const info = { name: `keyway-test-${era}`, version: '1.0.0' }
  if (era === 'legacy-v1') {
    const client = new LegacyClient(info, { capabilities: opts.capabilities ?? {} })
    await client.connect(new LegacyTransport(new URL(mcpUrl), { requestInit: { headers } }))
    return wrap(era, client)
  }
  const client = new ModernClient(info, {
    capabilities: opts.capabilities ?? {},
    versionNegotiation: { mode: era === 'modern' ? 'auto' : 'legacy' },
  })
  await client.connect(new ModernTransport(new URL(mcpUrl), { requestInit: { headers } }))
  return wrap(era, client)
}

interface AnyClient {
  listTools(): Promise<{ tools: { name: string }[] }>
  callTool(p: { name: string; arguments: Record<string, unknown> }): Promise<unknown>
  close(): Promise<void>
}

function wrap(era: Era, client: AnyClient): TestClient {
  return {
    era,
    listToolNames: async () => (await client.listTools()).tools.map((t) => t.name),
    callTool: async (name, args) => (await client.callTool({ name, arguments: args })) as ToolCallResult,
    close: () => client.close(),
  }
}

/** The text of a tool result's first content block. */
export function textOf(r: ToolCallResult): string {
  return r.content[0]?.text ?? ''
}
