/**
 * `oauth_u2m_per_user` (design.md §1, §7, §8): every caller reaches the external API with their
 * own token, stored under (connection, caller.user) and renewed with its refresh token through
 * the shared refresher (one refresh per key at a time). No usable token, or a grant the provider
 * no longer honours (`invalid_grant`, which deletes the record), means the caller must consent:
 * this module then records a consent flow for (caller.user, connection) with the flows of
 * `consent/records.ts` (the same browser routes as a shared sign-in, only the token's owner and the
 * person who must complete it differ) and answers `consent-required` with the link. A link the
 * caller has not opened yet is handed out again instead of a new one on every call. It also
 * offers the bounded wait for a consent to land that a client's retry uses. How the link reaches
 * the person is the MCP layer's business (`mcp/consent.ts`); this module never sees a client.
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import * as z from 'zod'
import type { AuditLog } from '../audit/audit-log.js'
import type { Connection } from '../config/load.js'
import { sha256Base64url } from '../encoding.js'
import { AppError, isAppError } from '../errors.js'
import type { Caller } from '../identity/caller.js'
import type { TokenRecord, TokenRef, TokenStore } from '../store/index.js'
import { connectPath, createConsentFlow, FLOW_TTL_MS, OUTCOME_POLL_MS, readConsentLink, readOutcome } from '../consent/records.js'
import type { Credential, ResolveOptions } from './credential.js'
import type { OAuthClient } from './oauth-client.js'
import { isUsable, type Refresher } from './refresh.js'
import { recordFromTokenSet, tokenCredential } from './token-record.js'

const METHOD = 'oauth_u2m_per_user'

/**
 * A pending link is handed out again only while it has at least this long to live: enough to
 * open it, sign in at the provider and consent. A link closer to its end is replaced, so nobody
 * gets a link that dies on the provider's login page.
 */
export const PENDING_LINK_MIN_LEFT_MS = 3 * 60_000

export interface PerUserU2mDeps {
  /** Only `refresh` is used here; the code exchange happens at the callback (`consent/complete.ts`). */
  readonly clients: { get(connection: Connection): Promise<Pick<OAuthClient, 'refresh'>> }
  readonly refresher: Refresher
  readonly store: TokenStore
  readonly now: () => number
  /** `server.publicUrl` of the live config: the origin of consent links. */
  readonly publicUrl: () => string
  readonly audit?: AuditLog
}

/** Why a caller is asked to consent: never connected, grant gone, or an expired token that cannot be renewed. */
export type ConsentReason = 'no-token' | 'invalid_grant' | 'no-refresh-token' | 'reauthorization-required'

/** The internal signal "this caller must consent"; never leaves this module. */
function consentNeeded(connection: Connection, reason: ConsentReason, cause?: unknown): AppError {
  return new AppError('CONSENT_REQUIRED', `connection "${connection.name}" has no usable token for this user`, {
    ...(cause === undefined ? {} : { cause }),
    detail: { connection: connection.name, reason },
  })
}

/**
 * The credential of an `oauth_u2m_per_user` connection for one caller: their own stored token
 * (refreshed when due), or `consent-required` with `<publicUrl>/connect/<flowId>` (design.md §7
 * step 1). Transient provider and store failures are thrown as they are (`CREDENTIAL_UNAVAILABLE`,
 * `STORE_UNAVAILABLE`): a store that fails is never taken for "no token" (design.md §8).
 */
export async function resolvePerUserU2m(connection: Connection, caller: Caller, deps: PerUserU2mDeps, opts: ResolveOptions = {}): Promise<Credential> {
  // `decide` already refuses this; the check stays here because tokens are keyed by name alone,
  // and a service principal must never read or start a person's token of the same name.
  if (caller.kind !== 'user') throw new AppError('PERMISSION_DENIED', `service principal ${caller.user} cannot use per-user connection "${connection.name}"`)
  const ref: TokenRef = { connection: connection.name, user: caller.user }
  let record: TokenRecord
  try {
    record = await deps.refresher.getFreshToken({
      ref,
      method: METHOD,
      ...(opts.forceRefresh ? { forceRefresh: true } : {}),
      missing: () => consentNeeded(connection, 'no-token'),
      obtain: async (current) => {
        if (!current) throw consentNeeded(connection, 'no-token')
        if (!current.refreshToken) {
          // Nothing to renew with: serve the token until it really expires, then ask again.
          if (isUsable(current, deps.now())) return current
          throw new AppError('REAUTHORIZATION_REQUIRED', 'the access token expired and the provider issued no refresh token', {
            detail: { connection: connection.name, reason: 'no-refresh-token' },
          })
        }
        const set = await (await deps.clients.get(connection)).refresh(current.refreshToken)
        return recordFromTokenSet(set, { method: METHOD, now: deps.now(), previous: current })
      },
      // The refresher has deleted the record when the reason is invalid_grant (design.md §8).
      fatal: (e) => consentNeeded(connection, fatalReason(e), e),
    })
  } catch (e) {
    if (isAppError(e, 'CONSENT_REQUIRED')) return consentLink(connection, caller.user, deps, reasonOf(e))
    throw e
  }
  return tokenCredential(record, connection)
}

function fatalReason(e: AppError): ConsentReason {
  const r = e.detail?.reason
  return r === 'invalid_grant' || r === 'no-refresh-token' ? r : 'reauthorization-required'
}

function reasonOf(e: AppError): ConsentReason {
  const r = e.detail?.reason
  return r === 'invalid_grant' || r === 'no-refresh-token' || r === 'reauthorization-required' ? r : 'no-token'
}

const PendingSchema = z.strictObject({
  purpose: z.literal('pending-consent'),
  flowId: z.string().min(1),
  expiresAt: z.number().int().nonnegative(),
})

/**
 * Where the (user, connection) pair's pending link is remembered. Derived, not random, so any
 * replica finds it; hashed, so the store key names neither; and harmless if guessed: the record
 * is sealed, and no route reveals a record or accepts one of another purpose.
 */
export function pendingFlowPointerId(connection: string, user: string): string {
  return sha256Base64url(`keyway:pending-consent\u0000${connection}\u0000${user}`)
}

/** The caller's pending link if it is still unopened and has time left, else a new flow. */
async function consentLink(connection: Connection, user: string, deps: PerUserU2mDeps, reason: ConsentReason): Promise<Credential> {
  const now = deps.now()
  const publicUrl = deps.publicUrl().replace(/\/+$/, '')
  const pointerId = pendingFlowPointerId(connection.name, user)
  const pending = await readPending(deps.store, pointerId)
  if (pending && pending.expiresAt - now >= PENDING_LINK_MIN_LEFT_MS) {
    // Still unopened: opening a link takes it, so a link someone is already using is never handed out again.
    const link = await readConsentLink(deps.store, pending.flowId).catch(() => undefined)
    if (link && link.method === METHOD && link.tokenUser === user && link.connection === connection.name)
      return { kind: 'consent-required', url: `${publicUrl}${connectPath(pending.flowId)}`, flowId: pending.flowId }
  }
  const flow = await createConsentFlow(
    deps.store,
    // The token becomes the caller's, and only the caller may complete the flow at the browser (design.md §7 step 3).
    { connection: connection.name, method: METHOD, tokenUser: user, completer: { user } },
    { publicUrl, now },
  )
  await deps.store.putFlow(pointerId, { purpose: 'pending-consent', flowId: flow.flowId, expiresAt: flow.expiresAt }, FLOW_TTL_MS)
  deps.audit?.record({ type: 'consent.started', user, connection: connection.name, ...(reason === 'no-token' ? {} : { reason }) })
  return { kind: 'consent-required', url: flow.url, flowId: flow.flowId }
}

async function readPending(store: TokenStore, id: string): Promise<z.infer<typeof PendingSchema> | undefined> {
  const raw = await store.getFlow(id)
  const r = PendingSchema.safeParse(raw)
  return r.success ? r.data : undefined
}

/** How a bounded wait for a consent ended. */
export type ConsentWait =
  | { readonly kind: 'granted' }
  | { readonly kind: 'failed'; readonly reason: string }
  | { readonly kind: 'timeout' }

export interface ConsentWaitOptions {
  readonly timeoutMs: number
  readonly pollMs?: number
  readonly signal?: AbortSignal
  /** The clock tokens are judged by (the runtime's). */
  readonly now: () => number
}

/**
 * Waits until the caller has a usable per-user token for the connection (from this flow or any
 * other of theirs), or the flow is recorded as failed, or the time is up (design.md §7 step 5:
 * "the waiting one"). Polls the shared store, so the callback may land on any replica.
 */
export async function waitForPerUserToken(
  store: TokenStore,
  target: { readonly connection: string; readonly user: string; readonly flowId: string },
  opts: ConsentWaitOptions,
): Promise<ConsentWait> {
  const deadline = Date.now() + opts.timeoutMs
  const poll = opts.pollMs ?? OUTCOME_POLL_MS
  for (;;) {
    const token = await store.getToken({ connection: target.connection, user: target.user })
    if (token && token.method === METHOD && isUsable(token, opts.now())) return { kind: 'granted' }
    const outcome = await readOutcome(store, target.flowId).catch(() => undefined)
    if (outcome?.status === 'failed') return { kind: 'failed', reason: outcome.reason ?? 'failed' }
    const left = deadline - Date.now()
    if (left <= 0 || opts.signal?.aborted) return { kind: 'timeout' }
    try {
      await sleep(Math.min(poll, left), undefined, opts.signal ? { signal: opts.signal } : {})
    } catch {
      return { kind: 'timeout' }
    }
  }
}
