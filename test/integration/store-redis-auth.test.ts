/**
 * `store.password`: the Redis AUTH password comes from a secret reference, never from the URL,
 * and is really sent. The machine's Redis has no password, so AUTH with one is refused: calls
 * fail closed with STORE_UNAVAILABLE, and no message carries the password.
 */
import { describe, expect, test } from 'vitest'
import { createBackend } from '../../src/store/backend.js'
import { isAppError } from '../../src/errors.js'
import { Secret } from '../../src/secret.js'
import { loadTestConfig } from '../helpers/config.js'

const REDIS_URL = process.env['KEYWAY_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const PASSWORD = 'sk-CANARY-redis-password'

describe('store.password [secret:never-in-messages]', () => {
  test('is read from a secret reference into the snapshot, not kept in the URL', async () => {
    const { snapshot } = await loadTestConfig('version: 1\nstore: { url: "redis://127.0.0.1:6379", password: { env: REDIS_PW } }\n', { REDIS_PW: PASSWORD })
    expect(snapshot.store.url).toBe('redis://127.0.0.1:6379')
    expect(snapshot.store.password?.reveal()).toBe(PASSWORD)
    expect(JSON.stringify(snapshot.store)).not.toContain(PASSWORD)
  })

  test('is sent as AUTH: a Redis without that password refuses, and calls fail closed without echoing it', async () => {
    const probe = await createBackend(REDIS_URL, { connectTimeoutMs: 1_000 })
    const redisUp = await probe.ping().then(
      () => true,
      () => false,
    )
    await probe.close()
    if (!redisUp && process.env['CI'] !== 'true') return void console.warn('store-redis-auth: no Redis; skipped (fails when CI=true)')
    expect(redisUp).toBe(true)
    const backend = await createBackend(REDIS_URL, { connectTimeoutMs: 1_000, password: new Secret(PASSWORD) })
    try {
      const error = await backend.get('keyway:test:auth').then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isAppError(error, 'STORE_UNAVAILABLE')).toBe(true)
      expect(JSON.stringify({ m: (error as Error).message, d: (error as { detail?: unknown }).detail })).not.toContain(PASSWORD)
    } finally {
      await backend.close()
    }
  })
})
