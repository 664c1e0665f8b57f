/**
 * The shape of every Keyway tool (design.md §6): one input schema and one output schema shared
 * by all connections, converted to JSON Schema once per process. Per connection only the name,
 * description and annotations differ; those definitions are cached per connection object, so a
 * config snapshot builds each tool definition once. Arguments are also bounded in depth and size
 * before the schema looks at them (`argumentLimitProblem`).
 * @module
 */
import type { Tool } from '@modelcontextprotocol/server'
import * as z from 'zod'
import type { Connection } from '../config/load.js'
import { exceedsJsonDepth } from '../json-depth.js'

const Scalar = z.union([z.string(), z.number(), z.boolean()])

export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const

export const ToolInputSchema = z.strictObject({
  method: z.enum(HTTP_METHODS).default('GET').describe('HTTP method'),
  path: z.string().max(8192).describe("path relative to the connection's base path, e.g. /repos/octo/hello/issues"),
  query: z
    .record(z.string(), z.union([Scalar, z.array(Scalar)]))
    .optional()
    .describe('query parameters; arrays repeat the key'),
  headers: z.record(z.string(), z.string()).optional().describe('extra request headers; Authorization, Cookie, Host and hop-by-hop headers are dropped'),
  body: z.unknown().optional().describe('request body: a JSON value (sent as application/json) or a string'),
})
export type ToolInput = z.infer<typeof ToolInputSchema>

/**
 * Deepest tool arguments accepted (the arguments object is level 1). Request bodies of real APIs
 * nest a handful of levels; 32 leaves room for any of them and keeps everything that walks the
 * value (the schema, `JSON.stringify` of the outbound body) far from a stack overflow.
 */
export const MAX_ARGUMENT_DEPTH = 32

/**
 * Why `args` is out of bounds, or undefined: nested deeper than `MAX_ARGUMENT_DEPTH`, or larger
 * than `maxBytes` as JSON (`server.maxRequestBytes`; over HTTP the request cap already holds it,
 * over stdio nothing else does). The message names the limit, never a value.
 */
export function argumentLimitProblem(args: unknown, maxBytes: number): string | undefined {
  let text: string | undefined
  try {
    text = JSON.stringify(args ?? {})
  } catch {
    // Only a value no JSON text could carry (a cycle, a stack-deep nesting) fails here.
    return `arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`
  }
  if (text === undefined) return undefined
  if (Buffer.byteLength(text) > maxBytes) return `arguments exceed ${maxBytes} bytes (server.maxRequestBytes)`
  if (exceedsJsonDepth(text, MAX_ARGUMENT_DEPTH)) return `arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`
  return undefined
}

export const ToolOutputSchema = z.strictObject({
  status: z.number().int().describe('upstream HTTP status'),
  headers: z.record(z.string(), z.string()).describe('selected response headers'),
  body: z.unknown().describe('parsed JSON, text, or base64 for binary content'),
  truncated: z.boolean().describe('true when the body was cut at the size cap'),
  redacted: z.number().int().positive().optional().describe('how many occurrences of the credential Keyway replaced with [REDACTED]; absent when none'),
})
export type ToolOutput = z.infer<typeof ToolOutputSchema>

const INPUT_JSON_SCHEMA = Object.freeze(z.toJSONSchema(ToolInputSchema, { io: 'input' })) as Tool['inputSchema']
const OUTPUT_JSON_SCHEMA = Object.freeze(z.toJSONSchema(ToolOutputSchema)) as NonNullable<Tool['outputSchema']>

export type ToolDefinition = Readonly<Tool>

const definitions = new WeakMap<Connection, ToolDefinition>()

/** The `tools/list` entry of a connection, built once per connection object (that is, per snapshot). */
export function toolDefinition(c: Connection): ToolDefinition {
  let def = definitions.get(c)
  if (!def) {
    const where = `${c.origin}${c.basePath}`
    const lead = c.description ? `${c.description.trim().replace(/\.?$/, '.')} ` : ''
    def = Object.freeze({
      name: c.name,
      title: c.name,
      description:
        `${lead}Calls ${where} through Keyway, which adds the credential itself. ` +
        `Give method and a path relative to ${c.basePath}` +
        `${c.readOnly ? ' (GET only)' : ''}; the result is { status, headers, body, truncated }.`,
      inputSchema: INPUT_JSON_SCHEMA,
      outputSchema: OUTPUT_JSON_SCHEMA,
      annotations: Object.freeze({
        title: c.name,
        readOnlyHint: c.readOnly,
        destructiveHint: !c.readOnly,
        idempotentHint: false,
        openWorldHint: true as const,
      }),
    })
    definitions.set(c, def)
  }
  return def
}
