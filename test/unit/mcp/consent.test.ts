/**
 * How Keyway asks an MCP client for consent (design.md §7 step 2) and what it does with the
 * answer: the channel per client (pure), the requestState key, the remembered 2025-era
 * `initialize`, and the hook itself against a real memory store, with the request context built
 * the way the SDK hands it to a handler. End to end with real clients: the integration test.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { UrlElicitationRequiredError, type CallToolResult, type InputRequiredResult, type ServerContext } from '@modelcontextprotocol/server'
import type { Connection } from '../../../src/config/load.js'
import { clientCapabilitiesRecordId, requestStateKey } from '../../../src/consent/client-memory.js'
import { putOutcome } from '../../../src/consent/records.js'
import { createCaller } from '../../../src/identity/caller.js'
import { createMemoryLogger } from '../../../src/log.js'
import {
  chooseConsentChannel,
  CONSENT_INPUT_KEY,
  createConsentAsker,
  declaresUrlElicitation,
  elicitationMessage,
  type ChannelFacts,
  type ConsentAsker,
} from '../../../src/mcp/consent.js'
import { consentErrorMessage, type CallScope, type ConsentCall } from '../../../src/mcp/server.js'
import { Secret } from '../../../src/secret.js'
import { type TokenStore } from '../../../src/store/index.js'
import { loadTestConfig } from '../../helpers/config.js'
import { openMemoryStore } from '../../helpers/memory-store.js'

const URL_ = 'https://keyway.example.test/connect/' + 'F'.repeat(43)
const FLOW_ID = 'F'.repeat(43)
const ALICE = 'alice@example.com'
const BOB = 'bob@example.com'

describe('declaresUrlElicitation', () => {
  test.each([
    [{ elicitation: { url: {} } }, true],
    [{ elicitation: { form: {}, url: {} } }, true],
    [{ elicitation: {} }, false], // form only (MCP 2025-11-25 client/elicitation)
    [{ elicitation: { form: {} } }, false],
    [{ elicitation: { url: true } }, false],
    [{ elicitation: { url: null } }, false],
    [{}, false],
    [undefined, false],
    ['elicitation', false],
  ])('%j → %s', (caps, expected) => {
    expect(declaresUrlElicitation(caps)).toBe(expected)
  })
})

describe('chooseConsentChannel [consent:per-user-channel]', () => {
  const base: ChannelFacts = { era: 'modern', http: true, envelopeCapabilities: undefined, liveCapabilities: undefined, recordedUrlElicitation: false }
  const url = { elicitation: { url: {} } }
  test.each<[string, Partial<ChannelFacts>, ReturnType<typeof chooseConsentChannel>]>([
    ['2026-07-28 over HTTP declaring URL elicitation', { envelopeCapabilities: url }, 'input-required'],
    ['2026-07-28 declaring form only', { envelopeCapabilities: { elicitation: {} } }, 'text'],
    ['2026-07-28 declaring nothing', {}, 'text'],
    ['2026-07-28 over stdio declaring URL elicitation', { http: false, envelopeCapabilities: url }, 'input-required'],
    ['2026-07-28: a recorded 2025 initialize does not count', { recordedUrlElicitation: true }, 'text'],
    ['2025-era HTTP whose last initialize declared URL elicitation', { era: 'legacy', recordedUrlElicitation: true }, 'url-elicitation-error'],
    ['2025-era HTTP whose last initialize did not', { era: 'legacy' }, 'text'],
    ['2025-era HTTP: live capabilities are never there, and never trusted', { era: 'legacy', liveCapabilities: url }, 'text'],
    ['2025-era stdio declaring URL elicitation', { era: 'legacy', http: false, liveCapabilities: url }, 'input-required'],
    ['2025-era stdio declaring form only', { era: 'legacy', http: false, liveCapabilities: { elicitation: {} } }, 'text'],
    ['2025-era stdio: a recorded HTTP initialize does not count', { era: 'legacy', http: false, recordedUrlElicitation: true }, 'text'],
  ])('%s → %s', (_what, facts, expected) => {
    expect(chooseConsentChannel({ ...base, ...facts })).toBe(expected)
  })
})

describe('requestStateKey', () => {
  test('HKDF of the store key: the same on every replica, never the key itself, different per store key', () => {
    const raw = randomBytes(32)
    const a = requestStateKey({ encryptionKey: new Secret(raw.toString('base64')) })
    const b = requestStateKey({ encryptionKey: new Secret(raw.toString('base64url')) })
    const other = requestStateKey({ encryptionKey: new Secret(randomBytes(32).toString('base64')) })
    expect(a).toHaveLength(32)
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true)
    expect(Buffer.from(a).equals(raw)).toBe(false)
    expect(Buffer.from(a).equals(Buffer.from(other))).toBe(false)
  })

  test('without a store key (ephemeral store) a random per-process key', () => {
    const a = requestStateKey({ encryptionKey: undefined })
    expect(a).toHaveLength(32)
    expect(Buffer.from(a).equals(Buffer.from(requestStateKey({ encryptionKey: undefined })))).toBe(false)
  })
})

test('messages: the elicitation names the connection and carries no link or secret; the -32042 text carries the link', () => {
  expect(elicitationMessage('drive')).toBe(
    'Connect your account to "drive": open the link, sign in at the provider and allow access. Keyway stores the token; the agent never sees it.',
  )
  expect(consentErrorMessage(URL_, 'drive')).toBe(`connect your account to "drive" first: open ${URL_} in a browser, sign in, then retry after authorizing`)
})

// ---------------------------------------------------------------------------------------------

let clock = 1_800_000_000_000
const now = (): number => clock
let store: TokenStore
let asker: ConsentAsker
let scope: CallScope
let bobScope: CallScope
let connection: Connection
let log: ReturnType<typeof createMemoryLogger>

beforeEach(async () => {
  clock = 1_800_000_000_000
  store = await openMemoryStore(now)
  log = createMemoryLogger()
  asker = createConsentAsker({ store, key: randomBytes(32), log, now, waitMs: 300, pollMs: 10 })
  const { snapshot } = await loadTestConfig(
    `
version: 1
server: { publicUrl: https://keyway.example.test }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  drive:
    host: https://api.example.test
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: oauth_u2m_per_user, tokenEndpoint: https://idp.example.test/token, authorizationEndpoint: https://idp.example.test/auth, clientId: c, clientSecret: { env: S } }
`,
    { S: 's' },
  )
  const c = snapshot.connections.get('drive')
  if (!c) throw new Error('no connection')
  connection = c
  scope = { caller: createCaller(snapshot, ALICE, 'api_key'), snapshot }
  bobScope = { caller: createCaller(snapshot, BOB, 'api_key'), snapshot }
})
afterEach(async () => store.close())

interface CtxOptions {
  readonly http?: boolean
  readonly envelopeCapabilities?: unknown
  readonly inputResponses?: Record<string, unknown>
  readonly requestState?: string
}

/** A handler context as the SDK builds it for `tools/call` (only the fields the hook reads). */
function ctx(o: CtxOptions = {}): ServerContext {
  const mcpReq = {
    id: 7,
    method: 'tools/call',
    signal: new AbortController().signal,
    ...(o.envelopeCapabilities === undefined ? {} : { envelope: { 'io.modelcontextprotocol/clientCapabilities': o.envelopeCapabilities } }),
    ...(o.inputResponses === undefined ? {} : { inputResponses: o.inputResponses }),
    requestState: () => o.requestState,
  }
  return { mcpReq, ...(o.http === false ? {} : { http: { authInfo: { token: 'redacted', clientId: 'api_key', scopes: [] } } }) } as unknown as ServerContext
}

const outcome = () => ({ kind: 'consent-required' as const, url: URL_, flowId: FLOW_ID, connection })
const call = (over: Partial<ConsentCall> = {}): ConsentCall => ({ clientCapabilities: over.clientCapabilities })
const landToken = (user = ALICE) =>
  store.putToken(
    { connection: 'drive', user },
    { method: 'oauth_u2m_per_user', accessToken: 'at', tokenType: 'bearer', obtainedAt: clock, expiresAt: clock + 60_000 },
  )

const textOf = (r: CallToolResult | InputRequiredResult): string => {
  const content = (r as CallToolResult).content
  const first = content?.[0]
  return first && first.type === 'text' ? first.text : ''
}

async function firstAsk(c: ServerContext = ctx({ envelopeCapabilities: { elicitation: { url: {} } } }), s: CallScope = scope): Promise<InputRequiredResult> {
  const r = await asker.askForConsent(outcome(), s, c, 'modern', call())
  if ((r as InputRequiredResult).resultType !== 'input_required') throw new Error(`expected input_required, got ${JSON.stringify(r)}`)
  return r as InputRequiredResult
}

describe('askForConsent: the first ask', () => {
  test('2026-07-28 with URL elicitation: input_required with the link and a signed requestState [consent:per-user-modern-elicitation]', async () => {
    const r = await firstAsk()
    expect(r.inputRequests?.[CONSENT_INPUT_KEY]).toEqual({
      method: 'elicitation/create',
      params: { mode: 'url', url: URL_, message: elicitationMessage('drive') },
    })
    // Signed, not encrypted: the payload is the connection and the flow id, nothing else (no user id).
    const state = r.requestState ?? ''
    expect(state).toMatch(/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/)
    const body = JSON.parse(Buffer.from(state.split('.')[1] ?? '', 'base64url').toString('utf8')) as { p: unknown; exp: number; b: string }
    expect(body.p).toEqual({ connection: 'drive', flowId: FLOW_ID })
    expect(body.exp - Math.floor(Date.now() / 1000)).toBeGreaterThan(590)
    expect(JSON.stringify(body)).not.toContain(ALICE)
  })

  test('2026-07-28 without URL elicitation: the CONSENT_REQUIRED link', async () => {
    const r = await asker.askForConsent(outcome(), scope, ctx({ envelopeCapabilities: { elicitation: {} } }), 'modern', call())
    expect(textOf(r)).toBe(`CONSENT_REQUIRED: connect your account to "drive" first: open ${URL_} in a browser, sign in, then retry after authorizing`)
  })

  test("2025-era HTTP whose user's last initialize declared URL elicitation: -32042 with the link [consent:per-user-32042]", async () => {
    await asker.rememberInitialize(ALICE, {
      protocolVersion: '2025-11-25',
      capabilities: { elicitation: { url: {} } },
      clientInfo: { name: 'vscode', version: '1' },
    })
    const thrown = await asker.askForConsent(outcome(), scope, ctx(), 'legacy', call()).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(thrown).toBeInstanceOf(UrlElicitationRequiredError)
    const e = thrown as UrlElicitationRequiredError
    expect(e.code).toBe(-32042)
    expect(e.message).toContain(consentErrorMessage(URL_, 'drive'))
    expect(e.elicitations).toEqual([{ mode: 'url', url: URL_, message: elicitationMessage('drive'), elicitationId: expect.stringMatching(/^[0-9a-f-]{36}$/) }])
    // bob's last initialize is not alice's
    expect(textOf(await asker.askForConsent(outcome(), bobScope, ctx(), 'legacy', call()))).toMatch(/^CONSENT_REQUIRED: /)
  })

  test('2025-era HTTP: the last initialize wins; none recorded means the link', async () => {
    expect(textOf(await asker.askForConsent(outcome(), scope, ctx(), 'legacy', call()))).toMatch(/^CONSENT_REQUIRED: /)
    await asker.rememberInitialize(ALICE, { capabilities: { elicitation: { url: {} } } })
    expect(await asker.recalledUrlElicitation(ALICE)).toBe(true)
    await asker.rememberInitialize(ALICE, { capabilities: { elicitation: {} } })
    expect(await asker.recalledUrlElicitation(ALICE)).toBe(false)
    expect(textOf(await asker.askForConsent(outcome(), scope, ctx(), 'legacy', call()))).toMatch(/^CONSENT_REQUIRED: /)
  })

  test('the remembered initialize holds two facts and never a token; a store failure is not fatal', async () => {
    await asker.rememberInitialize(ALICE, {
      capabilities: { elicitation: { url: {} } },
      clientInfo: { name: 'x'.repeat(500), version: '1' },
      _meta: { token: 'sk-secret' },
    })
    const record = await store.getTicket(clientCapabilitiesRecordId(ALICE))
    expect(record).toEqual({ purpose: 'client-capabilities', elicitationUrl: true, clientName: 'x'.repeat(200), at: clock })
    const broken = createConsentAsker({
      store: { ...store, putTicket: async () => Promise.reject(new Error('down')), getTicket: async () => Promise.reject(new Error('down')) },
      key: randomBytes(32),
      log,
      now,
    })
    await expect(broken.rememberInitialize(ALICE, { capabilities: { elicitation: { url: {} } } })).resolves.toBeUndefined()
    expect(await broken.recalledUrlElicitation(ALICE)).toBe(false)
  })

  test('2025-era stdio declaring URL elicitation: input_required (the SDK shim sends elicitation/create) [consent:per-user-stdio]', async () => {
    const r = await asker.askForConsent(outcome(), scope, ctx({ http: false }), 'legacy', call({ clientCapabilities: { elicitation: { url: {} } } }))
    expect((r as InputRequiredResult).resultType).toBe('input_required')
    const plain = await asker.askForConsent(outcome(), scope, ctx({ http: false }), 'legacy', call({ clientCapabilities: {} }))
    expect(textOf(plain)).toMatch(/^CONSENT_REQUIRED: /)
  })
})

describe('the retry', () => {
  const retryCtx = (requestState: string | undefined, action: string): ServerContext =>
    ctx({
      envelopeCapabilities: { elicitation: { url: {} } },
      inputResponses: { [CONSENT_INPUT_KEY]: { action } },
      ...(requestState === undefined ? {} : { requestState }),
    })
  const timed = async (f: () => Promise<void>): Promise<number> => {
    const started = Date.now()
    await f()
    return Date.now() - started
  }

  test('awaitConsent, accept: waits until the token lands, then lets the call run [consent:per-user-wait]', async () => {
    const slow = createConsentAsker({ store, key: randomBytes(32), log, now, waitMs: 5_000, pollMs: 10 })
    const first = (await slow.askForConsent(
      outcome(),
      scope,
      ctx({ envelopeCapabilities: { elicitation: { url: {} } } }),
      'modern',
      call(),
    )) as InputRequiredResult
    setTimeout(() => void landToken(), 100)
    const ms = await timed(() => slow.awaitConsent(scope, retryCtx(first.requestState, 'accept'), 'drive'))
    expect(ms).toBeGreaterThanOrEqual(90)
    expect(ms).toBeLessThan(2_000)
    expect(await store.getToken({ connection: 'drive', user: ALICE })).toBeDefined()
  })

  test('awaitConsent, accept: bounded by the wait, and a failed flow ends it early', async () => {
    const state = (await firstAsk()).requestState
    const ms = await timed(() => asker.awaitConsent(scope, retryCtx(state, 'accept'), 'drive'))
    expect(ms).toBeGreaterThanOrEqual(290)
    expect(ms).toBeLessThan(1_500)
    await putOutcome(store, FLOW_ID, { status: 'failed', connection: 'drive', at: clock, reason: 'access_denied' })
    expect(await timed(() => asker.awaitConsent(scope, retryCtx(state, 'accept'), 'drive'))).toBeLessThan(200)
  })

  test.each<[string, () => Promise<ServerContext>]>([
    ['a call that answers nothing', async () => ctx()],
    ['a decline', async () => retryCtx((await firstAsk()).requestState, 'decline')],
    ['an accept without state', async () => retryCtx(undefined, 'accept')],
    ["an accept with bob's state", async () => retryCtx((await firstAsk(undefined, bobScope)).requestState, 'accept')],
  ])('awaitConsent returns at once for %s', async (_what, make) => {
    const c = await make()
    expect(await timed(() => asker.awaitConsent(scope, c, 'drive'))).toBeLessThan(200)
  })

  test('awaitConsent: a state for another tool does not count', async () => {
    const state = (await firstAsk()).requestState
    expect(await timed(() => asker.awaitConsent(scope, retryCtx(state, 'accept'), 'mail'))).toBeLessThan(200)
  })

  test('accepted, waited, still no token: the new link, never another in-band question', async () => {
    const state = (await firstAsk()).requestState
    const again = { ...outcome(), url: `${URL_}x`, flowId: 'G'.repeat(43) }
    const r = await asker.askForConsent(again, scope, retryCtx(state, 'accept'), 'modern', call())
    expect(textOf(r)).toBe(
      `CONSENT_REQUIRED: the sign-in for "drive" has not finished yet; if you have not, open ${URL_}x in a browser and sign in, then retry after authorizing`,
    )
  })

  test('accepted, but the flow failed at the provider: the reason and the link', async () => {
    const state = (await firstAsk()).requestState
    await putOutcome(store, FLOW_ID, { status: 'failed', connection: 'drive', at: clock, reason: 'access_denied' })
    const r = await asker.askForConsent(outcome(), scope, retryCtx(state, 'accept'), 'modern', call())
    expect(textOf(r)).toBe(
      `CONSENT_REQUIRED: the sign-in for "drive" did not complete (access_denied); open ${URL_} in a browser, sign in, then retry after authorizing`,
    )
  })

  test.each(['decline', 'cancel'])('%s: CONSENT_REQUIRED with the link for later', async (action) => {
    const state = (await firstAsk()).requestState
    const r = await asker.askForConsent(outcome(), scope, retryCtx(state, action), 'modern', call())
    expect(textOf(r)).toBe(
      `CONSENT_REQUIRED: connecting "drive" was declined; to connect later, open ${URL_} in a browser, sign in, then retry after authorizing`,
    )
  })

  test.each<[string, () => Promise<string | undefined>]>([
    ['no requestState', async () => undefined],
    ['a forged requestState', async () => 'v1.eyJwIjp7fX0.AAAA'],
    ['a requestState minted for bob', async () => (await firstAsk(undefined, bobScope)).requestState],
    [
      'a requestState of another Keyway (other key)',
      async () => {
        const other = createConsentAsker({ store, key: randomBytes(32), log, now })
        return (
          (await other.askForConsent(outcome(), scope, ctx({ envelopeCapabilities: { elicitation: { url: {} } } }), 'modern', call())) as InputRequiredResult
        ).requestState
      },
    ],
    [
      'a tampered payload',
      async () => {
        const s = (await firstAsk()).requestState ?? ''
        const [v, body, mac] = s.split('.')
        const p = JSON.parse(Buffer.from(body ?? '', 'base64url').toString('utf8')) as { p: { flowId: string } }
        p.p.flowId = 'H'.repeat(43)
        return `${v}.${Buffer.from(JSON.stringify(p)).toString('base64url')}.${mac}`
      },
    ],
  ])('accept with %s: no wait, and the plain link [consent:per-user-request-state]', async (_what, make) => {
    const c = retryCtx(await make(), 'accept')
    const slow = createConsentAsker({ store, key: randomBytes(32), log, now, waitMs: 5_000 })
    expect(await timed(() => slow.awaitConsent(scope, c, 'drive'))).toBeLessThan(200)
    const r = await asker.askForConsent(outcome(), scope, c, 'modern', call())
    expect(textOf(r)).toBe(`CONSENT_REQUIRED: connect your account to "drive" first: open ${URL_} in a browser, sign in, then retry after authorizing`)
  })

  test('a requestState for another connection does not count', async () => {
    const state = (await firstAsk()).requestState
    const other = { ...connection, name: 'mail' } as Connection
    const r = await asker.askForConsent({ ...outcome(), connection: other }, scope, retryCtx(state, 'accept'), 'modern', call())
    expect(textOf(r)).toMatch(/^CONSENT_REQUIRED: connect your account to "mail" first/)
  })
})
