/**
 * `oauth_u2m_per_user` against a real (memory) token store and the real refresher, with the
 * provider's refresh call stubbed: the token of (connection, caller.user) and nobody else's,
 * consent flows made for the caller (and handed out again while unopened), refresh per user,
 * `invalid_grant` back to consent, store failures never read as "no token", and the bounded wait.
 * Time is injected.
 * @module
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../../src/audit/audit-log.js'
import type { Connection } from '../../../src/config/load.js'
import {
  FLOW_TTL_MS,
  PENDING_LINK_MIN_LEFT_MS,
  pendingFlowPointerId,
  putOutcome,
  readConsentLink,
  startPerUserConsent,
  takeConsentLink,
  waitForPerUserToken,
} from '../../../src/consent/records.js'
import type { Credential } from '../../../src/credentials/credential.js'
import type { TokenSet } from '../../../src/credentials/oauth-client.js'
import { resolvePerUserU2m, type PerUserU2mDeps, type StartConsent } from '../../../src/credentials/oauth-u2m-per-user.js'
import { createRefresher } from '../../../src/credentials/refresh.js'
import { AppError } from '../../../src/errors.js'
import { createCaller } from '../../../src/identity/caller.js'
import { type TokenRecord, type TokenStore } from '../../../src/store/index.js'
import { loadTestConfig } from '../../helpers/config.js'
import { openMemoryStore } from '../../helpers/memory-store.js'

const PUBLIC_URL = 'https://keyway.example.test'
let clock = 1_800_000_000_000
const now = (): number => clock
let store: TokenStore
let connection: Connection
let snapshot: Awaited<ReturnType<typeof loadTestConfig>>['snapshot']

/** What the stubbed provider does on a refresh, and which refresh tokens it was given. */
let refreshWith: (refreshToken: string) => Promise<TokenSet>
let refreshed: string[]
const audit = createMemoryAuditLog()

beforeEach(async () => {
  clock = 1_800_000_000_000
  refreshed = []
  audit.events.length = 0
  refreshWith = async (rt) => ({ accessToken: `fresh-for-${rt}`, tokenType: 'bearer', expiresAt: clock + 3_600_000 })
  store = await openMemoryStore(now)
  snapshot ??= (
    await loadTestConfig(
      `
version: 1
server: { publicUrl: ${PUBLIC_URL} }
store: { url: "memory://", dangerouslyUseEphemeralKey: true }
connections:
  drive:
    host: https://api.example.test
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: oauth_u2m_per_user, tokenEndpoint: https://idp.example.test/token, authorizationEndpoint: https://idp.example.test/auth, clientId: c, clientSecret: { env: S }, scopes: [offline_access] }
`,
      { S: 's' },
    )
  ).snapshot
  const c = snapshot.connections.get('drive')
  if (!c) throw new Error('no connection')
  connection = c
})
afterEach(async () => store.close())

function deps(over: Partial<PerUserU2mDeps> = {}): PerUserU2mDeps {
  return {
    clients: {
      get: async () => ({
        refresh: async (rt: string) => {
          refreshed.push(rt)
          return refreshWith(rt)
        },
      }),
    },
    refresher: createRefresher({ store, now, audit }),
    now,
    startConsent: startConsent(),
    ...over,
  }
}

/** The consent starter a running Keyway passes in (runtime.ts), over this test's store and audit log. */
function startConsent(publicUrl = (): string => PUBLIC_URL, over: { store?: TokenStore } = {}): StartConsent {
  return (c, u, reason) => startPerUserConsent({ store: over.store ?? store, now, publicUrl, audit }, c, u, reason)
}

const caller = (user: string) => createCaller(snapshot, user, 'api_key')
const token = (n: string, over: Partial<TokenRecord> = {}): TokenRecord => ({
  method: 'oauth_u2m_per_user',
  accessToken: `at-${n}`,
  refreshToken: `rt-${n}`,
  tokenType: 'bearer',
  obtainedAt: clock,
  expiresAt: clock + 3_600_000,
  ...over,
})

function linkOf(c: Credential): { url: string; flowId: string } {
  if (c.kind !== 'consent-required') throw new Error(`expected consent-required, got ${c.kind}`)
  return c
}

describe('whose token', () => {
  test('no token: a consent flow made for the caller, its link <publicUrl>/connect/<flowId>, audited [consent:per-user-flow]', async () => {
    const c = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(c.url).toBe(`${PUBLIC_URL}/connect/${c.flowId}`)
    expect(c.flowId).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const link = await readConsentLink(store, c.flowId)
    expect(link).toMatchObject({
      connection: 'drive',
      method: 'oauth_u2m_per_user',
      tokenUser: 'alice@example.com',
      completer: { user: 'alice@example.com' },
      expiresAt: clock + FLOW_TTL_MS,
    })
    expect(audit.events).toEqual([{ type: 'consent.started', user: 'alice@example.com', connection: 'drive' }])
  })

  test('a stored token is sent as the bearer; refreshable only with a refresh token; every secret listed for redaction', async () => {
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, token('a'))
    expect(await resolvePerUserU2m(connection, caller('alice@example.com'), deps())).toEqual({
      kind: 'ready',
      authorization: 'Bearer at-a',
      refreshable: true,
      secrets: ['at-a', 'rt-a', 's'],
    })
    const { refreshToken: _drop, ...noRefresh } = token('b')
    await store.putToken({ connection: 'drive', user: 'bob@example.com' }, noRefresh)
    expect(await resolvePerUserU2m(connection, caller('bob@example.com'), deps())).toEqual({
      kind: 'ready',
      authorization: 'Bearer at-b',
      refreshable: false,
      secrets: ['at-b', 's'],
    })
  })

  // Store keys hash the user id exactly as given: no case folding, trimming or normalisation.
  test.each([
    ['alice@example.com', 'Alice@example.com'],
    ['alice@example.com', 'alice@example.com '],
    ['alice@example.com', 'alice@example.com\u0000'],
    ['alice', 'alice\u0000bob'],
    ['b:c', 'b'],
    ['shared', 'u' + 'a'.repeat(64)],
    ['caf\u00e9@example.com', 'cafe\u0301@example.com'],
    ['drive:alice', 'alice'],
  ])("one user never receives another's token: %j vs %j [credential:per-user-isolation]", async (owner, other) => {
    await store.putToken({ connection: 'drive', user: owner }, token('owner'))
    const theirs = await resolvePerUserU2m(connection, caller(other), deps())
    expect(theirs.kind).toBe('consent-required')
    expect(await resolvePerUserU2m(connection, caller(owner), deps())).toMatchObject({ kind: 'ready', authorization: 'Bearer at-owner' })
    expect(pendingFlowPointerId('drive', owner)).not.toBe(pendingFlowPointerId('drive', other))
    expect(await store.getToken({ connection: 'drive', user: other })).toBeUndefined()
  })
})

describe('consent links', () => {
  test('an unopened link is handed out again; an opened one is not', async () => {
    const first = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    const again = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(again.flowId).toBe(first.flowId)
    expect(audit.events.filter((e) => e.type === 'consent.started')).toHaveLength(1)
    await takeConsentLink(store, first.flowId)
    const fresh = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(fresh.flowId).not.toBe(first.flowId)
  })

  test('a link close to its end is replaced, so nobody gets one that dies during sign-in', async () => {
    const first = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    clock += FLOW_TTL_MS - PENDING_LINK_MIN_LEFT_MS + 1
    const next = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(next.flowId).not.toBe(first.flowId)
  })

  test('each user and connection has its own pending link', async () => {
    const a = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    const b = linkOf(await resolvePerUserU2m(connection, caller('bob@example.com'), deps()))
    expect(a.flowId).not.toBe(b.flowId)
    expect((await readConsentLink(store, b.flowId))?.tokenUser).toBe('bob@example.com')
  })

  test('links follow the live server.publicUrl, trailing slash dropped', async () => {
    const c = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps({ startConsent: startConsent(() => 'https://new.example.test/') })))
    expect(c.url).toBe(`https://new.example.test/connect/${c.flowId}`)
  })
})

describe('refresh per user', () => {
  test("an expired token is renewed with that user's refresh token, once for concurrent calls [refresh:per-user]", async () => {
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, token('a', { expiresAt: clock + 10_000 }))
    await store.putToken({ connection: 'drive', user: 'bob@example.com' }, token('b', { expiresAt: clock + 10_000 }))
    clock += 20_000
    const d = deps()
    const results = await Promise.all([1, 2, 3].map(() => resolvePerUserU2m(connection, caller('alice@example.com'), d)))
    for (const r of results) expect(r).toMatchObject({ kind: 'ready', authorization: 'Bearer fresh-for-rt-a' })
    expect(refreshed).toEqual(['rt-a'])
    expect(await resolvePerUserU2m(connection, caller('bob@example.com'), d)).toMatchObject({ authorization: 'Bearer fresh-for-rt-b' })
    expect(refreshed).toEqual(['rt-a', 'rt-b'])
    expect((await store.getToken({ connection: 'drive', user: 'alice@example.com' }))?.refreshToken).toBe('rt-a')
  })

  test('invalid_grant deletes the record and asks the user to consent again [refresh:per-user-invalid-grant]', async () => {
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, token('a', { expiresAt: clock + 10_000 }))
    clock += 20_000
    refreshWith = async () => {
      throw new AppError('REAUTHORIZATION_REQUIRED', 'the provider refused the stored refresh token (invalid_grant)', { detail: { reason: 'invalid_grant' } })
    }
    const c = linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(await store.getToken({ connection: 'drive', user: 'alice@example.com' })).toBeUndefined()
    expect((await readConsentLink(store, c.flowId))?.tokenUser).toBe('alice@example.com')
    expect(audit.events).toContainEqual({
      type: 'credential.refresh_failed',
      connection: 'drive',
      user: 'alice@example.com',
      authMethod: 'oauth_u2m_per_user',
      reason: 'invalid_grant',
    })
    expect(audit.events).toContainEqual({ type: 'consent.started', user: 'alice@example.com', connection: 'drive', reason: 'invalid_grant' })
  })

  test('no refresh token: served until it expires, then consent again (the record stays for keyway credentials)', async () => {
    const { refreshToken: _drop, ...noRefresh } = token('a', { expiresAt: clock + 10_000 })
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, noRefresh)
    clock += 9_000 // inside the skew window, still valid
    expect(await resolvePerUserU2m(connection, caller('alice@example.com'), deps())).toMatchObject({ kind: 'ready', refreshable: false })
    clock += 2_000
    linkOf(await resolvePerUserU2m(connection, caller('alice@example.com'), deps()))
    expect(refreshed).toEqual([])
    expect(audit.events).toContainEqual({ type: 'consent.started', user: 'alice@example.com', connection: 'drive', reason: 'no-refresh-token' })
  })

  test('a transient provider failure with an expired token is an error, not a consent request', async () => {
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, token('a', { expiresAt: clock + 10_000 }))
    clock += 20_000
    refreshWith = async () => {
      throw new AppError('CREDENTIAL_UNAVAILABLE', 'the token endpoint answered 503')
    }
    await expect(resolvePerUserU2m(connection, caller('alice@example.com'), deps())).rejects.toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE' })
    expect(await store.getToken({ connection: 'drive', user: 'alice@example.com' })).toBeDefined()
  })

  test('a failing store is STORE_UNAVAILABLE, never "no token" (no consent link) [store:fail-closed]', async () => {
    const failing: TokenStore = {
      ...store,
      getToken: async () => {
        throw new AppError('STORE_UNAVAILABLE', 'store did not answer')
      },
    }
    const d = deps({ startConsent: startConsent(undefined, { store: failing }), refresher: createRefresher({ store: failing, now }) })
    await expect(resolvePerUserU2m(connection, caller('alice@example.com'), d)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
    expect(audit.events.filter((e) => e.type === 'consent.started')).toEqual([])
  })
})

describe('waitForPerUserToken', () => {
  const target = { connection: 'drive', user: 'alice@example.com', flowId: 'f'.repeat(43) }

  test('granted as soon as a usable token of this user lands', async () => {
    setTimeout(() => void store.putToken({ connection: 'drive', user: 'alice@example.com' }, token('a')), 30)
    expect(await waitForPerUserToken(store, target, { timeoutMs: 2_000, pollMs: 10, now })).toEqual({ kind: 'granted' })
  })

  test("another user's token does not count", async () => {
    await store.putToken({ connection: 'drive', user: 'bob@example.com' }, token('b'))
    expect(await waitForPerUserToken(store, target, { timeoutMs: 60, pollMs: 10, now })).toEqual({ kind: 'timeout' })
  })

  test('a failed flow ends the wait with its reason', async () => {
    await putOutcome(store, target.flowId, { status: 'failed', connection: 'drive', at: clock, reason: 'access_denied' })
    expect(await waitForPerUserToken(store, target, { timeoutMs: 2_000, pollMs: 10, now })).toEqual({ kind: 'failed', reason: 'access_denied' })
  })

  test('an abort ends the wait', async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 20)
    const started = Date.now()
    expect(await waitForPerUserToken(store, target, { timeoutMs: 5_000, pollMs: 1_000, signal: ac.signal, now })).toEqual({ kind: 'timeout' })
    expect(Date.now() - started).toBeLessThan(1_000)
  })
})
