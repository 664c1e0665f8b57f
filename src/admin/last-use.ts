/**
 * When a credential was last used, read back from the audit log (design.md §10) rather than
 * written to the token store on every call, which would cost a store write per tool call. A use
 * is a `tool.call` that was allowed and whose request reached the upstream with the credential
 * (the upstream answered with a status, or timed out); an allowed call that stopped earlier (no
 * token yet, consent needed, egress refused) used no credential. The index is built in one
 * streaming pass over the log and answers per (connection, user) for per-user tokens and per
 * connection for the shared ones. This module never writes the log and never prints.
 * @module
 */
import type { AuthType } from '../config/schema.js'
import { readAuditLog, type AuditRecord, type ReadStats } from './audit-read.js'

/**
 * Error codes of an allowed call whose request still left with the credential: the upstream did
 * not answer in time. Every other error code means the credential was never sent.
 */
const SENT_WITHOUT_STATUS: ReadonlySet<string> = new Set(['UPSTREAM_TIMEOUT'])

/** Last use per connection, per user and per auth method, from `tool.call` records. */
export interface LastUseIndex {
  /** Adds one audit record; records that are not a credential use are ignored. */
  add(rec: AuditRecord): void
  /**
   * Epoch ms of the last use of the credential of `connection` obtained by `method`: by `user`
   * for a per-user token, by anyone for a shared one (`user` null). Calls recorded under another
   * auth method (the connection changed type since) are not uses of this credential; records
   * without `authMethod` count for any method. Undefined when never used.
   */
  lastUse(connection: string, user: string | null, method: AuthType): number | undefined
}

/** Whether an audit record is a use of a credential (see the module comment). */
export function isCredentialUse(rec: AuditRecord): boolean {
  if (rec.type !== 'tool.call' || rec.decision !== 'allow') return false
  if (typeof rec.connection !== 'string' || typeof rec.user !== 'string') return false
  return typeof rec.status === 'number' || (typeof rec.error === 'string' && SENT_WITHOUT_STATUS.has(rec.error))
}

/** An empty index; feed it with {@link LastUseIndex.add}. */
export function createLastUseIndex(): LastUseIndex {
  // connection → method ('' when the record had none) → user → latest epoch ms
  const uses = new Map<string, Map<string, Map<string, number>>>()
  const latest = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.max(a, b))
  return {
    add(rec) {
      if (!isCredentialUse(rec)) return
      const at = Date.parse(rec.time)
      if (Number.isNaN(at)) return
      const connection = rec.connection as string
      const user = rec.user as string
      const method = typeof rec.authMethod === 'string' ? rec.authMethod : ''
      let byMethod = uses.get(connection)
      if (!byMethod) uses.set(connection, (byMethod = new Map<string, Map<string, number>>()))
      let byUser = byMethod.get(method)
      if (!byUser) byMethod.set(method, (byUser = new Map<string, number>()))
      byUser.set(user, latest(byUser.get(user), at) ?? at)
    },
    lastUse(connection, user, method) {
      const byMethod = uses.get(connection)
      if (!byMethod) return undefined
      let found: number | undefined
      for (const m of [method, '']) {
        const byUser = byMethod.get(m)
        if (!byUser) continue
        if (user !== null) found = latest(found, byUser.get(user))
        else for (const at of byUser.values()) found = latest(found, at)
      }
      return found
    },
  }
}

/** What {@link readLastUse} found. */
export type LastUseReading =
  | { readonly ok: true; readonly index: LastUseIndex; readonly stats: ReadStats }
  /** The log could not be read; `missing` when it does not exist yet (nothing was ever audited there). */
  | { readonly ok: false; readonly missing: boolean; readonly reason: string }

/**
 * Streams the audit log once and indexes the credential uses in it (of one connection and/or one
 * user's calls, when given: pass `user` only when no shared credential will be looked up). A log
 * that cannot be opened is a result, not a throw: last use is then unknown.
 */
export async function readLastUse(file: string, opts: { readonly connection?: string; readonly user?: string } = {}): Promise<LastUseReading> {
  const index = createLastUseIndex()
  const stats: ReadStats = { malformed: 0, truncatedLast: false }
  try {
    const filter = {
      types: ['tool.call'],
      decision: 'allow',
      ...(opts.connection === undefined ? {} : { connection: opts.connection }),
      ...(opts.user === undefined ? {} : { user: opts.user }),
    } as const
    for await (const rec of readAuditLog(file, filter, stats)) index.add(rec)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return {
      ok: false,
      missing: code === 'ENOENT',
      reason: code === 'ENOENT' ? `audit log ${file} does not exist yet` : `cannot read audit log ${file} (${e instanceof Error ? e.message : String(e)})`,
    }
  }
  return { ok: true, index, stats }
}
