/**
 * Reading Sentinel and Cluster `store.url`s: the topology each names, a clear error naming
 * `store.url` for every malformed one (in `createBackend` and at config load), and descriptions
 * for `keyway validate` and the banner that never carry a password.
 */
import { describe, expect, test } from 'vitest'
import { createBackend } from '../../../src/store/backend.js'
import { describeStoreUrl, parseRedisUrl, redisUrlProblem } from '../../../src/store/redis-url.js'
import { writeTempConfig } from '../../helpers/config.js'
import { loadConfigFile } from '../../../src/config/load.js'

const PASSWORD = 'sk-CANARY-sentinel-pw'

describe('parseRedisUrl', () => {
  test('Sentinel: sentinels with default port 26379, master name, db, credentials', () => {
    expect(parseRedisUrl('redis+sentinel://10.0.0.1,10.0.0.2:26380,[::1]:26381/mymaster')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      masterName: 'mymaster',
      db: 0,
    })
    expect(parseRedisUrl(`redis+sentinel://app:${encodeURIComponent(PASSWORD + '@/')}@s1:26379/m.1/3`)).toEqual({
      kind: 'sentinel',
      sentinels: [{ host: 's1', port: 26379 }],
      masterName: 'm.1',
      db: 3,
      username: 'app',
      password: `${PASSWORD}@/`,
    })
  })

  test('Cluster: nodes with default port 6379', () => {
    expect(parseRedisUrl('redis+cluster://:pw@n1,n2:7001')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'n1', port: 6379 },
        { host: 'n2', port: 7001 },
      ],
      password: 'pw',
    })
    expect(parseRedisUrl('redis://127.0.0.1:6379/2')).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379/2' })
  })

  test.each([
    ['redis+sentinel://s1:26379', /needs the master name/],
    ['redis+sentinel://s1:26379/', /needs the master name/],
    ['redis+sentinel://s1:26379/my master', /master name "my master"/],
    ['redis+sentinel://s1:26379/m/x', /only a database number/],
    ['redis+sentinel://s1:26379/m/1/2', /only a database number/],
    ['redis+sentinel://s1:99999/m', /outside 1-65535/],
    ['redis+sentinel://s1:26379,,s2/m', /Sentinel "" is not host:port/],
    ['redis+sentinel://s_1/m', /Sentinel "s_1" is not host:port/],
    ['redis+sentinel://s1/m?db=1', /query strings/],
    ['redis+cluster://n1:7000/0', /Cluster URL has no path/],
    ['redis+cluster://n1:x', /Cluster node "n1:x" is not host:port/],
    [`redis+sentinel://:%E0%A4%A@s1/m`, /percent-encoding/],
  ])('%s is CONFIG_INVALID naming store.url', (url, message) => {
    let error: unknown
    try {
      parseRedisUrl(url)
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ code: 'CONFIG_INVALID', detail: { setting: 'store.url' } })
    expect((error as Error).message).toMatch(/^store\.url: /)
    expect((error as Error).message).toMatch(message)
  })

  test('no problem message quotes the password [secret:never-in-messages]', async () => {
    for (const url of [`redis+sentinel://:${PASSWORD}@s1:26379`, `redis+sentinel://:${PASSWORD}@s1:26379/bad name`, `redis+cluster://:${PASSWORD}@n1:0`]) {
      expect(redisUrlProblem(url)).toBeDefined()
      expect(redisUrlProblem(url)).not.toContain(PASSWORD)
      await expect(createBackend(url)).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
      await createBackend(url).catch((e: unknown) =>
        expect(JSON.stringify({ m: (e as Error).message, d: (e as { detail?: unknown }).detail })).not.toContain(PASSWORD),
      )
    }
  })
})

describe('describeStoreUrl [secret:never-in-messages]', () => {
  test.each([
    ['memory://', 'memory (this process only)'],
    ['sqlite:///var/lib/keyway/keyway.sqlite', 'sqlite /var/lib/keyway/keyway.sqlite'],
    ['redis://127.0.0.1:6379', 'redis 127.0.0.1:6379 (db 0)'],
    [`rediss://user:${PASSWORD}@redis.internal:6380/2`, 'redis (TLS) redis.internal:6380 (db 2, password ***)'],
    [`redis+sentinel://:${PASSWORD}@10.0.0.1,10.0.0.2:26380/mymaster/1`, 'redis sentinel "mymaster" via 10.0.0.1:26379, 10.0.0.2:26380 (db 1, password ***)'],
    ['redis+cluster://n1:7000,[::1]:7001', 'redis cluster via n1:7000, [::1]:7001'],
    [`redis+sentinel://:${PASSWORD}@s1`, 'redis+sentinel (invalid)'],
  ])('%s', (url, text) => {
    expect(describeStoreUrl(url)).toBe(text)
    expect(describeStoreUrl(url)).not.toContain(PASSWORD)
  })
})

describe('config validation of store.url', () => {
  const load = async (yaml: string) => {
    const { file } = await writeTempConfig(yaml)
    return loadConfigFile(file, { env: { SPW: PASSWORD } })
  }

  test('a malformed Sentinel URL is reported at store.url, without the password', async () => {
    const r = await load(`version: 1\nstore: { url: "redis+sentinel://:${PASSWORD}@s1:26379", dangerouslyUseEphemeralKey: true }\n`)
    expect(r.ok).toBe(false)
    const problems = r.ok ? [] : r.problems
    expect(problems.join('\n')).toMatch(/store\.url: .*needs the master name/)
    expect(problems.join('\n')).not.toContain(PASSWORD)
  })

  test('an unknown scheme lists the accepted ones', async () => {
    const r = await load('version: 1\nstore: { url: "redis+ha://s1/m", dangerouslyUseEphemeralKey: true }\n')
    expect(r.ok ? [] : r.problems).toEqual([expect.stringMatching(/store\.url: must start with .*redis\+sentinel:\/\/ or redis\+cluster:\/\//)])
  })

  test('store.sentinelPassword is a secret reference read into the snapshot', async () => {
    const r = await load('version: 1\nstore: { url: "redis+sentinel://s1,s2,s3/mymaster", sentinelPassword: { env: SPW }, dangerouslyUseEphemeralKey: true }\n')
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.snapshot.store.sentinelPassword?.reveal()).toBe(PASSWORD)
    expect(JSON.stringify(r.snapshot.store)).not.toContain(PASSWORD)
  })
})
