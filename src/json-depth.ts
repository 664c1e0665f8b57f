/**
 * How deeply a JSON text nests, measured on the text before (or instead of) parsing it. V8's
 * `JSON.parse` is iterative and happily builds a value nested a million levels deep; everything
 * that walks such a value afterwards (`JSON.stringify`, schema validation, the MCP SDK's own
 * serialisation) recurses and dies with a stack overflow. Checking the text first is one linear
 * pass with no allocation. Pure; no policy beyond the limit it is given.
 * @module
 */

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const OPEN_BRACKET = 0x5b
const CLOSE_BRACE = 0x7d
const CLOSE_BRACKET = 0x5d

/**
 * Whether `text` opens more than `max` nested arrays or objects at some point. Brackets inside
 * strings do not count. The text need not be valid JSON: for invalid text the answer is about its
 * brackets, and parsing will refuse it anyway.
 */
export function exceedsJsonDepth(text: string, max: number): boolean {
  // A text of n characters cannot nest deeper than n / 2 levels (each level needs `[` and `]`,
  // or at least the opening bracket): short texts need no scan.
  if (text.length <= max) return false
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) inString = true
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) depth--
  }
  return false
}
