/**
 * Text edits at source offsets, and the few line and scalar helpers `apply.ts` needs to edit a
 * YAML file without touching any byte outside the edited lines. The `yaml` package re-renders a
 * whole document on `toString()` (aligned comments collapse, flow maps may be re-wrapped), so
 * edits are located with the Document API's node ranges and spliced into the original text.
 * Pure string work; knows nothing of the config format.
 * @module
 */
import { parse } from 'yaml'

/** Replace `text.slice(start, end)` with `insert`. */
export interface TextEdit {
  readonly start: number
  readonly end: number
  readonly insert: string
}

/** Applies non-overlapping edits; throws if two overlap (a bug in the caller, never input). */
export function applyEdits(text: string, edits: readonly TextEdit[]): string {
  const sorted = [...edits].sort((a, b) => b.start - a.start || b.end - a.end)
  let out = text
  let limit = Number.POSITIVE_INFINITY
  for (const e of sorted) {
    if (e.end > limit || e.start > e.end) throw new Error(`overlapping text edits at offset ${e.start}`)
    out = out.slice(0, e.start) + e.insert + out.slice(e.end)
    limit = e.start
  }
  return out
}

/** Offset of the first character of the line holding `pos`. */
export function lineStart(text: string, pos: number): number {
  return text.lastIndexOf('\n', pos - 1) + 1
}

/** Offset just after the newline that ends the line holding `pos` (or the text's end). */
export function lineEndAfter(text: string, pos: number): number {
  const nl = text.indexOf('\n', pos)
  return nl === -1 ? text.length : nl + 1
}

/** Offset of the line break (`\n` or `\r\n`) that ends the line holding `pos` (or the text's end). */
export function lineEnd(text: string, pos: number): number {
  const nl = text.indexOf('\n', pos)
  if (nl === -1) return text.length
  return nl > pos && text[nl - 1] === '\r' ? nl - 1 : nl
}

/** The file's line break: CRLF when the file already uses it, else LF. */
export function lineBreakOf(text: string): string {
  return text.includes('\r\n') ? '\r\n' : '\n'
}

// Conservative: letters, digits and `_ . @ + -` (not first), single spaces between words.
// Anything else, or anything YAML would read as a non-string (123, true, null, 1e3), is quoted.
const PLAIN_SAFE = /^[A-Za-z0-9_][A-Za-z0-9_.@+-]*(?: [A-Za-z0-9_.@+-]+)*$/

/** A string as a YAML scalar that reads back as the same string, in block and flow context. */
export function yamlString(value: string): string {
  if (PLAIN_SAFE.test(value) && parse(value) === value) return value
  // A JSON string literal is a valid YAML double-quoted scalar.
  return JSON.stringify(value)
}
