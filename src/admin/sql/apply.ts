/**
 * Applies a GRANT, REVOKE or ALTER ... OWNER TO statement to the text of a config file and
 * returns the new text, or says why nothing changes (a no-op) or why the statement is refused.
 * Only the lines of the edited grant entries or owner change; every other byte, comments and
 * layout included, stays as it was. Each edit is checked by reading the new text back and
 * comparing its data with the intended result, so a layout this module does not understand
 * becomes an error, never a wrong file. Pure: no I/O, no validation beyond the statement's own
 * rules (the caller re-validates the new text with the config loader before writing).
 * @module
 */
import { isDeepStrictEqual } from 'node:util'
import { isMap, isNode, isPair, isScalar, isSeq, parseDocument, type Document, type Pair, type YAMLMap } from 'yaml'
import { ConfigSchema, type ConfigFile, type Principal } from '../../config/schema.js'
import { USE_CONNECTION, type MutatingStatement } from './parse.js'
import { applyEdits, lineBreakOf, lineEnd, lineEndAfter, lineStart, yamlString, type TextEdit } from './splice.js'

/** What a statement did to the file. */
export type ApplyOutcome =
  | {
      readonly kind: 'changed'
      /** The whole new file text. */
      readonly text: string
      /** REVOKE: how many grant entries were removed (duplicates go together). */
      readonly removed?: number
      /** ALTER ... OWNER TO: who owned the connection before. */
      readonly previousOwner?: Principal
    }
  | { readonly kind: 'unchanged'; readonly reason: NoOpReason }
  | Refusal

/** Why a statement leaves the file as it is and still succeeds. */
export type NoOpReason = 'already-granted' | 'owner-holds' | 'already-owner'

/** Why a statement is refused. */
export type Refusal =
  | { readonly kind: 'refused'; readonly reason: 'unknown-connection' }
  | { readonly kind: 'refused'; readonly reason: 'revoke-owner'; readonly owner: Principal }
  | {
      readonly kind: 'refused'
      readonly reason: 'no-such-grant'
      /** A grant to the same name as the other principal type, when there is one. */
      readonly otherType?: Principal
    }

/** Two principals are the same when type and name are equal (names compare exactly). */
export function samePrincipal(a: Principal, b: Principal): boolean {
  if ('user' in a) return 'user' in b && a.user === b.user
  if ('group' in a) return 'group' in b && a.group === b.group
  return 'servicePrincipal' in b && a.servicePrincipal === b.servicePrincipal
}

/** The principals of the other types with the same name, in the order a hint should try them. */
function otherTypes(p: Principal): Principal[] {
  if ('user' in p) return [{ group: p.user }, { servicePrincipal: p.user }]
  if ('group' in p) return [{ user: p.group }, { servicePrincipal: p.group }]
  return [{ user: p.servicePrincipal }, { group: p.servicePrincipal }]
}

/**
 * Applies `statement` to `text`, a config file that loads without problems.
 * @throws Error when `text` does not match the config schema (a precondition), or when the
 *   edited text does not read back as the intended data (a layout this module cannot edit).
 */
export function applyStatement(text: string, statement: MutatingStatement): ApplyOutcome {
  const doc = parseDocument(text, { uniqueKeys: true })
  const parsed = doc.errors.length === 0 ? ConfigSchema.safeParse(doc.toJS() ?? {}) : undefined
  if (!parsed?.success) throw new Error('the config must load without problems before it is edited')
  const cfg = parsed.data
  const connection = Object.hasOwn(cfg.connections, statement.connection) ? cfg.connections[statement.connection] : undefined
  if (!connection) return { kind: 'refused', reason: 'unknown-connection' }

  switch (statement.kind) {
    case 'grant':
      if (samePrincipal(connection.owner, statement.principal)) return { kind: 'unchanged', reason: 'owner-holds' }
      if (matchingGrants(cfg, statement).length > 0) return { kind: 'unchanged', reason: 'already-granted' }
      return checked(text, doc, grantEdits(text, doc, statement), (data) => {
        data.grants = [...asArray(data.grants), grantData(statement)]
      })
    case 'revoke': {
      if (samePrincipal(connection.owner, statement.principal)) return { kind: 'refused', reason: 'revoke-owner', owner: connection.owner }
      const indexes = matchingGrants(cfg, statement)
      if (indexes.length === 0) {
        const other = otherTypes(statement.principal).find((p) => matchingGrants(cfg, { connection: statement.connection, principal: p }).length > 0)
        return other ? { kind: 'refused', reason: 'no-such-grant', otherType: other } : { kind: 'refused', reason: 'no-such-grant' }
      }
      const out = checked(text, doc, revokeEdits(text, doc, indexes), (data) => {
        data.grants = asArray(data.grants).filter((_, i) => !indexes.includes(i))
      })
      return { ...out, removed: indexes.length }
    }
    case 'alter_owner': {
      if (samePrincipal(connection.owner, statement.principal)) return { kind: 'unchanged', reason: 'already-owner' }
      const out = checked(text, doc, ownerEdits(doc, statement), (data) => {
        const conns = data.connections as Record<string, Record<string, unknown>>
        const target = conns[statement.connection]
        if (target) target.owner = principalData(statement.principal)
      })
      return { ...out, previousOwner: connection.owner }
    }
    default: {
      const never: never = statement
      return never
    }
  }
}

/** Indexes (in file order) of the grants of USE CONNECTION on the connection to the principal. */
function matchingGrants(cfg: ConfigFile, s: { readonly connection: string; readonly principal: Principal }): number[] {
  const out: number[] = []
  cfg.grants.forEach((g, i) => {
    if (g.on === s.connection && samePrincipal(g.to, s.principal)) out.push(i)
  })
  return out
}

type Data = Record<string, unknown>

/** Splices the edits, then reads the result back and insists it equals the intended data. */
function checked(text: string, doc: Document, edits: readonly TextEdit[], intend: (data: Data) => void): { kind: 'changed'; text: string } {
  const next = applyEdits(text, edits)
  const expected = (doc.toJS() ?? {}) as Data // a fresh copy on every call
  intend(expected)
  const after = parseDocument(next, { uniqueKeys: true })
  if (after.errors.length > 0 || !isDeepStrictEqual(after.toJS(), expected))
    throw new Error('the edit did not read back as intended (an unusual layout around the edited lines?); edit the file by hand')
  return { kind: 'changed', text: next }
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : []
}

function principalData(p: Principal): Data {
  if ('user' in p) return { user: p.user }
  if ('group' in p) return { group: p.group }
  return { servicePrincipal: p.servicePrincipal }
}

function grantData(s: MutatingStatement): Data {
  return { privilege: USE_CONNECTION, on: s.connection, to: principalData(s.principal) }
}

function principalEntry(p: Principal): string {
  if ('user' in p) return `user: ${yamlString(p.user)}`
  if ('group' in p) return `group: ${yamlString(p.group)}`
  return `servicePrincipal: ${yamlString(p.servicePrincipal)}`
}

/** `{ privilege: USE CONNECTION, on: c, to: { user: x } }`, the style of design.md §2. */
function flowGrant(s: MutatingStatement): string {
  return `{ privilege: ${USE_CONNECTION}, on: ${yamlString(s.connection)}, to: { ${principalEntry(s.principal)} } }`
}

function rootMap(doc: Document): YAMLMap {
  const root = doc.contents
  if (!isMap(root) || root.flow) throw new Error('the config file must be a block mapping at the top level to be edited')
  return root
}

function findPair(map: YAMLMap, key: string): Pair | undefined {
  return map.items.find((p): p is Pair => isPair(p) && isScalar(p.key) && String(p.key.value) === key)
}

/** `[start, valueEnd, nodeEnd]` of a node in the source text. */
type Range = readonly [number, number, number]

/** The source range of a node. */
function range(node: unknown): Range {
  if (!isNode(node) || !node.range) throw new Error('yaml node has no source range')
  return node.range
}

/** Start of the line holding the `-` of a block sequence item (the item's own line as fallback). */
function itemLineStart(text: string, itemStart: number): number {
  let i = itemStart - 1
  while (i >= 0 && /\s/.test(text[i] as string)) i--
  return lineStart(text, text[i] === '-' ? i : itemStart)
}

/** End (after the newline) of the last line an item's value reaches. */
function itemLineEnd(text: string, valueEnd: number): number {
  return lineEndAfter(text, Math.max(0, valueEnd - 1))
}

/** Column of a node inside its line. */
function columnOf(text: string, pos: number): number {
  return pos - lineStart(text, pos)
}

function grantEdits(text: string, doc: Document, s: MutatingStatement): TextEdit[] {
  const eol = lineBreakOf(text)
  const root = rootMap(doc)
  const pair = findPair(root, 'grants')
  const seq = pair?.value
  if (!pair || !isSeq(seq)) {
    // No grants yet: a block sequence at the end of the file, indented like the connections.
    if (pair) throw new Error('grants must be a sequence to be edited')
    const indent = ' '.repeat(connectionsIndent(text, doc))
    const sep = text === '' || text.endsWith('\n') ? '' : eol
    return [{ start: text.length, end: text.length, insert: `${sep}grants:${eol}${indent}- ${flowGrant(s)}${eol}` }]
  }
  const last = seq.items[seq.items.length - 1]
  if (seq.flow) {
    if (last === undefined) {
      // `grants: []` grows into a block sequence: ` []` goes, a comment on that line stays.
      const colon = text.indexOf(':', range(pair.key)[1])
      const end = range(seq)[1]
      const at = lineEnd(text, end)
      const indent = ' '.repeat(connectionsIndent(text, doc))
      return [
        { start: colon + 1, end, insert: '' },
        { start: at, end: at, insert: `${eol}${indent}- ${flowGrant(s)}` },
      ]
    }
    // A flow sequence stays one: the new entry goes right after the last.
    const at = range(last)[1]
    return [{ start: at, end: at, insert: `, ${flowGrant(s)}` }]
  }
  if (last === undefined) throw new Error('an empty block sequence cannot be edited')
  const [lastStart, lastEnd] = range(last)
  const dashLine = itemLineStart(text, lastStart)
  const indent = text.slice(dashLine, text.indexOf('-', dashLine))
  const at = itemLineEnd(text, lastEnd)
  const sep = at === text.length && !text.endsWith('\n') ? eol : ''
  const entry = isMap(last) && !last.flow ? blockGrant(text, last, dashLine, indent, s, eol) : `${indent}- ${flowGrant(s)}`
  return [{ start: at, end: at, insert: `${sep}${entry}${eol}` }]
}

/** A grant in block style, laid out like `like` (the last entry, whose `-` line starts at `dashLine`). */
function blockGrant(text: string, like: YAMLMap, dashLine: number, indent: string, s: MutatingStatement, eol: string): string {
  const keyAt = range(like)[0]
  const keyIndent = ' '.repeat(columnOf(text, keyAt))
  const to = findPair(like, 'to')?.value
  const toLines =
    isMap(to) && !to.flow
      ? `${keyIndent}to:${eol}${' '.repeat(columnOf(text, range(to)[0]))}${principalEntry(s.principal)}`
      : `${keyIndent}to: { ${principalEntry(s.principal)} }`
  const privilege = `privilege: ${USE_CONNECTION}`
  // Usually `- privilege: ...` with the other keys lined up under the first; else `-` alone.
  const first =
    lineStart(text, keyAt) === dashLine
      ? `${indent}-${' '.repeat(Math.max(1, keyIndent.length - indent.length - 1))}${privilege}`
      : `${indent}-${eol}${keyIndent}${privilege}`
  return [first, `${keyIndent}on: ${yamlString(s.connection)}`, toLines].join(eol)
}

/** Indentation of the entries under `connections:` (2 when that cannot be told). */
function connectionsIndent(text: string, doc: Document): number {
  const conns = findPair(rootMap(doc), 'connections')?.value
  if (isMap(conns) && !conns.flow && conns.range) return Math.max(1, columnOf(text, conns.range[0]))
  return 2
}

function revokeEdits(text: string, doc: Document, indexes: readonly number[]): TextEdit[] {
  const root = rootMap(doc)
  const pair = findPair(root, 'grants')
  const seq = pair?.value
  if (!pair || !isSeq(seq)) throw new Error('grants must be a sequence to be edited')
  const items = seq.items.map((it) => range(it))
  const removed = new Set(indexes)
  const kept = items.filter((_, i) => !removed.has(i))
  if (seq.flow) return revokeFlow(items, removed, range(seq))
  const edits: TextEdit[] = indexes.map((i) => {
    const r = items[i] as Range
    return { start: itemLineStart(text, r[0]), end: itemLineEnd(text, r[1]), insert: '' }
  })
  if (kept.length === 0) {
    // The last entry goes: `grants:` alone would read as null, so it becomes `grants: []`.
    const colon = text.indexOf(':', range(pair.key)[1])
    edits.push({ start: colon + 1, end: colon + 1, insert: ' []' })
  }
  return edits
}

/**
 * Removes entries from a flow sequence: each removed entry takes the separator after it; when the
 * tail of the list goes, the separator before it goes instead, so no comma is left dangling.
 */
function revokeFlow(items: readonly Range[], removed: ReadonlySet<number>, seqRange: Range): TextEdit[] {
  let lastKept = -1
  items.forEach((_, i) => {
    if (!removed.has(i)) lastKept = i
  })
  if (lastKept === -1) return [{ start: seqRange[0], end: seqRange[1], insert: '[]' }]
  const edits: TextEdit[] = []
  for (const i of removed) {
    if (i > lastKept) continue
    edits.push({ start: (items[i] as Range)[0], end: (items[i + 1] as Range)[0], insert: '' })
  }
  if (lastKept < items.length - 1) {
    edits.push({ start: (items[lastKept] as Range)[1], end: (items[items.length - 1] as Range)[1], insert: '' })
  }
  return edits
}

function ownerEdits(doc: Document, s: MutatingStatement): TextEdit[] {
  const conns = findPair(rootMap(doc), 'connections')?.value
  const conn = isMap(conns) ? findPair(conns, s.connection)?.value : undefined
  const owner = isMap(conn) ? findPair(conn, 'owner')?.value : undefined
  const entry = isMap(owner) && owner.items.length === 1 ? owner.items[0] : undefined
  if (!entry || !isScalar(entry.key) || !isScalar(entry.value))
    throw new Error(`connections.${s.connection}.owner must be { user: ID }, { group: NAME } or { servicePrincipal: NAME } to be edited`)
  // Replace `user: x` by `group: y` in place: braces, indentation and a trailing comment stay.
  return [{ start: range(entry.key)[0], end: range(entry.value)[1], insert: principalEntry(s.principal) }]
}
