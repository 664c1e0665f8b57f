/**
 * Consent flow records in a real (memory) store: single use, lifetime, no cross-purpose takes,
 * outcomes for waiters.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import {
  createConsentFlow,
  FLOW_TTL_MS,
  putProviderCallback,
  putOutcome,
  readConsentLink,
  takeCallback,
  takeConsentLink,
  waitForOutcome,
} from '../../../src/consent/records.js'
import { type TokenStore } from '../../../src/store/index.js'
import { openMemoryStore } from '../../helpers/memory-store.js'

let clock = 1_000_000
const now = (): number => clock
let store: TokenStore

beforeEach(async () => {
  clock = 1_000_000
  store = await openMemoryStore(now)
})
afterEach(async () => store.close())

const flow = { connection: 'crm', method: 'oauth_u2m_shared', tokenUser: null, completer: { user: 'alice@example.com' } } as const

describe('consent flows', () => {
  test('a link is <publicUrl>/connect/<256-bit id>, with its own random state and verifier [flow:random]', async () => {
    const f = await createConsentFlow(store, flow, { publicUrl: 'http://127.0.0.1:8787/', now: clock })
    expect(f.url).toBe(`http://127.0.0.1:8787/connect/${f.flowId}`)
    expect(f.flowId).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const link = await readConsentLink(store, f.flowId)
    expect(link?.state).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(link?.state).not.toBe(f.flowId)
    expect(link?.codeVerifier).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(f.expiresAt - clock).toBe(FLOW_TTL_MS)
  })

  test('single use: concurrent takes, one winner; expired after 10 minutes [flow:single-use]', async () => {
    const f = await createConsentFlow(store, flow, { publicUrl: 'http://x', now: clock })
    const takes = await Promise.all([1, 2, 3].map(() => takeConsentLink(store, f.flowId)))
    expect(takes.filter(Boolean)).toHaveLength(1)
    const g = await createConsentFlow(store, flow, { publicUrl: 'http://x', now: clock })
    clock += FLOW_TTL_MS
    expect(await readConsentLink(store, g.flowId)).toBeUndefined()
  })

  test('a state presented as a link (or a link id as a state) consumes nothing', async () => {
    const f = await createConsentFlow(store, flow, { publicUrl: 'http://x', now: clock })
    const link = await takeConsentLink(store, f.flowId)
    if (!link) throw new Error('no link')
    await putProviderCallback(store, f.flowId, link, { bindingHash: 'a'.repeat(64), now: clock })
    await expect(takeConsentLink(store, link.state)).rejects.toMatchObject({ code: 'FLOW_INVALID' })
    const cb = await takeCallback(store, link.state)
    expect(cb).toMatchObject({ purpose: 'provider-callback', flowId: f.flowId, connection: 'crm', codeVerifier: link.codeVerifier })
    expect(await takeCallback(store, link.state)).toBeUndefined()
  })

  test('waitForOutcome returns the outcome once written, undefined on timeout', async () => {
    const f = await createConsentFlow(store, flow, { publicUrl: 'http://x', now: clock })
    expect(await waitForOutcome(store, f.flowId, { timeoutMs: 30, pollMs: 10 })).toBeUndefined()
    setTimeout(() => void putOutcome(store, f.flowId, { status: 'granted', connection: 'crm', at: clock, refreshToken: true }), 20)
    expect(await waitForOutcome(store, f.flowId, { timeoutMs: 2_000, pollMs: 10 })).toMatchObject({ status: 'granted', refreshToken: true })
  })
})
