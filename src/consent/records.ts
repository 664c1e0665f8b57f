/**
 * Consent flows in the token store (design.md §7): the records that carry a sign-in from the link
 * a person opens to the provider's callback, each single use with a 10-minute lifetime. A flow is
 * made for *whose token is stored* (`tokenUser`: null for a shared connection) and *who must
 * complete it* (`completer`: the owner of a shared connection, the caller of a per-user one); the
 * browser routes and `complete.ts` treat both kinds alike, so per-user OAuth only makes flows with
 * other values. Records, by key:
 *
 * - `consent` under the flow id (the link `<publicUrl>/connect/<flowId>`), taken once when the
 *   browser user is confirmed;
 * - `provider-callback` under the provider `state`, taken once by the callback;
 * - `sign-in-callback` under the state of Keyway's own sign-in at the identity provider (OIDC mode);
 * - `confirmation` under an id derived from the flow id and a confirmation form token (API-key
 *   mode): the server-side half of the form, issued with the page and taken once by the POST, so
 *   only a token this server issued for this link confirms it;
 * - `outcome` under an id derived from the flow id, so whoever waits (`keyway authorize`, a
 *   waiting tool call) learns how it ended;
 * - `pending-consent` under an id derived from (connection, user): a per-user caller's link not
 *   opened yet, handed out again instead of a new one on every call (`startPerUserConsent`).
 *
 * It also runs the waits: `waitForOutcome` (`keyway authorize`) and `waitForPerUserToken` (a
 * client's retry after its person accepted, `mcp/consent.ts`).
 *
 * Every id and `state` is 256 random bits (RFC 9700 §4.7 asks for at least 128). The store hashes
 * ids in keys and encrypts the records, so the PKCE verifier never sits in clear. This module
 * holds no HTTP and no OAuth; it validates what it reads back and fails closed on anything else.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import * as z from 'zod'
import type { AuditLog } from '../audit/audit-log.js'
import type { Principal } from '../config/schema.js'
import type { ConsentReason } from '../credentials/oauth-u2m-per-user.js'
import { isUsable } from '../credentials/refresh.js'
import { sha256Base64url } from '../encoding.js'
import { AppError } from '../errors.js'
import { newFlowId, type TokenStore } from '../store/index.js'

/** How long a consent link and everything it starts stays valid (design.md §7). */
export const FLOW_TTL_MS = 10 * 60_000
/** How often a waiter re-reads the store for the outcome: quick enough to feel immediate, cheap on Redis. */
export const OUTCOME_POLL_MS = 500
/** How long an outcome stays readable after the flow ends (a waiter polls well within this). */
const OUTCOME_TTL_MS = FLOW_TTL_MS

/** The methods whose tokens come from a person signing in. */
export type ConsentMethod = 'oauth_u2m_shared' | 'oauth_u2m_per_user'

// A service principal never completes a flow (the config refuses it as owner of a consent-based
// connection); the variant is here so every `Principal` has a record shape.
const PrincipalRecordSchema = z.union([
  z.strictObject({ user: z.string().min(1) }),
  z.strictObject({ group: z.string().min(1) }),
  z.strictObject({ servicePrincipal: z.string().min(1) }),
])
const epochMs = z.number().int().nonnegative()
const randomId = z.string().regex(/^[A-Za-z0-9_-]{43,128}$/)

const flowFields = {
  connection: z.string().min(1),
  method: z.enum(['oauth_u2m_shared', 'oauth_u2m_per_user']),
  tokenUser: z.string().min(1).nullable(),
  completer: PrincipalRecordSchema,
  createdAt: epochMs,
  expiresAt: epochMs,
}

const ConsentLinkSchema = z.strictObject({
  purpose: z.literal('consent'),
  ...flowFields,
  state: randomId,
  codeVerifier: randomId,
})

const ProviderCallbackSchema = z.strictObject({
  purpose: z.literal('provider-callback'),
  ...flowFields,
  flowId: randomId,
  codeVerifier: randomId,
  /** SHA-256 hex of the browser-binding cookie value set when the browser left for the provider. */
  bindingHash: z.string().regex(/^[0-9a-f]{64}$/),
  /** The user Keyway confirmed at the browser (OIDC sign-in), when it did. */
  confirmedUser: z.string().min(1).optional(),
})

const SignInCallbackSchema = z.strictObject({
  purpose: z.literal('sign-in-callback'),
  flowId: randomId,
  codeVerifier: randomId,
  nonce: randomId,
  bindingHash: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: epochMs,
  expiresAt: epochMs,
})

const OutcomeSchema = z.strictObject({
  purpose: z.literal('outcome'),
  status: z.enum(['granted', 'failed']),
  connection: z.string().min(1),
  at: epochMs,
  reason: z.string().optional(),
  scope: z.string().optional(),
  expiresAt: epochMs.optional(),
  refreshToken: z.boolean().optional(),
  warnings: z.array(z.string()).optional(),
  /** The provider account that signed in, when named (granted flows). */
  account: z.string().optional(),
})

const ConfirmationSchema = z.strictObject({
  purpose: z.literal('confirmation'),
  flowId: randomId,
  createdAt: epochMs,
  expiresAt: epochMs,
})

/** The record behind a consent link. */
export type ConsentLink = z.infer<typeof ConsentLinkSchema>
/** What the provider's callback redeems (stored under `state`). */
export type ProviderCallback = z.infer<typeof ProviderCallbackSchema>
/** What the identity provider's callback redeems in OIDC mode (stored under its own state). */
export type SignInCallback = z.infer<typeof SignInCallbackSchema>
/** How a flow ended. */
export type FlowOutcome = z.infer<typeof OutcomeSchema>
export type CallbackRecord = ProviderCallback | SignInCallback

const CallbackSchema = z.discriminatedUnion('purpose', [ProviderCallbackSchema, SignInCallbackSchema])

/** What a new flow is for. */
export interface NewConsentFlow {
  readonly connection: string
  readonly method: ConsentMethod
  /** Whose token is stored: `null` for a shared connection's one token. */
  readonly tokenUser: string | null
  /** Who must complete it at the browser. */
  readonly completer: Principal
}

export interface CreatedFlow {
  readonly flowId: string
  /** `<publicUrl>/connect/<flowId>` */
  readonly url: string
  readonly expiresAt: number
}

/** 256 random bits, base64url: `state`, PKCE verifier (RFC 7636 §4.1: 43–128 chars), nonce, binding. */
export function randomSecret(): string {
  return randomBytes(32).toString('base64url')
}

/** The path of a consent link. */
export function connectPath(flowId: string): string {
  return `/connect/${flowId}`
}

/** Records a new flow and returns its link. */
export async function createConsentFlow(store: TokenStore, flow: NewConsentFlow, opts: { publicUrl: string; now: number }): Promise<CreatedFlow> {
  const flowId = newFlowId()
  const link: ConsentLink = {
    purpose: 'consent',
    connection: flow.connection,
    method: flow.method,
    tokenUser: flow.tokenUser,
    completer: flow.completer,
    createdAt: opts.now,
    expiresAt: opts.now + FLOW_TTL_MS,
    state: randomSecret(),
    codeVerifier: randomSecret(),
  }
  await store.putTicket(flowId, link, FLOW_TTL_MS)
  return { flowId, url: `${opts.publicUrl.replace(/\/+$/, '')}${connectPath(flowId)}`, expiresAt: link.expiresAt }
}

/** The live link record, without consuming it; undefined when unknown, expired or used. */
export async function readConsentLink(store: TokenStore, flowId: string): Promise<ConsentLink | undefined> {
  return parseRecord(ConsentLinkSchema, await store.getTicket(flowId), 'consent link')
}

/** Consumes the link: of concurrent takers exactly one gets it. */
export async function takeConsentLink(store: TokenStore, flowId: string): Promise<ConsentLink | undefined> {
  return takeChecked(store, flowId, ConsentLinkSchema, 'consent link')
}

/**
 * Hands the flow to the provider's callback: stored under the link's `state` for what is left of
 * the flow's lifetime, bound to the browser by `bindingHash`.
 */
export async function putProviderCallback(
  store: TokenStore,
  flowId: string,
  link: ConsentLink,
  opts: { bindingHash: string; confirmedUser?: string; now: number },
): Promise<void> {
  const ttl = link.expiresAt - opts.now
  if (ttl <= 0) throw new AppError('FLOW_INVALID', 'the sign-in link expired')
  const { purpose: _purpose, state, ...rest } = link
  const record: ProviderCallback = {
    ...rest,
    purpose: 'provider-callback',
    flowId,
    bindingHash: opts.bindingHash,
    ...(opts.confirmedUser === undefined ? {} : { confirmedUser: opts.confirmedUser }),
  }
  await store.putTicket(state, record, ttl)
}

/** Starts Keyway's own sign-in for a flow (OIDC mode); returns its state. */
export async function putSignInCallback(
  store: TokenStore,
  flowId: string,
  link: ConsentLink,
  opts: { codeVerifier: string; nonce: string; bindingHash: string; now: number },
): Promise<string> {
  const ttl = link.expiresAt - opts.now
  if (ttl <= 0) throw new AppError('FLOW_INVALID', 'the sign-in link expired')
  const state = randomSecret()
  const record: SignInCallback = {
    purpose: 'sign-in-callback',
    flowId,
    codeVerifier: opts.codeVerifier,
    nonce: opts.nonce,
    bindingHash: opts.bindingHash,
    createdAt: opts.now,
    expiresAt: link.expiresAt,
  }
  await store.putTicket(state, record, ttl)
  return state
}

/** Consumes the record a callback's `state` names; replays get undefined. */
export async function takeCallback(store: TokenStore, state: string): Promise<CallbackRecord | undefined> {
  return takeChecked(store, state, CallbackSchema, 'callback record')
}

/**
 * Takes a record only if it is of the expected kind: an id presented at the wrong route (a state
 * as a link, a link id as a state) must not consume, and so cancel, someone's flow.
 */
async function takeChecked<T>(store: TokenStore, id: string, schema: z.ZodType<T>, what: string): Promise<T | undefined> {
  if (parseRecord(schema, await store.getTicket(id), what) === undefined) return undefined
  return parseRecord(schema, await store.takeTicket(id), what)
}

/** Where a confirmation form token is recorded: derived from the flow id and the token, so the store never holds the token. */
export function confirmationId(flowId: string, token: string): string {
  return sha256Base64url(`confirmation\u0000${flowId}\u0000${token}`)
}

/**
 * Records that this server issued confirmation form `token` for the link (API-key mode), for what
 * is left of the link's lifetime. Each page view issues its own; the link itself is not rewritten,
 * so a page view can never bring back a link that a concurrent confirmation has just taken.
 */
export async function putConfirmation(store: TokenStore, flowId: string, link: ConsentLink, token: string, now: number): Promise<void> {
  const ttl = link.expiresAt - now
  if (ttl <= 0) throw new AppError('FLOW_INVALID', 'the sign-in link expired')
  await store.putTicket(confirmationId(flowId, token), { purpose: 'confirmation', flowId, createdAt: now, expiresAt: link.expiresAt }, ttl)
}

/** Consumes the confirmation `token` of the link: true once for a token issued for it, false for anything else. */
export async function takeConfirmation(store: TokenStore, flowId: string, token: string): Promise<boolean> {
  const record = await takeChecked(store, confirmationId(flowId, token), ConfirmationSchema, 'confirmation')
  return record !== undefined && record.flowId === flowId
}

/** The id an outcome is stored under: derived, so only holders of the flow id can read it. */
export function outcomeId(flowId: string): string {
  return sha256Base64url(`outcome:${flowId}`)
}

/** Records how a flow ended, for whoever waits on it. */
export async function putOutcome(store: TokenStore, flowId: string, outcome: Omit<FlowOutcome, 'purpose'>): Promise<void> {
  await store.putTicket(outcomeId(flowId), { purpose: 'outcome', ...outcome }, OUTCOME_TTL_MS)
}

export async function readOutcome(store: TokenStore, flowId: string): Promise<FlowOutcome | undefined> {
  return parseRecord(OutcomeSchema, await store.getTicket(outcomeId(flowId)), 'flow outcome')
}

export interface WaitOptions {
  /** Stop waiting after this long (the link expires anyway after `FLOW_TTL_MS`). */
  readonly timeoutMs: number
  readonly pollMs?: number
  readonly signal?: AbortSignal
  /** Called after every poll with the time left, for progress output. */
  readonly onPoll?: (leftMs: number) => void
}

/** Polls the store until the flow's outcome is known; undefined on timeout or abort. */
export async function waitForOutcome(store: TokenStore, flowId: string, opts: WaitOptions): Promise<FlowOutcome | undefined> {
  const deadline = Date.now() + opts.timeoutMs
  const poll = opts.pollMs ?? OUTCOME_POLL_MS
  for (;;) {
    const outcome = await readOutcome(store, flowId)
    if (outcome) return outcome
    const left = deadline - Date.now()
    opts.onPoll?.(Math.max(0, left))
    if (left <= 0 || opts.signal?.aborted) return undefined
    try {
      await sleep(Math.min(poll, left), undefined, opts.signal ? { signal: opts.signal } : {})
    } catch {
      return undefined
    }
  }
}

// Per-user flows: the pending-link pointer (one unopened link per user and connection) and the
// wait of a retried tool call.

/**
 * A pending link is handed out again only while it has at least this long to live: enough to
 * open it, sign in at the provider and consent. A link closer to its end is replaced, so nobody
 * gets a link that dies on the provider's login page.
 */
export const PENDING_LINK_MIN_LEFT_MS = 3 * 60_000

const PER_USER = 'oauth_u2m_per_user'

/** A consent link handed out: `<publicUrl>/connect/<flowId>` and its flow id. */
export interface CreatedLink {
  readonly url: string
  readonly flowId: string
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

export interface PerUserConsentDeps {
  readonly store: TokenStore
  readonly now: () => number
  /** `server.publicUrl` of the live config: the origin of consent links. */
  readonly publicUrl: () => string
  readonly audit?: AuditLog
}

/**
 * The caller's consent link for a per-user connection: their pending link if it is still
 * unopened and has time left, else a new flow (audited `consent.started`). This is the
 * `startConsent` that `credentials/oauth-u2m-per-user.ts` is given.
 */
export async function startPerUserConsent(deps: PerUserConsentDeps, connection: string, user: string, reason: ConsentReason): Promise<CreatedLink> {
  const now = deps.now()
  const publicUrl = deps.publicUrl().replace(/\/+$/, '')
  const pointerId = pendingFlowPointerId(connection, user)
  const pending = await readPending(deps.store, pointerId)
  if (pending && pending.expiresAt - now >= PENDING_LINK_MIN_LEFT_MS) {
    // Still unopened: opening a link takes it, so a link someone is already using is never handed out again.
    const link = await readConsentLink(deps.store, pending.flowId).catch(() => undefined)
    if (link && link.method === PER_USER && link.tokenUser === user && link.connection === connection)
      return { url: `${publicUrl}${connectPath(pending.flowId)}`, flowId: pending.flowId }
  }
  const flow = await createConsentFlow(
    deps.store,
    // The token becomes the caller's, and only the caller may complete the flow at the browser (design.md §7 step 3).
    { connection, method: PER_USER, tokenUser: user, completer: { user } },
    { publicUrl, now },
  )
  await deps.store.putTicket(pointerId, { purpose: 'pending-consent', flowId: flow.flowId, expiresAt: flow.expiresAt }, FLOW_TTL_MS)
  deps.audit?.record({ type: 'consent.started', user, connection, ...(reason === 'no-token' ? {} : { reason }) })
  return { url: flow.url, flowId: flow.flowId }
}

async function readPending(store: TokenStore, id: string): Promise<z.infer<typeof PendingSchema> | undefined> {
  const raw = await store.getTicket(id)
  const r = PendingSchema.safeParse(raw)
  return r.success ? r.data : undefined
}

/** How a bounded wait for a consent ended. */
export type ConsentWait = { readonly kind: 'granted' } | { readonly kind: 'failed'; readonly reason: string } | { readonly kind: 'timeout' }

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
    if (token && token.method === PER_USER && isUsable(token, opts.now())) return { kind: 'granted' }
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

function parseRecord<T>(schema: z.ZodType<T>, raw: unknown, what: string): T | undefined {
  if (raw === undefined) return undefined
  const r = schema.safeParse(raw)
  // A record under a flow id that is not what this id should hold: another purpose (a state used
  // as a link, say) or a damaged record. Either way the flow cannot go on; nothing is guessed.
  if (!r.success) throw new AppError('FLOW_INVALID', `the ${what} is not valid for this step`, { detail: { reason: 'wrong-record' } })
  return r.data
}
