/**
 * Real upstream MCP servers for tests, on plain `node:http` servers bound to 127.0.0.1 on a random
 * port, each recording what it received so tests can assert on the wire:
 * - `startEverythingServer`: the reference server `@modelcontextprotocol/server-everything` over the
 *   SDK v1 sessionful Streamable HTTP transport (not its own launcher, which binds every interface);
 *   `restart()` drops every session, as a real restart does.
 * - `startProtectedMcpServer`: a small server of the tests' own that checks the bearer token (a
 *   `verify` callback, e.g. against the test oidc-provider) and answers 401 with
 *   `WWW-Authenticate` otherwise; `era: 'modern'` is the SDK v2 `createMcpHandler` (2026-07-28 and
 *   stateless 2025), `era: 'legacy'` the SDK v1 server with sessions.
 * Unknown session ids get 404; a request without a session that is not `initialize` gets the SDK's
 * 400 "Server not initialized". It owns nothing of Keyway and never listens beyond loopback.
 * @module
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { getRequestListener } from '@hono/node-server'
import { createServer as createEverythingServer } from '@modelcontextprotocol/server-everything/dist/server/index.js'
import { Server as ServerV1 } from '@modelcontextprotocol/sdk/server/index.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js'
import {
  createMcpHandler,
  InMemoryServerEventBus,
  ProtocolError,
  ProtocolErrorCode,
  Server as ServerV2,
  type McpHttpHandler,
} from '@modelcontextprotocol/server'

/** What a test upstream saw. Arrays grow in arrival order. */
export interface McpRecorder {
  /** `initialize` requests received. */
  initializeCount: number
  /** Session ids handed out, in order. */
  readonly sessionIds: string[]
  /** Authorization header values received (every request, in order). */
  readonly authorizations: string[]
  /** JSON-RPC methods received (every POST, in order; `GET`/`DELETE` as such). */
  readonly methods: string[]
  /** Requests per session id. */
  readonly requestsBySession: Map<string, number>
  /** The user each session id was opened by (protected server only). */
  readonly userBySession: Map<string, string>
  /** The user of each authenticated request (protected server only). */
  readonly users: string[]
  /** Headers of every request, lower-cased names (for wire assertions). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>[]
}

export interface UpstreamMcp {
  /** The MCP endpoint, `http://127.0.0.1:<port>/mcp/`. */
  readonly url: string
  readonly origin: string
  readonly host: string
  readonly rec: McpRecorder
  /** Change streams open now (2025 GET streams, or 2026-07-28 `subscriptions/listen` streams). */
  listeners(): number
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface EverythingServer extends UpstreamMcp {
  /** Closes and listens again on the same port: every session is lost. */
  restart(): Promise<void>
  /** Has every session's reference server send `notifications/tools/list_changed` (its own `sendToolListChanged`). */
  announceToolsChanged(): void
}

/** One tool of the protected server: its listing, and what a call returns. */
export interface TestTool {
  readonly name: string
  readonly description?: string
  readonly inputSchema?: Record<string, unknown>
  readonly run?: (args: Record<string, unknown>, user: string) => Record<string, unknown>
}

export interface ProtectedMcpServer extends UpstreamMcp {
  /** Replaces the extra tools (beside the built-in ones) and announces `notifications/tools/list_changed`. */
  setTools(tools: readonly TestTool[]): void
  addTool(tool: TestTool): void
}

/** A tool name of 70 characters (longer than Keyway's 64-character tool names). */
export const LONG_TOOL_NAME = 'a_tool_whose_name_is_much_longer_than_sixty_four_characters_allow_ok_x'

const OBJECT_SCHEMA = { type: 'object' } as const

const BUILT_IN_TOOLS: readonly TestTool[] = [
  {
    name: 'whoami',
    description: 'the user the token belongs to',
    run: (_a, user) => ({ content: [{ type: 'text', text: user }], structuredContent: { user } }),
  },
  { name: 'echo', description: 'returns its arguments', run: (args) => ({ content: [{ type: 'text', text: JSON.stringify(args) }], structuredContent: args }) },
  { name: 'slow_progress', description: 'sends three progress notifications, then answers' },
  { name: LONG_TOOL_NAME, description: 'a tool with a 70-character name', run: () => ({ content: [{ type: 'text', text: 'long' }] }) },
]

/**
 * `unknownSession: 400` answers a request with an unknown session id as the reference server's own
 * launcher does (400, JSON-RPC -32000 "Bad Request: No valid session ID provided"); default 404.
 */
export async function startEverythingServer(opts: { readonly unknownSession?: 404 | 400 } = {}): Promise<EverythingServer> {
  const rec = newRecorder()
  const sessionful = createSessionful(
    rec,
    () => {
      const { server, cleanup } = createEverythingServer()
      return { server: server.server, cleanup }
    },
    opts.unknownSession ?? 404,
  )
  const http = createServer((req, res) => void sessionful.handle(req, res, undefined))
  const port = await listen(http, 0)
  const base = describe(port, rec, () => sessionful.openStreams)
  return {
    ...base,
    announceToolsChanged() {
      sessionful.announceToolsChanged()
    },
    async restart() {
      await sessionful.closeAll()
      await closeHttp(http)
      await listen(http, port)
    },
    close: async () => {
      await sessionful.closeAll()
      await closeHttp(http)
    },
    [Symbol.asyncDispose]: async () => {
      await sessionful.closeAll()
      await closeHttp(http)
    },
  }
}

export async function startProtectedMcpServer(opts: {
  readonly verify: (bearer: string) => Promise<string | undefined>
  readonly era: 'modern' | 'legacy'
  readonly tools?: readonly TestTool[]
}): Promise<ProtectedMcpServer> {
  const rec = newRecorder()
  let extra: readonly TestTool[] = opts.tools ?? []
  const tools = (): readonly TestTool[] => [...BUILT_IN_TOOLS, ...extra]
  let origin = ''

  const authenticate = async (authorization: string | undefined): Promise<string | undefined> => {
    const m = /^Bearer (.+)$/.exec(authorization ?? '')
    return m?.[1] === undefined ? undefined : opts.verify(m[1])
  }
  const challenge = (): Record<string, string> => ({
    'content-type': 'application/json',
    'www-authenticate': `Bearer error="invalid_token", resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp/"`,
  })

  let announce: () => void
  let listeners: () => number
  let stop: () => Promise<void>
  let http: HttpServer

  if (opts.era === 'legacy') {
    const servers = new Set<ServerV1>()
    const sessionful = createSessionful(rec, () => {
      const server = new ServerV1({ name: 'keyway-test-protected', version: '1.0.0' }, { capabilities: { tools: { listChanged: true } } })
      server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: tools().map(listing) }))
      server.setRequestHandler(CallToolRequestSchema, async (req, ex) => {
        const user = (ex.authInfo?.extra as { user?: string } | undefined)?.user ?? ''
        const tool = tools().find((t) => t.name === req.params.name)
        if (tool === undefined) throw new McpError(ErrorCode.InvalidParams, `Tool ${req.params.name} not found`)
        const token = req.params._meta?.progressToken
        return runTool(tool, req.params.arguments ?? {}, user, token, (params) =>
          ex.sendNotification({ method: 'notifications/progress', params: params as { progressToken: string; progress: number; total: number } }),
        )
      })
      servers.add(server)
      return { server, cleanup: () => servers.delete(server) }
    })
    announce = () => {
      for (const s of servers) void s.sendToolListChanged().catch(() => undefined)
    }
    listeners = () => sessionful.openStreams
    http = createServer((req, res) => {
      void (async () => {
        const user = await authenticate(req.headers.authorization)
        if (user === undefined) {
          rec.authorizations.push(req.headers.authorization ?? '')
          rec.headers.push(req.headers)
          res.writeHead(401, challenge()).end(JSON.stringify({ error: 'invalid_token' }))
          return
        }
        await sessionful.handle(req, res, user)
      })().catch(() => res.destroy())
    })
    stop = () => sessionful.closeAll()
  } else {
    const bus = new InMemoryServerEventBus()
    const handler: McpHttpHandler = createMcpHandler(
      () => {
        const server = new ServerV2({ name: 'keyway-test-protected', version: '1.0.0' }, { capabilities: { tools: { listChanged: true } } })
        server.setRequestHandler('tools/list', () => ({ tools: tools().map(listing) as never[] }))
        server.setRequestHandler('tools/call', async (req, ctx) => {
          const user = (ctx.http?.authInfo?.extra as { user?: string } | undefined)?.user ?? ''
          const tool = tools().find((t) => t.name === req.params.name)
          if (tool === undefined) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Tool ${req.params.name} not found`)
          const token = ctx.mcpReq._meta?.progressToken
          return (await runTool(tool, req.params.arguments ?? {}, user, token, (params) =>
            ctx.mcpReq.notify({ method: 'notifications/progress', params }),
          )) as never
        })
        return server
      },
      { bus, keepAliveMs: 0 },
    )
    announce = () => handler.notify.toolsChanged()
    listeners = () => bus.listenerCount
    const listener = getRequestListener(async (request: Request) => {
      const authorization = request.headers.get('authorization') ?? undefined
      rec.authorizations.push(authorization ?? '')
      rec.headers.push(Object.fromEntries(request.headers))
      const user = await authenticate(authorization)
      if (user === undefined) return new Response(JSON.stringify({ error: 'invalid_token' }), { status: 401, headers: challenge() })
      rec.users.push(user)
      if (request.method === 'POST') {
        const body: unknown = await request
          .clone()
          .json()
          .catch(() => undefined)
        const method = typeof body === 'object' && body !== null && 'method' in body ? String(body.method) : 'POST'
        rec.methods.push(method)
        if (method === 'initialize') rec.initializeCount++
      } else rec.methods.push(request.method)
      return handler.fetch(request, { authInfo: { token: 'verified', clientId: user, scopes: [], extra: { user } } })
    })
    http = createServer((req, res) => void listener(req, res))
    stop = () => handler.close()
  }

  const port = await listen(http, 0)
  const base = describe(port, rec, () => listeners())
  origin = base.origin
  const close = async (): Promise<void> => {
    await stop()
    await closeHttp(http)
  }
  return {
    ...base,
    setTools(next) {
      extra = [...next]
      announce()
    },
    addTool(tool) {
      extra = [...extra, tool]
      announce()
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}

function listing(t: TestTool): Record<string, unknown> {
  return { name: t.name, ...(t.description === undefined ? {} : { description: t.description }), inputSchema: t.inputSchema ?? OBJECT_SCHEMA }
}

async function runTool(
  tool: TestTool,
  args: Record<string, unknown>,
  user: string,
  progressToken: string | number | undefined,
  notify: (params: Record<string, unknown>) => Promise<void>,
): Promise<Record<string, unknown>> {
  if (tool.name === 'slow_progress') {
    if (progressToken !== undefined) for (let i = 1; i <= 3; i++) await notify({ progressToken, progress: i, total: 3, message: `step ${i}` })
    return { content: [{ type: 'text', text: 'done' }] }
  }
  return tool.run?.(args, user) ?? { content: [{ type: 'text', text: tool.name }] }
}

interface Sessionful {
  handle(req: IncomingMessage, res: ServerResponse, user: string | undefined): Promise<void>
  closeAll(): Promise<void>
  announceToolsChanged(): void
  readonly openStreams: number
}

/** The SDK v1 sessionful wiring (as the reference server's own launcher does it), with a recorder and 404 for unknown sessions. */
function createSessionful(
  rec: McpRecorder,
  make: () => { server: ServerV1; cleanup: (sessionId?: string) => void },
  unknownSession: 404 | 400 = 404,
): Sessionful {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; server: ServerV1; cleanup: (sid?: string) => void }>()
  let openStreams = 0
  const jsonRpcError = (res: ServerResponse, status: number, code: number, message: string): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }))
  }
  return {
    get openStreams() {
      return openStreams
    },
    async handle(req, res, user) {
      rec.authorizations.push(req.headers.authorization ?? '')
      rec.headers.push(req.headers)
      if (user !== undefined) rec.users.push(user)
      const raw = req.method === 'POST' ? await readBody(req) : undefined
      let body: unknown
      try {
        body = raw === undefined || raw === '' ? undefined : JSON.parse(raw)
      } catch {
        body = undefined
      }
      const method = typeof body === 'object' && body !== null && 'method' in body ? String(body.method) : (req.method ?? '')
      rec.methods.push(method)
      const authed = req as IncomingMessage & { auth?: { token: string; clientId: string; scopes: string[]; extra: Record<string, unknown> } }
      if (user !== undefined) authed.auth = { token: 'verified', clientId: user, scopes: [], extra: { user } }
      const sid = req.headers['mcp-session-id']
      if (typeof sid === 'string') {
        const s = sessions.get(sid)
        if (s === undefined)
          return unknownSession === 404
            ? jsonRpcError(res, 404, -32001, 'Session not found')
            : jsonRpcError(res, 400, -32000, 'Bad Request: No valid session ID provided')
        rec.requestsBySession.set(sid, (rec.requestsBySession.get(sid) ?? 0) + 1)
        if (req.method === 'GET') {
          openStreams++
          res.once('close', () => openStreams--)
        }
        return s.transport.handleRequest(authed, res, body)
      }
      if (req.method !== 'POST' || method !== 'initialize') return jsonRpcError(res, 400, -32000, 'Bad Request: Server not initialized')
      rec.initializeCount++
      const { server, cleanup } = make()
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => {
          sessions.set(id, { transport, server, cleanup })
          rec.sessionIds.push(id)
          rec.requestsBySession.set(id, 1)
          if (user !== undefined) rec.userBySession.set(id, user)
        },
      })
      transport.onclose = () => {
        const id = transport.sessionId
        if (id !== undefined && sessions.delete(id)) cleanup(id)
      }
      await server.connect(transport)
      await transport.handleRequest(authed, res, body)
    },
    announceToolsChanged() {
      for (const s of sessions.values()) void s.server.sendToolListChanged().catch(() => undefined)
    },
    async closeAll() {
      const all = [...sessions.values()]
      sessions.clear()
      for (const s of all) {
        s.cleanup(s.transport.sessionId)
        await s.server.close().catch(() => undefined)
      }
    },
  }
}

function newRecorder(): McpRecorder {
  return { initializeCount: 0, sessionIds: [], authorizations: [], methods: [], requestsBySession: new Map(), userBySession: new Map(), users: [], headers: [] }
}

function describe(port: number, rec: McpRecorder, listeners: () => number): Omit<UpstreamMcp, 'close' | typeof Symbol.asyncDispose> {
  const origin = `http://127.0.0.1:${port}`
  return { url: `${origin}/mcp/`, origin, host: `127.0.0.1:${port}`, rec, listeners }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function listen(server: HttpServer, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve()
    server.closeAllConnections()
    server.close(() => resolve())
  })
}
