/**
 * The shared refresher against a real (memory) token store: skew, single flight, the store lock
 * across two "replicas", re-check after the lock, compare-and-set save before use, fatal versus
 * transient, refresh ahead of expiry, the shared back-off and forced-refresh cooldown, a save the
 * store does not take at first, a waiter's honest error. Time is injected; nothing sleeps except
 * where the test itself stalls a refresh or the store.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../../src/audit/audit-log.js'
import { createRefresher, isFresh, isUsable, MAX_REFRESH_SKEW_MS, refreshSkewMs, type FreshTokenRequest } from '../../../src/credentials/refresh.js'
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, backoffDelayMs, createRefreshState, FORCED_REFRESH_COOLDOWN_MS } from '../../../src/credentials/refresh-state.js'
import { tokenExpiresAt } from '../../../src/credentials/token-record.js'
import { AppError, externalReason } from '../../../src/errors.js'
import { type TokenRecord, type TokenStore } from '../../../src/store/index.js'
import { openMemoryStore } from '../../helpers/memory-store.js'

const ref = { connection: 'svc', user: null } as const
let clock = 1_000_000
const now = (): number => clock
let store: TokenStore

beforeEach(async () => {
  clock = 1_000_000
  store = await openMemoryStore(now)
})
afterEach(async () => store.close())

function token(n: number, over: Partial<TokenRecord> = {}): TokenRecord {
  return { method: 'oauth_m2m', accessToken: `at-${n}`, tokenType: 'bearer', obtainedAt: clock, expiresAt: clock + 600_000, ...over }
}

function request(obtain: FreshTokenRequest['obtain'], over: Partial<FreshTokenRequest> = {}): FreshTokenRequest {
  return { ref, method: 'oauth_m2m', obtain, ...over }
}

describe('skew', () => {
  test('a quarter of the lifetime, at most a minute', () => {
    expect(refreshSkewMs(token(1, { obtainedAt: 0, expiresAt: 3_600_000 }))).toBe(MAX_REFRESH_SKEW_MS)
    expect(refreshSkewMs(token(1, { obtainedAt: 0, expiresAt: 4_000 }))).toBe(1_000)
    expect(refreshSkewMs(token(1, { obtainedAt: 0, lastRefreshAt: 10_000, expiresAt: 14_000 }))).toBe(1_000)
    expect(refreshSkewMs({ method: 'oauth_m2m', accessToken: 'x', tokenType: 'bearer', obtainedAt: 0 })).toBe(0)
  })

  test('fresh until the skew window, usable until expiry', () => {
    const t = token(1, { obtainedAt: 0, expiresAt: 4_000 })
    expect(isFresh(t, 2_999)).toBe(true)
    expect(isFresh(t, 3_000)).toBe(false)
    expect(isUsable(t, 3_999)).toBe(true)
    expect(isUsable(t, 4_000)).toBe(false)
  })
})

describe('getFreshToken', () => {
  test('obtains when nothing is stored, then serves the cached token without asking again', async () => {
    const audit = createMemoryAuditLog()
    const r = createRefresher({ store, now, audit })
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => token(++calls)
    expect((await r.getFreshToken(request(obtain))).accessToken).toBe('at-1')
    expect((await r.getFreshToken(request(obtain))).accessToken).toBe('at-1')
    expect(calls).toBe(1)
    expect((await store.getToken(ref))?.accessToken).toBe('at-1')
    expect(audit.events.map((e) => e.type)).toEqual(['credential.obtained'])
  })

  test('refreshes inside the skew window [refresh:skew]', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => token(100 + ++calls)
    clock += 600_000 - MAX_REFRESH_SKEW_MS + 1
    // Still valid: the caller gets it at once, and the refresh runs ahead in the background.
    expect((await r.getFreshToken(request(obtain))).accessToken).toBe('at-1')
    await r.idle()
    expect(calls).toBe(1)
    expect((await store.getToken(ref))?.accessToken).toBe('at-101')
    expect((await r.getFreshToken(request(obtain))).accessToken).toBe('at-101')
    expect(calls).toBe(1)
  })

  test('a caller with a usable token never waits for a refresh: the refresh runs ahead, once per process', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    clock += 600_000 - 1_000 // inside the window, one second left
    let release!: () => void
    const gate = new Promise<void>((res) => (release = res))
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => {
      calls++
      await gate
      return token(2)
    }
    const got = await Promise.all(Array.from({ length: 10 }, () => r.getFreshToken(request(obtain))))
    expect(got.map((g) => g.accessToken)).toEqual(Array(10).fill('at-1'))
    await new Promise((res) => setTimeout(res, 20))
    expect(calls).toBe(1)
    release()
    await r.idle()
    expect((await store.getToken(ref))?.accessToken).toBe('at-2')
  })

  test('20 concurrent callers at expiry cause one refresh [refresh:single-flight]', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    clock += 600_000
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => {
      calls++
      await new Promise((res) => setTimeout(res, 20))
      return token(2)
    }
    const got = await Promise.all(Array.from({ length: 20 }, () => r.getFreshToken(request(obtain))))
    expect(calls).toBe(1)
    expect(new Set(got.map((g) => g.accessToken))).toEqual(new Set(['at-2']))
  })

  test('two replicas on one store: the lock and the re-check make one refresh [refresh:lock]', async () => {
    const a = createRefresher({ store, now })
    const b = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    clock += 600_000
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => {
      calls++
      await new Promise((res) => setTimeout(res, 50))
      return token(2)
    }
    const [x, y] = await Promise.all([a.getFreshToken(request(obtain)), b.getFreshToken(request(obtain))])
    expect(calls).toBe(1)
    expect([x.accessToken, y.accessToken]).toEqual(['at-2', 'at-2'])
  })

  test('the new record (rotated refresh token) is in the store before the caller gets it [refresh:save-before-use]', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared', refreshToken: 'rt-1' }))
    clock += 600_000
    const got = await r.getFreshToken(
      request(async (cur) => ({ ...token(2), method: 'oauth_u2m_shared', refreshToken: `${cur?.refreshToken}-rotated` }), { method: 'oauth_u2m_shared' }),
    )
    expect(got.refreshToken).toBe('rt-1-rotated')
    expect((await store.getToken(ref))?.refreshToken).toBe('rt-1-rotated')
  })

  test('forceRefresh ignores a valid cached token; concurrent forced calls share one refresh', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => {
      calls++
      await new Promise((res) => setTimeout(res, 20))
      return token(10 + calls)
    }
    const got = await Promise.all([1, 2, 3].map(() => r.getFreshToken(request(obtain, { forceRefresh: true }))))
    expect(calls).toBe(1)
    expect(got.map((g) => g.accessToken)).toEqual(['at-11', 'at-11', 'at-11'])
  })

  test('fatal (invalid_grant): record deleted, caller-specific error [refresh:fatal]', async () => {
    const audit = createMemoryAuditLog()
    const r = createRefresher({ store, now, audit })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared', refreshToken: 'rt' }))
    clock += 600_000
    const err = await r
      .getFreshToken(
        request(
          async () => {
            throw new AppError('REAUTHORIZATION_REQUIRED', 'refused', { detail: { reason: 'invalid_grant' } })
          },
          { method: 'oauth_u2m_shared', fatal: () => new AppError('REAUTHORIZATION_REQUIRED', 'owner must run keyway authorize svc') },
        ),
      )
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'REAUTHORIZATION_REQUIRED', message: 'owner must run keyway authorize svc' })
    expect(await store.getToken(ref)).toBeUndefined()
    expect(audit.events.at(-1)).toMatchObject({ type: 'credential.refresh_failed', reason: 'invalid_grant' })
  })

  test('transient failure with a still-valid token: kept and served, no retry storm, then a clear error [refresh:transient]', async () => {
    const r = createRefresher({ store, now, state: createRefreshState(store, now, () => 0.5) })
    await store.putToken(ref, token(1))
    let calls = 0
    const failing = async (): Promise<TokenRecord> => {
      calls++
      throw new AppError('CREDENTIAL_UNAVAILABLE', 'connection "svc": the provider did not answer', { detail: { reason: 'timeout', transient: true } })
    }
    clock += 600_000 - 10_000 // inside the skew window, not expired
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    await r.idle()
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    await r.idle()
    expect(calls).toBe(1) // back-off: the second call did not ask again
    clock += BACKOFF_BASE_MS
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    await r.idle()
    expect(calls).toBe(2)
    expect((await store.getToken(ref))?.accessToken).toBe('at-1')
    clock += 10_000 // expired now; the back-off (2 s after the second failure) is over
    await expect(r.getFreshToken(request(failing))).rejects.toMatchObject({
      code: 'CREDENTIAL_UNAVAILABLE',
      message: 'connection "svc": the provider did not answer; retry after 4 s',
      detail: { retryAfter: 4 },
    })
    expect(calls).toBe(3)
    expect(await store.getToken(ref)).toBeDefined()
  })

  test('missing: the method-specific error, without asking anyone', async () => {
    const r = createRefresher({ store, now })
    let calls = 0
    await expect(
      r.getFreshToken(request(async () => token(++calls), { missing: () => new AppError('NOT_AUTHORIZED', 'not signed in') })),
    ).rejects.toMatchObject({ code: 'NOT_AUTHORIZED' })
    expect(calls).toBe(0)
  })

  test('a record written by another auth method counts as none', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared' }))
    await expect(r.getFreshToken(request(async () => token(2), { missing: () => new AppError('NOT_AUTHORIZED', 'not signed in') }))).rejects.toMatchObject({
      code: 'NOT_AUTHORIZED',
    })
    expect((await r.getFreshToken(request(async () => token(2)))).accessToken).toBe('at-2')
  })

  test('a sign-in written during a refresh wins over the refresh result (CAS)', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    clock += 600_000
    const got = await r.getFreshToken(
      request(async () => {
        await store.putToken(ref, token(50)) // written without the lock, e.g. a new sign-in
        return token(2)
      }),
    )
    expect(got.accessToken).toBe('at-50')
    expect((await store.getToken(ref))?.accessToken).toBe('at-50')
  })

  test('a store that fails is STORE_UNAVAILABLE, never "no token" [store:fail-closed]', async () => {
    const r = createRefresher({ store, now })
    await store.close()
    await expect(r.getFreshToken(request(async () => token(1)))).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
  })
})

describe('back-off schedule and expiry (pure)', () => {
  test('1 s, 2 s, 4 s … capped at 30 s, each ±20 % and never above the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => backoffDelayMs(n, 0.5))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
    expect(backoffDelayMs(1, 0)).toBe(800)
    expect(backoffDelayMs(1, 0.999_999)).toBe(1_200)
    expect(backoffDelayMs(6, 0.999_999)).toBe(BACKOFF_MAX_MS)
    expect(backoffDelayMs(6, 0)).toBe(24_000)
    expect(backoffDelayMs(0, 0.5)).toBe(BACKOFF_BASE_MS)
  })

  const jwt = (payload: unknown): string =>
    `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`

  test('expiry: expires_in from the send, or the JWT exp when earlier; junk exp is ignored', () => {
    const sentAt = 1_700_000_000_000
    expect(tokenExpiresAt('opaque-token', sentAt, 600)).toBe(sentAt + 600_000)
    expect(tokenExpiresAt(jwt({ exp: sentAt / 1000 + 30 }), sentAt, 600)).toBe(sentAt + 30_000)
    expect(tokenExpiresAt(jwt({ exp: sentAt / 1000 + 900 }), sentAt, 600)).toBe(sentAt + 600_000)
    expect(tokenExpiresAt(jwt({ exp: sentAt / 1000 + 30 }), sentAt, undefined)).toBe(sentAt + 30_000)
    expect(tokenExpiresAt('opaque-token', sentAt, undefined)).toBeUndefined()
    for (const junk of [jwt({ exp: 'soon' }), jwt({ exp: sentAt / 1000 - 5 }), jwt({}), 'a.b.c', 'a.%%%.c', jwt([1, 2])])
      expect(tokenExpiresAt(junk, sentAt, 600), junk).toBe(sentAt + 600_000)
  })
})

describe('shared back-off after failed token requests', () => {
  const failing = (counter: { n: number }) => async (): Promise<TokenRecord> => {
    counter.n++
    throw new AppError('CREDENTIAL_UNAVAILABLE', 'connection "svc": the provider answered the token request with server_error (status 500)', {
      detail: { reason: externalReason('server_error'), transient: true },
    })
  }

  test('one replica fails, the other makes no token request and fails fast with a retry-after; a success clears it', async () => {
    const state = createRefreshState(store, now, () => 0.5)
    const a = createRefresher({ store, now, state })
    const b = createRefresher({ store, now, state })
    await store.putToken(ref, token(1))
    clock += 600_000 // expired
    const asked = { n: 0 }
    await expect(a.getFreshToken(request(failing(asked)))).rejects.toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE', detail: { retryAfter: 1 } })
    const err = await b.getFreshToken(request(failing(asked))).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE', detail: { reason: 'backoff', retryAfter: 1, failures: 1 } })
    expect((err as Error).message).toBe(
      'connection "svc": the provider answered the token request with server_error (status 500); no new token request for 1 s after 1 failed in a row: retry after 1 s',
    )
    expect(asked.n).toBe(1)
    clock += 1_000
    await expect(b.getFreshToken(request(failing(asked)))).rejects.toMatchObject({ detail: { retryAfter: 2 } })
    expect(asked.n).toBe(2)
    await expect(a.getFreshToken(request(failing(asked)))).rejects.toMatchObject({ detail: { reason: 'backoff', failures: 2 } })
    expect(asked.n).toBe(2)
    clock += 2_000
    expect((await a.getFreshToken(request(async () => token(2)))).accessToken).toBe('at-2')
    await a.idle() // the back-off is cleared right after the caller got its token
    expect(await state.backoff(ref)).toBeUndefined()
  })

  test('invalid_grant is not a back-off: the record is deleted and nothing rests [refresh:fatal]', async () => {
    const state = createRefreshState(store, now)
    const r = createRefresher({ store, now, state })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared', refreshToken: 'rt' }))
    clock += 600_000
    const fatal = async (): Promise<TokenRecord> => {
      throw new AppError('REAUTHORIZATION_REQUIRED', 'refused', { detail: { reason: 'invalid_grant' } })
    }
    await expect(r.getFreshToken(request(fatal, { method: 'oauth_u2m_shared' }))).rejects.toMatchObject({ code: 'REAUTHORIZATION_REQUIRED' })
    expect(await state.backoff(ref)).toBeUndefined()
  })
})

describe('forced refresh after an upstream 401 [refresh:401-retry]', () => {
  test('one forced refresh per cooldown across replicas; within it the same token comes back', async () => {
    const a = createRefresher({ store, now })
    const b = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => token(10 + ++calls)
    expect((await a.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-1' }))).accessToken).toBe('at-11')
    // The upstream refuses the new token too: within the cooldown no replica asks again.
    expect((await b.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-11' }))).accessToken).toBe('at-11')
    expect((await a.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-11' }))).accessToken).toBe('at-11')
    expect(calls).toBe(1)
    clock += FORCED_REFRESH_COOLDOWN_MS
    expect((await b.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-11' }))).accessToken).toBe('at-12')
    expect(calls).toBe(2)
  })

  test('a token replaced since the refused one was read is used as it is: no second refresh, no cooldown spent', async () => {
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(2))
    let calls = 0
    const obtain = async (): Promise<TokenRecord> => token(10 + ++calls)
    expect((await r.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-1' }))).accessToken).toBe('at-2')
    expect(calls).toBe(0)
    expect((await r.getFreshToken(request(obtain, { forceRefresh: true, rejected: 'at-2' }))).accessToken).toBe('at-11')
    expect(calls).toBe(1)
  })
})

describe('saving a rotated token when the store fails', () => {
  const storeDown = (): AppError => new AppError('STORE_UNAVAILABLE', 'token store (memory) failed during compareAndSwap')

  test('the save is retried until it lands; meanwhile this replica serves the new token, never the redeemed one [refresh:rotation]', async () => {
    let failures = 4
    const flaky: TokenStore = {
      ...store,
      replaceToken: async (...args) => {
        if (failures > 0) {
          failures--
          throw storeDown()
        }
        return store.replaceToken(...args)
      },
    }
    const audit = createMemoryAuditLog()
    const r = createRefresher({ store: flaky, now, audit })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared', refreshToken: 'rt-1' }))
    clock += 600_000
    const redeemed: string[] = []
    const obtain = async (cur: TokenRecord | undefined): Promise<TokenRecord> => {
      redeemed.push(cur?.refreshToken ?? '-')
      return { ...token(2), method: 'oauth_u2m_shared', refreshToken: 'rt-2', expiresAt: clock + 600_000 }
    }
    const req = request(obtain, { method: 'oauth_u2m_shared' })
    const started = Date.now()
    expect((await r.getFreshToken(req)).refreshToken).toBe('rt-2')
    expect(Date.now() - started).toBeLessThan(1_500) // answered after the caller's short wait, not after the save
    expect((await store.getToken(ref))?.refreshToken).toBe('rt-1') // not saved yet
    expect((await r.getFreshToken(req)).refreshToken).toBe('rt-2') // served from memory
    await r.idle()
    expect(failures).toBe(0)
    expect((await store.getToken(ref))?.refreshToken).toBe('rt-2')
    expect(redeemed).toEqual(['rt-1'])
    expect(audit.events.map((e) => e.type)).toEqual(['credential.refreshed'])
  })

  test('a save that landed but whose answer was lost counts as saved', async () => {
    let lost = true
    const flaky: TokenStore = {
      ...store,
      replaceToken: async (...args) => {
        const ok = await store.replaceToken(...args)
        if (lost) {
          lost = false
          throw storeDown()
        }
        return ok
      },
    }
    const audit = createMemoryAuditLog()
    const r = createRefresher({ store: flaky, now, audit })
    await store.putToken(ref, token(1, { method: 'oauth_u2m_shared', refreshToken: 'rt-1' }))
    clock += 600_000
    const got = await r.getFreshToken(request(async () => ({ ...token(2), method: 'oauth_u2m_shared', refreshToken: 'rt-2' }), { method: 'oauth_u2m_shared' }))
    await r.idle()
    expect(got.refreshToken).toBe('rt-2')
    expect((await store.getToken(ref))?.refreshToken).toBe('rt-2')
    expect(audit.events.map((e) => e.type)).toEqual(['credential.refreshed'])
  })
})

describe('waiting for another holder', () => {
  test('a waiter whose holder is still waiting for the token endpoint is told so, not "lock timeout"', async () => {
    const a = createRefresher({ store, now })
    const b = createRefresher({ store, now, waitMs: 300 })
    await store.putToken(ref, token(1))
    clock += 600_000
    let release!: () => void
    const gate = new Promise<void>((res) => (release = res))
    const holder = a.getFreshToken(
      request(async () => {
        await gate
        return token(2)
      }),
    )
    await new Promise((res) => setTimeout(res, 20))
    const err = await b.getFreshToken(request(async () => token(3))).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE', detail: { reason: 'token-endpoint-slow' } })
    expect((err as Error).message).toMatch(/^connection "svc": the token endpoint has not answered for \d+ s/)
    release()
    expect((await holder).accessToken).toBe('at-2')
  })
})
