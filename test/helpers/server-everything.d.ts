/**
 * The one export of `@modelcontextprotocol/server-everything` (which ships no typings) that
 * `start-upstream-mcp.ts` uses: the reference server's factory, an SDK v1 `McpServer`.
 * @module
 */
declare module '@modelcontextprotocol/server-everything/dist/server/index.js' {
  import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
  export function createServer(): { server: McpServer; cleanup: (sessionId?: string) => void }
}
