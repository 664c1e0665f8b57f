/**
 * The names upstream MCP tools are exposed under (design.md §12): `<prefix>__<tool>`
 * made safe for every MCP client, the include/exclude filter, and the per-snapshot index from an
 * exposed name back to (connection, upstream name). Names are never parsed back: the index is the
 * only way from an exposed name to an upstream tool. Pure: no I/O, no clock.
 * @module
 */
import type { Connection } from '../config/load.js'
import { sha256Hex } from '../encoding.js'

/** The longest tool name clients accept reliably (and the connection-name limit, design.md §2). */
export const MAX_TOOL_NAME_LENGTH = 64
/** Hex digits of SHA-256 that end a shortened name: 24 bits, enough to keep one server's tools apart. */
const HASH_HEX_LENGTH = 6

/**
 * `<prefix>__<upstream>`, every character outside `[A-Za-z0-9_-]` replaced by `_`. A result longer
 * than 64 keeps its first 57 characters, `_` and 6 hex digits of SHA-256 of the unsanitized
 * `<prefix>__<upstream>`, so the same upstream name gives the same exposed name on every restart.
 */
export function exposedToolName(prefix: string, upstreamName: string): string {
  const raw = `${prefix}__${upstreamName}`
  const safe = raw.replace(/[^A-Za-z0-9_-]/gu, '_')
  if (safe.length <= MAX_TOOL_NAME_LENGTH) return safe
  const hash = sha256Hex(raw).slice(0, HASH_HEX_LENGTH)
  return `${safe.slice(0, MAX_TOOL_NAME_LENGTH - HASH_HEX_LENGTH - 1)}_${hash}`
}

/** Whether an upstream tool name passes `include` (`NAME` exact, `PREFIX*` prefix; undefined: all) and not `exclude`, which wins. */
export function toolFilter(include: readonly string[] | undefined, exclude: readonly string[]): (upstreamName: string) => boolean {
  const inc = include && include.map(compilePattern)
  const exc = exclude.map(compilePattern)
  return (name) => (inc === undefined || inc.some((m) => m(name))) && !exc.some((m) => m(name))
}

function compilePattern(pattern: string): (name: string) => boolean {
  if (pattern.endsWith('*')) {
    const head = pattern.slice(0, -1)
    return (name) => name.startsWith(head)
  }
  return (name) => name === pattern
}

/** Where an exposed name leads. */
export interface ToolTarget {
  readonly connection: Connection
  readonly upstreamName: string
}

/** An upstream tool left out because its exposed name was already taken. */
export interface ToolCollision {
  readonly exposedName: string
  /** The connection whose tool was left out. */
  readonly connection: string
  readonly upstreamName: string
  /** The HTTP tool (the connection name) or the connection of the upstream tool that has the name. */
  readonly takenBy: string
}

export interface ToolIndex {
  /** Each upstream tool definition unchanged except `name`, which is the exposed name. */
  readonly tools: Record<string, unknown>[]
  readonly index: ReadonlyMap<string, ToolTarget>
  readonly collisions: readonly ToolCollision[]
}

/**
 * Exposes the tools of each source in the order given (the caller passes connection-name order),
 * each source's tools in the upstream's order. `reserved` are the HTTP tool names, which always win;
 * a later tool whose exposed name is taken is left out and listed in `collisions`. Definitions
 * whose `name` is not a non-empty string are skipped. Filtering (include/exclude) is not done here.
 */
export function buildToolIndex(
  reserved: ReadonlySet<string>,
  sources: readonly { readonly connection: Connection; readonly tools: readonly Record<string, unknown>[] }[],
): ToolIndex {
  const tools: Record<string, unknown>[] = []
  const index = new Map<string, ToolTarget>()
  const collisions: ToolCollision[] = []
  for (const { connection, tools: upstream } of sources) {
    const prefix = connection.mcp?.prefix ?? connection.name
    for (const def of upstream) {
      const upstreamName = def.name
      if (typeof upstreamName !== 'string' || upstreamName === '') continue
      const exposedName = exposedToolName(prefix, upstreamName)
      const taken = reserved.has(exposedName) ? exposedName : index.get(exposedName)?.connection.name
      if (taken !== undefined) {
        collisions.push({ exposedName, connection: connection.name, upstreamName, takenBy: taken })
        continue
      }
      index.set(exposedName, { connection, upstreamName })
      tools.push({ ...def, name: exposedName })
    }
  }
  return { tools, index, collisions }
}
