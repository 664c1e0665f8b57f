import { expectTypeOf, describe, expect, test } from 'vitest'
import { readFile } from 'node:fs/promises'
import { loadConfigText, type ConfigSnapshot, type Connection, type Grant } from '../../../src/config/load.js'
import { FrozenMap, FrozenSet } from '../../../src/readonly-collections.js'
import { configJsonSchemaText } from '../../../src/config/json-schema.js'
import { Secret } from '../../../src/secret.js'

const FILE = '/cfg/connections.yaml'
const load = (text: string, env: Record<string, string> = { T: 'tok' }) => loadConfigText(text, FILE, { env })

const VALID = `version: 1
egress:
  allowedHosts: [api.github.com, "*.googleapis.com"]
groups:
  eng: [alice@example.com]
connections:
  gh:
    host: https://api.github.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
  drive:
    host: https://www.googleapis.com
    basePath: /drive/v3
    owner: { group: eng }
    auth:
      type: oauth_u2m_per_user
      authorizationEndpoint: https://accounts.google.com/o/oauth2/v2/auth
      tokenEndpoint: https://oauth2.googleapis.com/token
      clientId: abc
      clientSecret: { env: T }
grants:
  - { privilege: USE CONNECTION, on: gh, to: { group: eng } }
`

describe('loadConfigText', () => {
  test('a valid file becomes a frozen snapshot with defaults applied', async () => {
    const r = await load(VALID)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    const s = r.snapshot
    expect(s.server).toEqual({
      publicUrl: 'http://127.0.0.1:8787',
      host: '127.0.0.1',
      port: 8787,
      allowedHosts: undefined,
      maxRequestBytes: 1_048_576,
      maxConnections: 1024,
      drainTimeoutMs: 25_000,
    })
    expect(s.store.url).toBe('sqlite:///cfg/data/keyway.sqlite')
    expect(s.audit.file).toBe('/cfg/data/audit.jsonl')
    expect(s.tools.map((t) => t.name)).toEqual(['gh'])
    expect(s.connections.get('drive')?.basePath).toBe('/drive/v3/')
    expect(s.connections.get('gh')?.timeoutMs).toBe(30000)
    expect(s.groupsOf.get('alice@example.com')).toEqual(['eng'])
    expect(Object.isFrozen(s)).toBe(true)
    expect(Object.isFrozen(s.grants[0])).toBe(true)
  })

  test('secrets resolve to Secret objects that never print [secret:never-logged]', async () => {
    const r = await load(VALID, { T: 'sk-live-CANARY' })
    if (!r.ok) throw new Error(r.problems.join('\n'))
    const auth = r.snapshot.connections.get('gh')?.auth
    expect(auth?.type).toBe('bearer_token')
    if (auth?.type !== 'bearer_token') return
    expect(auth.token).toBeInstanceOf(Secret)
    expect(auth.token.reveal()).toBe('sk-live-CANARY')
    expect(JSON.stringify(r.snapshot.connections.get('gh'))).not.toContain('CANARY')
    expect(String(auth.token)).toBe('[redacted]')
  })

  test('every problem is reported at once as file:line path: problem', async () => {
    const r = await load(`version: 1
server: { port: 70000, colour: blue }
connections:
  "bad name":
    host: https://api.github.com/v3
    owner: { usr: a }
    auth: { type: magic }
  ok:
    host: https://api.github.com
    owner: { user: a }
    auth: { type: bearer_token, token: "inline-secret" }
`)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems).toEqual([
      '/cfg/connections.yaml:2 server.port: Too big: expected number to be <=65535',
      '/cfg/connections.yaml:2 server.colour: unknown key',
      '/cfg/connections.yaml:6 connections["bad name"].owner: must be { user: ID }, { group: NAME } or { servicePrincipal: NAME }',
      "/cfg/connections.yaml:7 connections[\"bad name\"].auth.type: Invalid discriminator value. Expected 'bearer_token' | 'oauth_m2m' | 'oauth_u2m_shared' | 'oauth_u2m_per_user'",
      '/cfg/connections.yaml:11 connections.ok.auth.token: must be a secret reference { env: NAME } or { file: PATH }; secrets are never written inline',
    ])
    expect(r.problems.join('\n')).not.toContain('inline-secret')
  })

  test('cross checks: names, allowlist, http, loopback, unknown grant targets, missing secrets, reserved group', async () => {
    const r = await load(`version: 1
egress: { allowedHosts: [api.github.com] }
groups: { "account users": [x] }
identity:
  apiKeys:
    - { user: a, sha256: ${'a'.repeat(64)} }
    - { user: b, sha256: ${'a'.repeat(64)} }
connections:
  "has space":
    host: https://api.github.com
    owner: { user: a }
    auth: { type: bearer_token, token: { env: MISSING } }
  plain:
    host: http://127.0.0.1:9
    basePath: /a/../b
    owner: { user: a }
    auth: { type: bearer_token, token: { file: ./nope.txt } }
  m2m:
    host: https://api.github.com
    owner: { user: a }
    auth: { type: oauth_m2m, clientId: c, clientSecret: { env: T } }
grants:
  - { privilege: USE CONNECTION, on: ghost, to: { user: a } }
`)
    expect(r.ok).toBe(false)
    if (r.ok) return
    const text = r.problems.join('\n')
    expect(text).toContain(':9 connections["has space"]: connection name must match')
    expect(text).toContain(':14 connections.plain.host: host uses http://')
    expect(text).toContain('connections.plain.host: host "127.0.0.1" is not in egress.allowedHosts')
    expect(text).toContain('connections.plain.host: host points at a loopback address')
    expect(text).toContain(':15 connections.plain.basePath: basePath must be a plain path')
    expect(text).toContain('connections.m2m.auth: give either issuer (discovery) or tokenEndpoint')
    expect(text).toContain(':23 grants[0].on: grant names unknown connection "ghost"')
    expect(text).toContain('groups["account users"]: "account users" is built in')
    expect(text).toContain('identity.apiKeys[1].sha256: same key hash as identity.apiKeys[0]')
    expect(text).toContain('connections["has space"].auth.token: environment variable MISSING is not set')
    expect(text).toMatch(/connections\.plain\.auth\.token: cannot read secret file \/cfg\/nope\.txt \(ENOENT\)/)
  })

  test('allowedHosts: entries with ports, bad entries, configured URLs on a port the list leaves out [egress:ports]', async () => {
    const r = await load(`version: 1
egress:
  allowedHosts: [api.example.com, "idp.example.com:8443", "bad:port", "::1", "[::1]:70000"]
connections:
  api:
    host: https://api.example.com:9443
    owner: { user: a }
    auth: { type: bearer_token, token: { env: T } }
  m2m:
    host: https://api.example.com
    owner: { user: a }
    auth: { type: oauth_m2m, tokenEndpoint: "https://idp.example.com/token", clientId: c, clientSecret: { env: T } }
`)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems).toEqual([
      '/cfg/connections.yaml:3 egress.allowedHosts[2]: port must be a number from 1 to 65535',
      '/cfg/connections.yaml:3 egress.allowedHosts[3]: write an IPv6 address in brackets: [v6] or [v6]:port',
      '/cfg/connections.yaml:3 egress.allowedHosts[4]: port must be a number from 1 to 65535',
      '/cfg/connections.yaml:12 connections.m2m.auth.tokenEndpoint: port 443 of host "idp.example.com" is not in egress.allowedHosts, which names that host only with other ports',
    ])
  })

  test('in-flight limits: egress defaults, per-connection overrides', async () => {
    const r = await load(`version: 1
egress: { maxConcurrentRequests: 10 }
connections:
  a:
    host: https://api.example.com
    owner: { user: a }
    maxConcurrentRequestsPerCaller: 2
    auth: { type: bearer_token, token: { env: T } }
  b:
    host: https://api.example.com
    owner: { user: a }
    maxConcurrentRequests: 3
    auth: { type: bearer_token, token: { env: T } }
`)
    if (!r.ok) throw new Error(r.problems.join('\n'))
    const { a, b } = Object.fromEntries(r.snapshot.connections)
    expect([a?.maxConcurrentRequests, a?.maxConcurrentRequestsPerCaller]).toEqual([10, 2])
    expect([b?.maxConcurrentRequests, b?.maxConcurrentRequestsPerCaller]).toEqual([3, 16])
    expect(r.snapshot.egress).toMatchObject({ maxConcurrentRequests: 10, maxConcurrentRequestsPerCaller: 16 })
    expect([...(r.snapshot.egress.configuredPorts.get('api.example.com') ?? [])]).toEqual([443])
  })

  test('YAML syntax errors and duplicate keys are reported with their line', async () => {
    const r = await load('version: 1\nconnections:\n  a: 1\n  a: 2\n')
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems[0]).toMatch(/^\/cfg\/connections\.yaml:4 \(yaml\): Map keys must be unique/)
  })

  test('the snapshot type is readonly [type:config-readonly]', () => {
    expectTypeOf<ConfigSnapshot['grants']>().toEqualTypeOf<
      readonly { readonly on: string; readonly to: { user: string } | { group: string } | { servicePrincipal: string } }[]
    >()
    expectTypeOf<ConfigSnapshot['connections']>().toEqualTypeOf<ReadonlyMap<string, Connection>>()
    expectTypeOf<ConfigSnapshot['egress']['configuredPorts']>().toEqualTypeOf<ReadonlyMap<string, ReadonlySet<number>>>()
  })

  test('a loaded snapshot cannot change at runtime: no Map or Set inside, every object frozen, writes throw [type:config-readonly]', async () => {
    const r = await load(VALID.replace('isMcpConnection: true', 'isMcpConnection: true\n    description: GitHub'), { T: 'tok' })
    if (!r.ok) throw new Error(r.problems.join('\n'))
    const s = r.snapshot
    const before = JSON.stringify(describeSnapshot(s))
    // Everything reachable is frozen, and no mutable Map or Set is left to call `.set` or `.add` on.
    const seen = new Set<object>()
    const walk = (v: unknown, where: string): void => {
      if (typeof v !== 'object' || v === null || v instanceof Secret || seen.has(v)) return
      seen.add(v)
      expect(v instanceof Map || v instanceof Set, `${where} is a mutable ${v.constructor.name}`).toBe(false)
      expect(Object.isFrozen(v), `${where} is not frozen`).toBe(true)
      if (v instanceof FrozenMap) for (const [k, x] of v) walk(x, `${where}.get(${String(k)})`)
      else if (v instanceof FrozenSet) for (const x of v) walk(x, `${where} member`)
      else for (const [k, x] of Object.entries(v)) walk(x, `${where}.${k}`)
    }
    walk(s, 'snapshot')
    expect(seen.size).toBeGreaterThan(20)

    const gh = s.connections.get('gh')
    if (!gh) throw new Error('gh missing')
    const attempts: [string, () => unknown][] = [
      ['connections.set', () => (s.connections as Map<string, Connection>).set('evil', gh)],
      ['Map.prototype.set on connections', () => Map.prototype.set.call(s.connections, 'evil', gh)],
      ['Map.prototype.delete on connections', () => Map.prototype.delete.call(s.connections, 'gh')],
      ['Map.prototype.clear on groupsOf', () => Map.prototype.clear.call(s.groupsOf)],
      ['apiKeys.set', () => (s.identity.apiKeys as Map<string, unknown>).set('x', { user: 'evil', groups: [] })],
      ['configuredPorts set add', () => Set.prototype.add.call(s.egress.configuredPorts.get('api.github.com'), 1)],
      ['a connection field', () => Object.assign(gh, { timeoutMs: 1 })],
      ['a group list', () => (s.groupsOf.get('alice@example.com') as string[]).push('evil')],
      ['a grant', () => ((s.grants as Grant[])[0] = { on: 'gh', to: { user: 'evil' } })],
      ['the tools list', () => (s.tools as Connection[]).pop()],
      ['the server section', () => Object.assign(s.server, { port: 1 })],
    ]
    for (const [what, attempt] of attempts) expect(attempt, what).toThrow(TypeError)
    expect(JSON.stringify(describeSnapshot(s))).toBe(before)
    expect(s.connections.has('evil')).toBe(false)
    expect(s.connections.get('gh')?.timeoutMs).toBe(30000)
  })
})

/** What the immutability test compares before and after: every map and list spelled out. */
function describeSnapshot(s: ConfigSnapshot): unknown {
  return {
    server: s.server,
    connections: [...s.connections].map(([k, c]) => [k, c.timeoutMs, c.description]),
    groupsOf: [...s.groupsOf],
    apiKeys: [...s.identity.apiKeys],
    ports: [...s.egress.configuredPorts].map(([h, p]) => [h, [...p]]),
    grants: s.grants,
    tools: s.tools.map((t) => t.name),
  }
}

describe('config/connections.schema.json', () => {
  test('is the JSON Schema generated from the zod schema (npm run schema)', async () => {
    const shipped = await readFile(new URL('../../../config/connections.schema.json', import.meta.url), 'utf8')
    expect(shipped).toBe(configJsonSchemaText())
  })
})
