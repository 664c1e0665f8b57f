/**
 * The one "is this a JSON object" check for values read from the wire (MCP `_meta`, capabilities,
 * `initialize` params): an object that is neither null nor an array. Pure.
 * @module
 */

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
