/**
 * `store.url: redis+sentinel://…` against a real primary, replica and three Sentinels started for
 * this file (test/helpers/redis-topology.ts): the token-store contract over Sentinel, the
 * replication acknowledgement after token writes (`WAIT 1`, proven with a stopped replica), and
 * the failover drill of issue 11: a listening Keyway with an `oauth_m2m` connection serves calls
 * continuously while the primary is SIGKILLed; calls resume once a Sentinel promotes the replica,
 * the token written before the kill is read back from the new primary, and the provider is asked
 * for a token exactly once. Runs last in the file because it kills the primary.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, describe, expect, test, vi } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/audit-log.js'
import { createMemoryLogger } from '../../src/log.js'
import { Secret } from '../../src/secret.js'
import { startHttp } from '../../src/start.js'
import { createBackend } from '../../src/store/backend.js'
import { createKeyring } from '../../src/store/crypto.js'
import { tokenKey } from '../../src/store/keys.js'
import { createTokenStore, type TokenRecord } from '../../src/store/token-store.js'
import { describeTokenStoreContract } from '../contract/token-store.contract.js'
import { apiKeyLines, loadTestConfig, TEST_KEYS } from '../helpers/config.js'
import { connectClient, textOf } from '../helpers/mcp-clients.js'
import { expectEveryCallFailsFast, MASTER_NAME, redisCli, startSentinelTopology, waitUntil } from '../helpers/redis-topology.js'
import { startTokenEndpoint } from '../helpers/start-token-endpoint.js'
import { startUpstream } from '../helpers/start-upstream.js'

const topo = await startSentinelTopology()
afterAll(() => topo.close())

const KEY = randomBytes(32).toString('base64')
const keyring = createKeyring({ current: new Secret(KEY), previous: [], dangerouslyUseEphemeralKey: false, warn: () => {} })
const record = (n: number): TokenRecord => ({
  method: 'oauth_u2m_per_user',
  accessToken: `canary-at-${n}`,
  refreshToken: `canary-rt-${n}`,
  tokenType: 'Bearer',
  obtainedAt: n,
})

test('no Sentinel answers: every call fails fast as STORE_UNAVAILABLE, and the client library prints nothing to stdout', async () => {
  const printed = vi.spyOn(console, 'log')
  const backend = await createBackend('redis+sentinel://127.0.0.1:1,127.0.0.1:2/kwmaster')
  try {
    await expectEveryCallFailsFast(backend, 2_500)
    expect(printed).not.toHaveBeenCalled()
  } finally {
    printed.mockRestore()
    await backend.close()
  }
})

describeTokenStoreContract('redis sentinel', async () => ({
  backend: await createBackend(topo.url),
  openPeer: () => createBackend(topo.url),
}))

describe('token writes wait for the replica (WAIT 1)', () => {
  const ns = `kwtest-${randomBytes(6).toString('hex')}`
  const ref = { connection: 'wait', user: 'kim@example.com' }
  const key = tokenKey(ns, ref)
  const onReplica = (): Promise<string> => redisCli(topo.replica.port, 'GET', key)
  const onPrimary = (): Promise<string> => redisCli(topo.primary.port, 'GET', key)
  /** Stops the replica (SIGSTOP) for `ms`, so nothing it should acknowledge can be acknowledged before then. */
  const stopReplicaFor = (ms: number): Promise<void> => {
    topo.replica.child.kill('SIGSTOP')
    return sleep(ms).then(() => void topo.replica.child.kill('SIGCONT'))
  }

  test('putToken and replaceToken return only once the replica holds the write [store:replicated]', async () => {
    const warnings: string[] = []
    const store = createTokenStore(await createBackend(topo.url, { warn: (m) => warnings.push(m) }), keyring, { namespace: ns })
    try {
      await store.putToken(ref, record(1)) // connects and counts the replica
      expect(await onReplica()).toBe(await onPrimary())

      let resumed = stopReplicaFor(400)
      let started = performance.now()
      await store.putToken(ref, record(2))
      let took = performance.now() - started
      await resumed
      expect(took, `putToken returned after ${Math.round(took)} ms, before the stopped replica could acknowledge`).toBeGreaterThanOrEqual(350)
      expect(await onReplica()).toBe(await onPrimary())

      resumed = stopReplicaFor(400)
      started = performance.now()
      expect(await store.replaceToken(ref, record(2), record(3))).toBe(true)
      took = performance.now() - started
      await resumed
      expect(took, `replaceToken returned after ${Math.round(took)} ms`).toBeGreaterThanOrEqual(350)
      expect(await onReplica()).toBe(await onPrimary())
      expect(await store.getToken(ref)).toEqual(record(3))
      expect(warnings).toEqual([])
    } finally {
      await store.close()
    }
  })

  test('a replica that does not acknowledge in time: the write stands on the primary and a warning says so, without secrets', async () => {
    const warnings: string[] = []
    const store = createTokenStore(await createBackend(topo.url, { warn: (m) => warnings.push(m) }), keyring, { namespace: ns })
    try {
      await store.putToken(ref, record(4))
      const resumed = stopReplicaFor(2_500)
      const started = performance.now()
      await store.putToken(ref, record(5))
      const took = performance.now() - started
      expect(await store.getToken(ref)).toEqual(record(5))
      await resumed
      expect(took, `took ${Math.round(took)} ms`).toBeGreaterThanOrEqual(900) // the WAIT timeout (1 s)
      expect(took).toBeLessThan(2_400) // never blocked until the replica came back
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatch(/no replica acknowledged a token write within 1000 ms/)
      expect(warnings.join(' ')).not.toMatch(/canary/)
    } finally {
      await store.close()
    }
    // The drill below needs a healthy replica that every Sentinel sees as up again.
    await waitUntil('replica caught up', async () => (await onReplica()) === (await onPrimary()))
    for (const s of topo.sentinels) {
      await waitUntil(`sentinel ${s.port} sees the replica up`, async () => {
        const out = await redisCli(s.port, 'SENTINEL', 'REPLICAS', MASTER_NAME)
        return out.includes(String(topo.replica.port)) && !out.includes('s_down') && !out.includes('disconnected')
      })
    }
  }, 20_000)
})

describe('Sentinel failover under load', () => {
  test('SIGKILL the primary: calls resume after promotion, the token survives, one token request [store:failover]', async () => {
    const te = await startTokenEndpoint()
    const upstream = await startUpstream()
    const log = createMemoryLogger()
    const { snapshot } = await loadTestConfig(
      `
version: 1
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "${topo.url}", encryptionKey: { env: KEYWAY_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true, timeoutMs: 5000 }
connections:
  crm:
    host: ${upstream.origin}
    isMcpConnection: true
    owner: { user: bob@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: "${te.tokenUrl}", clientId: drill, clientSecret: { env: DRILL_SECRET }, scopes: [api:read] }
`,
      { KEYWAY_KEY: KEY, DRILL_SECRET: 'drill-secret-0123456789' },
    )
    const keyway = await startHttp(snapshot, { port: 0, log, audit: createMemoryAuditLog() })
    const bob = await connectClient('modern', `${keyway.http?.url}/mcp`, { bearer: TEST_KEYS.bob })
    try {
      const first = await bob.callTool('crm', { method: 'GET', path: '/things' })
      expect(first.isError, textOf(first)).toBeFalsy()
      expect(te.requests).toHaveLength(1)
      const bearer = String(upstream.last()?.headers.authorization)

      // The primary dies 500 ms in.
      const outcomes: { at: number; ok: boolean; text: string }[] = []
      const started = performance.now()
      let killedAt = Number.POSITIVE_INFINITY
      let promotedAt = Number.POSITIVE_INFINITY
      const killer = sleep(500).then(async () => {
        killedAt = performance.now() - started
        await topo.primary.kill()
        await waitUntil('a Sentinel promotes the replica', async () => (await topo.currentPrimaryPort()) === topo.replica.port, 20_000)
        promotedAt = performance.now() - started
      })
      const okSince = (t: number): number => outcomes.filter((o) => o.ok && o.at > t).length
      const caller = async (): Promise<void> => {
        while (performance.now() - started < 25_000 && !(okSince(promotedAt) >= 30)) {
          const r = await bob.callTool('crm', { method: 'GET', path: '/things' })
          outcomes.push({ at: performance.now() - started, ok: r.isError !== true, text: textOf(r) })
          await sleep(5)
        }
      }
      // Three callers at once, each back to back.
      await Promise.all([caller(), caller(), caller(), killer])

      const failures = outcomes.filter((o) => !o.ok)
      const successes = outcomes.filter((o) => o.ok)
      let gap = 0
      for (let i = 1; i < successes.length; i++) gap = Math.max(gap, (successes[i]?.at ?? 0) - (successes[i - 1]?.at ?? 0))
      console.info(
        `sentinel failover drill: ${outcomes.length} calls, ${failures.length} failed; primary killed at ${Math.round(killedAt)} ms, ` +
          `promotion seen at ${Math.round(promotedAt)} ms; longest gap between successful calls ${Math.round(gap)} ms`,
      )
      expect(okSince(promotedAt), 'calls succeed again after promotion').toBeGreaterThanOrEqual(30)
      expect(outcomes.slice(-20).every((o) => o.ok)).toBe(true)
      // During the failover a call fails fast and says why; nothing else goes wrong.
      for (const f of failures) expect(f.text).toMatch(/^STORE_UNAVAILABLE/)
      expect(gap, 'longest gap between successful calls').toBeLessThan(15_000)
      // The token written before the kill was read back from the new primary: no second request.
      expect(te.requests).toHaveLength(1)
      expect(String(upstream.last()?.headers.authorization)).toBe(bearer)
      const store = createTokenStore(await createBackend(topo.url), keyring)
      try {
        expect((await store.getToken({ connection: 'crm', user: null }))?.accessToken).toBe(bearer.replace(/^Bearer /, ''))
      } finally {
        await store.close()
      }
    } finally {
      await bob.close()
      await keyway.close()
      await upstream.close()
      await te.close()
    }
  }, 45_000)
})
