/**
 * The shared refresher against a real (memory) token store: skew, single flight, the store lock
 * across two "replicas", re-check after the lock, compare-and-set save before use, fatal versus
 * transient. Time is injected; nothing sleeps except where the test itself stalls a refresh.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../../src/audit/audit-log.js'
import {
  createRefresher,
  FAILED_REFRESH_BACKOFF_MS,
  isFresh,
  isUsable,
  MAX_REFRESH_SKEW_MS,
  refreshSkewMs,
  type FreshTokenRequest,
} from '../../../src/credentials/refresh.js'
import { AppError } from '../../../src/errors.js'
import { Secret } from '../../../src/secret.js'
import { openTokenStore, type TokenRecord, type TokenStore } from '../../../src/store/index.js'

const ref = { connection: 'svc', user: null } as const
let clock = 1_000_000
const now = (): number => clock
let store: TokenStore

beforeEach(async () => {
  clock = 1_000_000
  store = await openTokenStore(
    { url: 'memory://', encryptionKey: new Secret(randomBytes(32).toString('base64')), encryptionKeys: [], dangerouslyUseEphemeralKey: false },
    { warn: () => {}, now },
  )
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
    expect((await r.getFreshToken(request(obtain))).accessToken).toBe('at-101')
    expect(calls).toBe(1)
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
    const r = createRefresher({ store, now })
    await store.putToken(ref, token(1))
    let calls = 0
    const failing = async (): Promise<TokenRecord> => {
      calls++
      throw new AppError('CREDENTIAL_UNAVAILABLE', 'connection "svc": the provider did not answer', { detail: { reason: 'timeout', transient: true } })
    }
    clock += 600_000 - 10_000 // inside the skew window, not expired
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    expect(calls).toBe(1) // backoff: the second call did not ask again
    clock += FAILED_REFRESH_BACKOFF_MS
    expect((await r.getFreshToken(request(failing))).accessToken).toBe('at-1')
    expect(calls).toBe(2)
    expect((await store.getToken(ref))?.accessToken).toBe('at-1')
    clock += 10_000 // expired now
    await expect(r.getFreshToken(request(failing))).rejects.toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE', message: 'connection "svc": the provider did not answer' })
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
    await expect(
      r.getFreshToken(request(async () => token(2), { missing: () => new AppError('NOT_AUTHORIZED', 'not signed in') })),
    ).rejects.toMatchObject({ code: 'NOT_AUTHORIZED' })
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
