/**
 * `store.url: redis+cluster://…` against a real three-master Redis Cluster started for this file
 * (test/helpers/redis-topology.ts): the token-store contract over Cluster, listing that scans every
 * master (the keys of one prefix are spread over all three), and token writes that do not wait for
 * replicas the masters do not have.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { afterAll, describe, expect, test } from 'vitest'
import { Secret } from '../../src/secret.js'
import { createBackend } from '../../src/store/backend.js'
import { createKeyring } from '../../src/store/crypto.js'
import { tokenKey } from '../../src/store/keys.js'
import { createTokenStore } from '../../src/store/token-store.js'
import { describeTokenStoreContract } from '../contract/token-store.contract.js'
import { expectEveryCallFailsFast, redisCli, startCluster } from '../helpers/redis-topology.js'

const cluster = await startCluster()
afterAll(() => cluster.close())

describeTokenStoreContract('redis cluster', async () => ({
  backend: await createBackend(cluster.url),
  openPeer: () => createBackend(cluster.url),
}))

describe('redis cluster specifics', () => {
  test('no Cluster node answers: every call fails fast as STORE_UNAVAILABLE', async () => {
    const backend = await createBackend('redis+cluster://127.0.0.1:1,127.0.0.1:2')
    try {
      await expectEveryCallFailsFast(backend, 2_500)
    } finally {
      await backend.close()
    }
  })

  test('keys() lists the keys of every master, and token writes do not wait without replicas', async () => {
    const warnings: string[] = []
    const keyring = createKeyring({ current: new Secret(randomBytes(32).toString('base64')), previous: [], dangerouslyUseEphemeralKey: false, warn: () => {} })
    const ns = `kwtest-${randomBytes(6).toString('hex')}`
    const store = createTokenStore(await createBackend(cluster.url, { warn: (m) => warnings.push(m) }), keyring, { namespace: ns })
    try {
      const users = Array.from({ length: 30 }, (_, i) => `user${i}@example.com`)
      const started = performance.now()
      for (const user of users)
        await store.putToken({ connection: 'spread', user }, { method: 'oauth_u2m_per_user', accessToken: `at-${user}`, tokenType: 'Bearer', obtainedAt: 1 })
      const took = performance.now() - started
      expect(took, `30 writes took ${Math.round(took)} ms`).toBeLessThan(3_000) // no WAIT timeouts
      expect(warnings).toEqual([])

      // Where the keys live: every master holds some of them.
      const perMaster = await Promise.all(
        cluster.masters.map(async (m) => Number(await redisCli(m.port, 'EVAL', `return #redis.call('KEYS', ARGV[1])`, '0', `${ns}:*`))),
      )
      expect(perMaster.filter((n) => n > 0)).toHaveLength(3)
      expect(perMaster.reduce((a, b) => a + b, 0)).toBe(30)

      const listed: string[] = []
      for await (const { ref } of store.listTokens({ connection: 'spread' })) listed.push(String(ref.user))
      expect(listed.sort()).toEqual([...users].sort())
      expect(tokenKey(ns, { connection: 'spread', user: users[0] ?? '' })).toMatch(new RegExp(`^${ns}:tok:spread:u[0-9a-f]{64}$`))
    } finally {
      await store.close()
    }
  })
})
