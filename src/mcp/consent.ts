/**
 * Asking an MCP client to send its user to a consent link (design.md §7 step 2), each client the
 * way it understands, and waiting a bounded time for the consent to land when the client retries
 * after its user accepted (§7 step 5). Implements `ServerDeps.askForConsent` and
 * `ServerDeps.awaitConsent` (which runs before the retried call, so the call finds the token):
 *
 * - a 2026-07-28 client that declares URL elicitation (request envelope
 *   `clientCapabilities.elicitation.url`) gets `input_required` with a URL elicitation and a
 *   `requestState` that is HMAC-signed (key derived with HKDF from the store key, so every
 *   replica verifies it), bound to the user, valid 10 minutes, carrying {connection, flowId};
 * - a 2025-era client on a live connection (stdio) that declared `elicitation.url` at
 *   `initialize` gets the same `input_required` return, which the SDK's legacy shim turns into
 *   `elicitation/create` in URL mode and answers by re-entering the handler;
 * - a 2025-era HTTP client is served per request and the server never sees its `initialize`, so
 *   the app records, per user, what the user's last `initialize` declared
 *   (`consent/client-memory.ts`), and a user whose last client declared URL elicitation gets
 *   error -32042 carrying the link (heuristic: README, "Per-user connections");
 * - everyone else gets the `CONSENT_REQUIRED` tool result with the link and "retry after
 *   authorizing".
 *
 * Messages never contain a secret and the link carries only the flow id. This module decides
 * the channel; the flows, the wait and what is remembered about clients are `consent/`'s.
 * @module
 */
import { randomUUID } from 'node:crypto'
import {
  inputRequired,
  inputResponse,
  UrlElicitationRequiredError,
  createRequestStateCodec,
  type CallToolResult,
  type InputRequiredResult,
  type McpRequestContext,
  type ServerContext,
} from '@modelcontextprotocol/server'
import * as z from 'zod'
import { createClientMemory } from '../consent/client-memory.js'
import { readOutcome, waitForPerUserToken } from '../consent/records.js'
import { isRecord } from '../is-record.js'
import type { Logger } from '../log.js'
import { errorMessage } from '../log.js'
import type { TokenStore } from '../store/index.js'
import type { CallOutcome } from './call-tool.js'
import { toolError } from './tool-result.js'
import { consentErrorMessage, consentText, type ServerDeps } from './server.js'

/** The key of the one input request Keyway makes (`inputRequests.consent`). */
export const CONSENT_INPUT_KEY = 'consent'
/**
 * How long a retry after "accept" waits for the token to land before answering. A person who
 * agreed to open the link usually finishes a provider sign-in within seconds; 30 s stays well
 * under the 60 s request timeout clients commonly use, and a longer sign-in just gets the
 * `CONSENT_REQUIRED` link to retry with.
 */
export const CONSENT_WAIT_MS = 30_000
/** The signed `requestState` lives as long as the consent link it names (design.md §7: 10 minutes). */
export const REQUEST_STATE_TTL_S = 600
const CLIENT_CAPABILITIES_META_KEY = 'io.modelcontextprotocol/clientCapabilities'

type ConsentOutcome = Extract<CallOutcome, { kind: 'consent-required' }>
type AskForConsent = NonNullable<ServerDeps['askForConsent']>
type AwaitConsent = NonNullable<ServerDeps['awaitConsent']>

/** The signed payload of `requestState`. */
const ConsentStateSchema = z.strictObject({ connection: z.string().min(1), flowId: z.string().min(1) })
export type ConsentState = z.infer<typeof ConsentStateSchema>

/** How a client is asked (design.md §7 step 2). */
export type ConsentChannel = 'input-required' | 'url-elicitation-error' | 'text'

/** What decides the channel; all of it comes from the request or the store, nothing from the model. */
export interface ChannelFacts {
  readonly era: McpRequestContext['era']
  /** Served per request over HTTP (no live channel back to the client). */
  readonly http: boolean
  /** 2026-07-28: the request envelope's client capabilities. */
  readonly envelopeCapabilities: unknown
  /** A live 2025-era connection (stdio): what its `initialize` declared. */
  readonly liveCapabilities: unknown
  /** 2025-era HTTP: whether this user's last recorded `initialize` declared URL elicitation. */
  readonly recordedUrlElicitation: boolean
}

/** `elicitation.url` declared (MCP 2025-11-25 client/elicitation: `{}` alone means form only). */
export function declaresUrlElicitation(capabilities: unknown): boolean {
  if (!isRecord(capabilities)) return false
  const elicitation = capabilities.elicitation
  return isRecord(elicitation) && isRecord(elicitation.url)
}

/**
 * The channel for a client: never a mode the client did not declare (MCP 2026-07-28
 * client/elicitation MUST NOT), and on per-request 2025-era HTTP only what the user's last
 * `initialize` declared.
 */
export function chooseConsentChannel(f: ChannelFacts): ConsentChannel {
  if (f.era === 'modern') return declaresUrlElicitation(f.envelopeCapabilities ?? f.liveCapabilities) ? 'input-required' : 'text'
  if (f.http) return f.recordedUrlElicitation ? 'url-elicitation-error' : 'text'
  return declaresUrlElicitation(f.liveCapabilities) ? 'input-required' : 'text'
}

/** The elicitation's message: what will happen, no secret, no link (the link is the elicitation's `url`). */
export function elicitationMessage(connection: string): string {
  return `Connect your account to "${connection}": open the link, sign in at the provider and allow access. Keyway stores the token; the agent never sees it.`
}

export interface ConsentAskerDeps {
  readonly store: TokenStore
  /** The `requestState` HMAC key (`requestStateKey`), at least 32 bytes, the same on every replica. */
  readonly key: Uint8Array
  readonly log: Logger
  /** The clock tokens are judged by (the runtime's). */
  readonly now: () => number
  readonly waitMs?: number
  readonly pollMs?: number
}

export interface ConsentAsker {
  /** `ServerDeps.askForConsent` (design.md §7 step 2). */
  readonly askForConsent: AskForConsent
  /** `ServerDeps.awaitConsent`: the bounded wait of a retry whose person accepted (design.md §7 step 5). */
  readonly awaitConsent: AwaitConsent
  /**
   * Records what a 2025-era `initialize` over HTTP declared, for the user's next tool calls.
   * Never throws: a store failure only means the plain link is used.
   */
  rememberInitialize(user: string, params: unknown): Promise<void>
  /** Whether the user's last recorded `initialize` declared URL elicitation. */
  recalledUrlElicitation(user: string): Promise<boolean>
}

/** Creates the consent asker of a running Keyway. */
export function createConsentAsker(deps: ConsentAskerDeps): ConsentAsker {
  const waitMs = deps.waitMs ?? CONSENT_WAIT_MS
  // The bound value is the user; the codec stores only an HMAC tag of it in the state.
  const boundUser = new WeakMap<ServerContext, string>()
  const codec = createRequestStateCodec<unknown>({
    key: deps.key,
    ttlSeconds: REQUEST_STATE_TTL_S,
    bind: (ctx) => {
      const user = boundUser.get(ctx)
      if (user === undefined) throw new Error('requestState bound to no user')
      return `tools/call\u0000${user}`
    },
  })

  const memory = createClientMemory(deps)
  const recalledUrlElicitation = (user: string): Promise<boolean> => memory.recallUrlElicitation(user)

  /** The verified state of a retry, or undefined (absent, forged, expired, another user's, another connection's). */
  const verifiedState = async (ctx: ServerContext, user: string, connection: string): Promise<ConsentState | undefined> => {
    const raw = ctx.mcpReq.requestState<unknown>()
    if (typeof raw !== 'string') return undefined
    boundUser.set(ctx, user)
    try {
      const r = ConsentStateSchema.safeParse(await codec.verify(raw, ctx))
      return r.success && r.data.connection === connection ? r.data : undefined
    } catch (e) {
      deps.log.info('requestState refused', { reason: errorMessage(e), connection })
      return undefined
    }
  }

  const ask = async (outcome: ConsentOutcome, ctx: ServerContext, user: string): Promise<InputRequiredResult> => {
    boundUser.set(ctx, user)
    const state: ConsentState = { connection: outcome.connection.name, flowId: outcome.flowId }
    return inputRequired({
      inputRequests: { [CONSENT_INPUT_KEY]: inputRequired.elicitUrl({ message: elicitationMessage(outcome.connection.name), url: outcome.url }) },
      requestState: await codec.mint(state, ctx),
    })
  }

  /**
   * Before the retry runs: if it answers our question with "accept" and a valid state, wait until
   * the token lands (or the flow fails, or time is up); the call itself then runs as usual and
   * finds the token. Nothing here answers the call.
   */
  const awaitConsent: AwaitConsent = async (scope, ctx, tool) => {
    const answer = inputResponse(ctx.mcpReq.inputResponses, CONSENT_INPUT_KEY)
    if (answer.kind !== 'elicit' || answer.action !== 'accept') return
    const state = await verifiedState(ctx, scope.caller.user, tool)
    if (!state) return
    const waited = await waitForPerUserToken(
      deps.store,
      { connection: state.connection, user: scope.caller.user, flowId: state.flowId },
      { timeoutMs: waitMs, ...(deps.pollMs === undefined ? {} : { pollMs: deps.pollMs }), signal: ctx.mcpReq.signal, now: deps.now },
    )
    deps.log.info('consent wait ended', { connection: state.connection, user: scope.caller.user, result: waited.kind })
  }

  /** The person accepted and we waited, yet the call still needs consent: say why, with the (new) link; never ask in-band twice. */
  const notLanded = async (state: ConsentState, outcome: ConsentOutcome): Promise<CallToolResult> => {
    const finished = await readOutcome(deps.store, state.flowId).catch(() => undefined)
    if (finished?.status === 'failed')
      return toolError(
        'CONSENT_REQUIRED',
        `the sign-in for "${state.connection}" did not complete (${finished.reason ?? 'failed'}); open ${outcome.url} in a browser, sign in, then retry after authorizing`,
      )
    return toolError(
      'CONSENT_REQUIRED',
      `the sign-in for "${state.connection}" has not finished yet; if you have not, open ${outcome.url} in a browser and sign in, then retry after authorizing`,
    )
  }

  const askForConsent: AskForConsent = async (outcome, scope, ctx, era, call) => {
    const user = scope.caller.user
    const connection = outcome.connection.name
    const answer = inputResponse(ctx.mcpReq.inputResponses, CONSENT_INPUT_KEY)
    if (answer.kind === 'elicit') {
      // A retry answering our own question. Its state must verify for this user and connection;
      // anything else gets the plain link, never another in-band question (no loops on tampering).
      const state = await verifiedState(ctx, user, connection)
      if (!state) return consentText(outcome.url, connection)
      if (answer.action === 'accept') return notLanded(state, outcome)
      return toolError(
        'CONSENT_REQUIRED',
        `connecting "${connection}" was declined; to connect later, open ${outcome.url} in a browser, sign in, then retry after authorizing`,
      )
    }
    const envelope = ctx.mcpReq.envelope as Readonly<Record<string, unknown>> | undefined
    const http = ctx.http !== undefined
    const channel = chooseConsentChannel({
      era,
      http,
      envelopeCapabilities: envelope?.[CLIENT_CAPABILITIES_META_KEY],
      liveCapabilities: call.clientCapabilities,
      recordedUrlElicitation: era === 'legacy' && http ? await recalledUrlElicitation(user) : false,
    })
    deps.log.info('consent required', { connection, user, era, channel })
    switch (channel) {
      case 'input-required':
        return ask(outcome, ctx, user)
      case 'url-elicitation-error':
        // 2025-11-25 URLElicitationRequiredError: the client opens the link, then retries the call.
        throw new UrlElicitationRequiredError(
          [{ mode: 'url', elicitationId: randomUUID(), url: outcome.url, message: elicitationMessage(connection) }],
          consentErrorMessage(outcome.url, connection),
        )
      case 'text':
        return consentText(outcome.url, connection)
      default: {
        const never: never = channel
        throw new Error(`unexpected channel ${String(never)}`)
      }
    }
  }

  return {
    askForConsent,
    awaitConsent,
    recalledUrlElicitation,
    async rememberInitialize(user, params) {
      const p = isRecord(params) ? params : {}
      const clientName = isRecord(p.clientInfo) && typeof p.clientInfo.name === 'string' ? p.clientInfo.name : undefined
      await memory.remember(user, { elicitationUrl: declaresUrlElicitation(p.capabilities), clientName })
    },
  }
}
