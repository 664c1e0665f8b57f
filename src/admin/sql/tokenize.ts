/**
 * The tokenizer of `keyway sql` statements: bare words (keywords and connection names),
 * backtick-quoted names (a doubled backtick stands for one), and `;`. Every token keeps its
 * offsets in the statement so errors can point at it with a caret. Pure: no I/O, no knowledge of
 * the grammar or of the config file.
 * @module
 */

/** A span of the statement text: `start` inclusive, `end` exclusive, in UTF-16 offsets. */
export interface Span {
  readonly start: number
  readonly end: number
}

/**
 * One token. `word` is a keyword or bare name (`[A-Za-z0-9_-]+`); `quoted` is a backtick-quoted
 * name, `text` already unescaped; `end` marks the end of the input.
 */
export type Token =
  | (Span & { readonly kind: 'word'; readonly text: string })
  | (Span & { readonly kind: 'quoted'; readonly text: string })
  | (Span & { readonly kind: 'semicolon' })
  | (Span & { readonly kind: 'end' })

/** A problem at a place in the statement; shared by the tokenizer and the parser. */
export interface SqlSyntaxError extends Span {
  readonly message: string
}

export type TokenizeResult = { readonly ok: true; readonly tokens: readonly Token[] } | { readonly ok: false; readonly error: SqlSyntaxError }

const WORD_CHAR = /[A-Za-z0-9_-]/
const SPACE = /\s/

/** Splits a statement into tokens; the last token is always `end`. */
export function tokenize(text: string): TokenizeResult {
  const tokens: Token[] = []
  let i = 0
  while (i < text.length) {
    const ch = text[i] as string
    if (SPACE.test(ch)) {
      i++
    } else if (ch === ';') {
      tokens.push({ kind: 'semicolon', start: i, end: i + 1 })
      i++
    } else if (ch === '`') {
      const start = i
      let value = ''
      i++
      for (;;) {
        if (i >= text.length) return fail(start, text.length, 'unterminated name: a backtick-quoted name needs a closing `')
        const c = text[i] as string
        if (c === '`') {
          if (text[i + 1] === '`') {
            value += '`'
            i += 2
            continue
          }
          i++
          break
        }
        value += c
        i++
      }
      tokens.push({ kind: 'quoted', text: value, start, end: i })
    } else if (WORD_CHAR.test(ch)) {
      const start = i
      while (i < text.length && WORD_CHAR.test(text[i] as string)) i++
      tokens.push({ kind: 'word', text: text.slice(start, i), start, end: i })
    } else {
      const point = text.codePointAt(i) ?? 0
      const width = point > 0xffff ? 2 : 1
      const hint = ch === '"' || ch === "'" ? ': names are quoted with backticks (`name`), not quotes' : ''
      return fail(i, i + width, `unexpected character ${JSON.stringify(String.fromCodePoint(point))}${hint}`)
    }
  }
  tokens.push({ kind: 'end', start: text.length, end: text.length })
  return { ok: true, tokens }
}

function fail(start: number, end: number, message: string): TokenizeResult {
  return { ok: false, error: { start, end, message } }
}
