/**
 * The grammar of `keyway sql` (design.md §3) and its statement tree. Keywords are
 * case-insensitive; connection names are bare words or backtick-quoted; principals are
 * backtick-quoted, a name with `@` being a user and any other a group unless `USER`, `GROUP` or
 * `SERVICE PRINCIPAL` says so (a service principal is never guessed from its name). A syntax error is a value carrying the span of the offending token and what was
 * expected there, never a throw. Pure: this module knows nothing of the config file.
 * @module
 */
import { CONNECTION_NAME_PATTERN, SERVICE_PRINCIPAL_NAME_PATTERN, type Principal } from '../../config/schema.js'
import { tokenize, type Span, type SqlSyntaxError, type Token } from './tokenize.js'

export type { SqlSyntaxError } from './tokenize.js'

/** The one privilege there is. */
export const USE_CONNECTION = 'USE CONNECTION'

/** Statements that change the config file. */
export type MutatingStatement =
  | { readonly kind: 'grant'; readonly connection: string; readonly principal: Principal }
  | { readonly kind: 'revoke'; readonly connection: string; readonly principal: Principal }
  | { readonly kind: 'alter_owner'; readonly connection: string; readonly principal: Principal }

/** Statements that only read the config file. */
export type ReadStatement =
  | { readonly kind: 'show_grants'; readonly connection: string }
  | { readonly kind: 'show_connections' }
  | { readonly kind: 'describe_connection'; readonly connection: string }

export type Statement = MutatingStatement | ReadStatement

export type ParseResult = { readonly ok: true; readonly statement: Statement } | { readonly ok: false; readonly error: SqlSyntaxError }

/** Whether a statement edits the file (GRANT, REVOKE, ALTER). */
export function isMutating(s: Statement): s is MutatingStatement {
  return s.kind === 'grant' || s.kind === 'revoke' || s.kind === 'alter_owner'
}

/**
 * Parses one statement, with an optional trailing `;`.
 * @example parseStatement('GRANT USE CONNECTION ON CONNECTION gh TO `data-eng`')
 */
export function parseStatement(text: string): ParseResult {
  const t = tokenize(text)
  if (!t.ok) return t
  try {
    return { ok: true, statement: new Parser(t.tokens).statement() }
  } catch (e) {
    if (e instanceof ParseFailure) return { ok: false, error: e.error }
    throw e
  }
}

/** Writes a name in backticks, doubling backticks inside, so it parses back to itself. */
export function quoteName(name: string): string {
  return `\`${name.replaceAll('`', '``')}\``
}

/**
 * A principal as a statement names it, `USER \`x\``, `GROUP \`x\`` or `SERVICE PRINCIPAL \`x\``:
 * the explicit form, so it parses back to the same principal whatever the name looks like.
 */
export function formatPrincipal(p: Principal): string {
  if ('user' in p) return `USER ${quoteName(p.user)}`
  if ('group' in p) return `GROUP ${quoteName(p.group)}`
  return `SERVICE PRINCIPAL ${quoteName(p.servicePrincipal)}`
}

/**
 * The statement line holding the error and a caret line under the offending token, for a
 * terminal: tabs are kept in the caret line's padding so the caret lines up.
 */
export function formatSyntaxError(text: string, error: SqlSyntaxError): readonly [string, string] {
  const lineStart = text.lastIndexOf('\n', error.start - 1) + 1
  const nl = text.indexOf('\n', lineStart)
  const lineEnd = nl === -1 ? text.length : nl
  const line = text.slice(lineStart, lineEnd).replace(/\r$/, '')
  const pad = text.slice(lineStart, error.start).replace(/[^\t]/g, ' ')
  const width = Math.max(1, Math.min(error.end, lineEnd) - error.start)
  return [line, `${pad}${'^'.repeat(width)}`]
}

/** Thrown only inside this module, to unwind the descent; callers see a `ParseResult`. */
class ParseFailure extends Error {
  readonly error: SqlSyntaxError
  constructor(error: SqlSyntaxError) {
    super(error.message)
    this.name = 'ParseFailure'
    this.error = error
  }
}

const STATEMENT_KEYWORDS = 'expected a statement: GRANT, REVOKE, SHOW, DESCRIBE or ALTER'

class Parser {
  readonly #tokens: readonly Token[]
  #i = 0

  constructor(tokens: readonly Token[]) {
    this.#tokens = tokens
  }

  statement(): Statement {
    const first = this.#peek()
    let s: Statement
    switch (first.kind === 'word' ? first.text.toUpperCase() : '') {
      case 'GRANT':
        this.#next()
        s = { kind: 'grant', ...this.#privilegeTarget('GRANT'), principal: this.#principal('TO') }
        break
      case 'REVOKE':
        this.#next()
        s = { kind: 'revoke', ...this.#privilegeTarget('REVOKE'), principal: this.#principal('FROM') }
        break
      case 'SHOW':
        s = this.#show()
        break
      case 'DESCRIBE':
        this.#next()
        this.#keyword('CONNECTION', 'expected CONNECTION after DESCRIBE')
        s = { kind: 'describe_connection', connection: this.#connectionName('DESCRIBE CONNECTION') }
        break
      case 'ALTER': {
        this.#next()
        this.#keyword('CONNECTION', 'expected CONNECTION after ALTER')
        const connection = this.#connectionName('ALTER CONNECTION')
        this.#keyword('OWNER', 'expected OWNER after the connection name: ALTER CONNECTION c OWNER TO principal')
        s = { kind: 'alter_owner', connection, principal: this.#principal('TO', 'OWNER') }
        break
      }
      default:
        throw this.#fail(first, first.kind === 'end' ? STATEMENT_KEYWORDS : `${STATEMENT_KEYWORDS}, found ${describe(first)}`)
    }
    this.#end()
    return s
  }

  /** `USE CONNECTION ON CONNECTION name` after GRANT or REVOKE. */
  #privilegeTarget(verb: 'GRANT' | 'REVOKE'): { connection: string } {
    this.#keyword('USE', `expected USE after ${verb}: the only privilege is USE CONNECTION`)
    this.#keyword('CONNECTION', 'expected CONNECTION after USE')
    this.#keyword('ON', 'expected ON after USE CONNECTION')
    this.#keyword('CONNECTION', 'expected CONNECTION after ON')
    return { connection: this.#connectionName('ON CONNECTION') }
  }

  #show(): Statement {
    this.#next()
    const t = this.#peek()
    const word = t.kind === 'word' ? t.text.toUpperCase() : ''
    if (word === 'CONNECTIONS') {
      this.#next()
      return { kind: 'show_connections' }
    }
    if (word === 'GRANTS') {
      this.#next()
      this.#keyword('ON', 'expected ON after SHOW GRANTS')
      this.#keyword('CONNECTION', 'expected CONNECTION after ON')
      return { kind: 'show_grants', connection: this.#connectionName('SHOW GRANTS ON CONNECTION') }
    }
    throw this.#fail(t, 'expected GRANTS or CONNECTIONS after SHOW')
  }

  #connectionName(after: string): string {
    const t = this.#peek()
    if (t.kind !== 'word' && t.kind !== 'quoted') throw this.#fail(t, `expected a connection name after ${after}`)
    if (!CONNECTION_NAME_PATTERN.test(t.text)) throw this.#fail(t, 'a connection name matches ^[A-Za-z0-9_-]{1,64}$')
    this.#next()
    return t.text
  }

  /** `[USER | GROUP | SERVICE PRINCIPAL] \`name\`` after TO or FROM. */
  #principal(keyword: 'TO' | 'FROM', after?: string): Principal {
    const prev = this.#tokens[this.#i - 1]
    if (after === undefined && prev?.kind === 'word' && prev.text.toUpperCase() === keyword && !this.#at(keyword)) {
      // `ON CONNECTION TO \`x\``: the name was left out and TO was read as the name.
      throw this.#fail(prev, 'expected a connection name after ON CONNECTION')
    }
    this.#keyword(keyword, `expected ${keyword} after ${after ?? 'the connection name'}`)
    const t = this.#peek()
    let kind: 'user' | 'group' | 'servicePrincipal' | undefined
    let kindWord = keyword as string
    const word = t.kind === 'word' ? t.text.toUpperCase() : ''
    if (word === 'USER' || word === 'GROUP') {
      kindWord = word
      kind = word === 'USER' ? 'user' : 'group'
      this.#next()
    } else if (word === 'SERVICE') {
      this.#next()
      this.#keyword('PRINCIPAL', 'expected PRINCIPAL after SERVICE: SERVICE PRINCIPAL `name`')
      kindWord = 'SERVICE PRINCIPAL'
      kind = 'servicePrincipal'
    }
    const name = this.#peek()
    if (name.kind !== 'quoted') {
      const example =
        kind === 'group'
          ? '`data-engineering`'
          : kind === 'user'
            ? '`alice@example.com`'
            : kind === 'servicePrincipal'
              ? '`etl-bot`'
              : '`alice@example.com` or `data-engineering`'
      const hint = name.kind === 'word' && kind === undefined ? ` (write ${quoteName(name.text)})` : ''
      throw this.#fail(name, `expected a principal in backticks after ${kindWord}, e.g. ${example}${hint}`)
    }
    if (name.text.trim() === '') throw this.#fail(name, 'a principal name cannot be empty')
    if (kind === 'servicePrincipal' && !SERVICE_PRINCIPAL_NAME_PATTERN.test(name.text))
      throw this.#fail(name, 'a service principal name matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
    this.#next()
    const resolved = kind ?? (name.text.includes('@') ? 'user' : 'group')
    if (resolved === 'servicePrincipal') return { servicePrincipal: name.text }
    return resolved === 'user' ? { user: name.text } : { group: name.text }
  }

  #end(): void {
    let t = this.#peek()
    if (t.kind === 'semicolon') {
      this.#next()
      t = this.#peek()
      if (t.kind !== 'end') throw this.#fail(t, 'expected end of statement after ;: run one statement at a time')
      return
    }
    if (t.kind !== 'end') throw this.#fail(t, `expected end of statement, found ${describe(t)}`)
  }

  #keyword(word: string, message: string): void {
    if (!this.#at(word)) throw this.#fail(this.#peek(), message)
    this.#next()
  }

  #at(word: string): boolean {
    const t = this.#peek()
    return t.kind === 'word' && t.text.toUpperCase() === word
  }

  #peek(): Token {
    // The tokenizer always ends the list with an `end` token, and #next never passes it.
    return this.#tokens[this.#i] as Token
  }

  #next(): void {
    if (this.#i < this.#tokens.length - 1) this.#i++
  }

  #fail(at: Span, message: string): ParseFailure {
    return new ParseFailure({ start: at.start, end: at.end, message })
  }
}

function describe(t: Token): string {
  switch (t.kind) {
    case 'word':
      return t.text
    case 'quoted':
      return quoteName(t.text)
    case 'semicolon':
      return ';'
    case 'end':
      return 'end of statement'
    default: {
      const never: never = t
      return never
    }
  }
}
