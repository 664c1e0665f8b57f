/**
 * The shape of a tool result as Keyway hands it to the SDK or the fast path, and the one way a
 * failure the model can act on is written: a result whose text starts with a stable code (README
 * "Error codes"). Results of upstream MCP servers pass through in this shape unchanged.
 * @module
 */
import type { ToolErrorCode } from '../errors.js'

export interface ToolResult {
  readonly [key: string]: unknown
  readonly content: { type: string; [key: string]: unknown }[]
  readonly structuredContent?: Record<string, unknown>
  readonly isError?: boolean
}

/** A failure as a result: one text block. */
export interface ToolErrorResult extends ToolResult {
  readonly content: { type: 'text'; text: string }[]
  readonly isError: true
}

/** A tool result that reports a failure the model can act on; the text starts with the code. */
export function toolError(code: ToolErrorCode, message: string): ToolErrorResult {
  return { content: [{ type: 'text', text: `${code}: ${message}` }], isError: true }
}
