/**
 * Text that is safe to show on a terminal. Audit lines and CLI output carry caller- and
 * provider-supplied text (request paths, provider subjects and scopes); `keyway audit` prints
 * them and people `tail` the file, so characters a terminal would act on are escaped both when
 * lines are written and when they are shown. Pure.
 * @module
 */

/**
 * Characters a terminal acts on instead of showing: C0 and C1 controls (a newline in a logged
 * path breaks the table; ESC and CSI start escape sequences that can rewrite the screen), the
 * Unicode line and paragraph separators, and the bidirectional marks, embeddings, overrides and
 * isolates that reorder what is shown ("Trojan Source", CVE-2021-42574). Caller-supplied fields
 * (paths above all) are untrusted text.
 */
const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/** A cell as the table shows it: every terminal-unsafe character escaped (`\x1b`, `\u202e`). */
export function escapeForTerminal(cell: string): string {
  return cell.replace(TERMINAL_UNSAFE, (c) => {
    const code = c.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}

/**
 * Text someone else chose (a provider's error description, an account name) as one bounded line
 * for a message or a page: every terminal-unsafe character becomes a space, runs of them one space,
 * the ends are trimmed, and more than `maxChars` characters end in `…`.
 */
export function oneLine(text: string, maxChars: number): string {
  const line = text.replace(new RegExp(`${TERMINAL_UNSAFE.source}+`, 'g'), ' ').trim()
  return line.length > maxChars ? `${line.slice(0, maxChars)}…` : line
}

/** An OAuth error code as given, if it is one (RFC 6749 §5.2 charset, printable ASCII without `"` and `\`), else a placeholder. */
export function safeErrorCode(code: string): string {
  return /^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$/.test(code) ? code : 'an invalid error code'
}

/**
 * A value as one JSON line that is still safe on a terminal: `JSON.stringify` escapes only C0
 * controls, so C1 controls and bidi characters are written as `\uXXXX` escapes (the same JSON value).
 */
export function toSafeJsonLine(value: unknown): string {
  return JSON.stringify(value).replace(TERMINAL_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}
