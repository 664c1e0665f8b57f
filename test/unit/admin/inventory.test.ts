/**
 * The credential inventory: rows for stored tokens of every OAuth method and for bearer_token
 * connections from the config, orphan flags, expiry warnings, last use from an audit index,
 * filters and order, against a real (memory) token store. No row carries a token or secret.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { createLastUseIndex } from '../../../src/admin/last-use.js'
import { bearerRow, bearerSecretRefs, credentialRow, formatRelative, formatSpan, listCredentials, secretRefLabel } from '../../../src/admin/inventory.js'
import { NO_REFRESH_TOKEN_WARNING } from '../../../src/credentials/token-record.js'
import { ConfigSchema } from '../../../src/config/schema.js'
import { Secret } from '../../../src/secret.js'
import { createKeyring, createMemoryBackend, createTokenStore, type Keyring, type TokenStore } from '../../../src/store/index.js'
import { CANARIES, configYaml, MIN, NOW, openMemoryStore, record, snapshotOf } from '../credentials/inventory-fixture.js'

let store: TokenStore
beforeEach(async () => {
  store = await openMemoryStore()
})
afterEach(async () => store.close())

const at = (iso: string): number => Date.parse(iso)

describe('credentialRow', () => {
  test('a live stored token: method, expiry, refreshable, times, subject; never a token value', async () => {
    const snapshot = await snapshotOf()
    const rec = record('oauth_u2m_shared', { lastRefreshAt: NOW - 5 * MIN, subject: 'owner-sub', scope: 'read' })
    const row = credentialRow({ connection: 'crm', user: null }, rec, snapshot, NOW, NOW - MIN)
    expect(row).toEqual({
      connection: 'crm',
      user: null,
      method: 'oauth_u2m_shared',
      source: 'store',
      expiresAt: NOW + 42 * MIN,
      refreshable: true,
      obtainedAt: NOW - 60 * MIN,
      lastRefreshAt: NOW - 5 * MIN,
      lastUsedAt: NOW - MIN,
      subject: 'owner-sub',
      scope: 'read',
      orphaned: undefined,
      warnings: [],
    })
    expect(JSON.stringify(row)).not.toMatch(/CANARY/)
  })

  test('m2m is refreshable without a refresh token; a u2m token without one is not, and keeps its stored warning', async () => {
    const snapshot = await snapshotOf()
    expect(credentialRow({ connection: 'svc', user: null }, record('oauth_m2m'), snapshot, NOW).refreshable).toBe(true)
    const { refreshToken: _, ...noRefresh } = record('oauth_u2m_per_user', { warnings: [NO_REFRESH_TOKEN_WARNING] })
    const row = credentialRow({ connection: 'drive', user: 'a@example.com' }, noRefresh, snapshot, NOW)
    expect(row.refreshable).toBe(false)
    expect(row.warnings).toEqual([NO_REFRESH_TOKEN_WARNING])
  })

  test('an expired token says whether the next call renews it', async () => {
    const snapshot = await snapshotOf()
    const expired = { expiresAt: NOW - MIN }
    expect(credentialRow({ connection: 'crm', user: null }, record('oauth_u2m_shared', expired), snapshot, NOW).warnings).toEqual([
      'access token expired; it is renewed at the next call',
    ])
    const { refreshToken: _, ...dead } = record('oauth_u2m_shared', expired)
    expect(credentialRow({ connection: 'crm', user: null }, dead, snapshot, NOW).warnings).toEqual([
      'access token expired and cannot be renewed: sign in again',
    ])
  })

  test('orphaned when the connection is gone or now uses another auth type; no "renewed at the next call" for an orphan', async () => {
    const snapshot = await snapshotOf()
    const gone = credentialRow({ connection: 'old', user: 'a@example.com' }, record('oauth_u2m_per_user', { expiresAt: NOW - MIN }), snapshot, NOW)
    expect(gone.orphaned).toBe('connection-removed')
    expect(gone.warnings).toEqual([])
    expect(credentialRow({ connection: 'crm', user: 'a@example.com' }, record('oauth_u2m_per_user'), snapshot, NOW).orphaned).toBe('method-changed')
    expect(credentialRow({ connection: 'gh', user: null }, record('oauth_u2m_shared'), snapshot, NOW).orphaned).toBe('method-changed')
    expect(credentialRow({ connection: 'drive', user: 'a@example.com' }, record('oauth_u2m_per_user'), snapshot, NOW).orphaned).toBeUndefined()
  })
})

describe('bearer rows', () => {
  test('shared, bearer_token, no expiry, not refreshable, the secret named by its reference only', async () => {
    const snapshot = await snapshotOf()
    const gh = snapshot.connections.get('gh')
    if (!gh) throw new Error('no gh')
    const row = bearerRow(gh, '{ env: GH_TOKEN }', NOW - MIN)
    expect(row).toMatchObject({
      connection: 'gh',
      user: null,
      method: 'bearer_token',
      source: 'config secret { env: GH_TOKEN }',
      expiresAt: undefined,
      refreshable: false,
      lastUsedAt: NOW - MIN,
      orphaned: undefined,
    })
    expect(bearerRow(gh, undefined).source).toBe('config secret')
    expect(JSON.stringify(row)).not.toContain(CANARIES[0])
  })

  test('secret reference labels come from the file data, env and file alike', () => {
    expect(secretRefLabel({ env: 'A' })).toBe('{ env: A }')
    expect(secretRefLabel({ file: './t.txt' })).toBe('{ file: ./t.txt }')
    const file = ConfigSchema.parse({
      version: 1,
      connections: {
        a: { host: 'https://a.example.com', owner: { user: 'x@example.com' }, auth: { type: 'bearer_token', token: { file: './a.txt' } } },
        b: {
          host: 'https://b.example.com',
          owner: { user: 'x@example.com' },
          auth: { type: 'oauth_m2m', tokenEndpoint: 'https://b.example.com/t', clientId: 'c', clientSecret: { env: 'S' } },
        },
      },
    })
    expect([...bearerSecretRefs(file)]).toEqual([['a', '{ file: ./a.txt }']])
  })
})

describe('listCredentials', () => {
  async function fill(): Promise<void> {
    await store.putToken({ connection: 'svc', user: null }, record('oauth_m2m'))
    await store.putToken({ connection: 'crm', user: null }, record('oauth_u2m_shared'))
    await store.putToken({ connection: 'drive', user: 'bob@example.com' }, record('oauth_u2m_per_user'))
    await store.putToken({ connection: 'drive', user: 'alice@example.com' }, record('oauth_u2m_per_user'))
    await store.putToken({ connection: 'old', user: 'alice@example.com' }, record('oauth_u2m_per_user'))
  }

  test('every method, bearer from the config, orphans included, sorted by connection then user (shared first)', async () => {
    await fill()
    const snapshot = await snapshotOf()
    const rows = await listCredentials({ store, snapshot, now: NOW, secretRefs: new Map([['gh', '{ env: GH_TOKEN }']]) })
    expect(rows.map((r) => [r.connection, r.user, r.method, r.source, r.orphaned])).toEqual([
      ['crm', null, 'oauth_u2m_shared', 'store', undefined],
      ['drive', 'alice@example.com', 'oauth_u2m_per_user', 'store', undefined],
      ['drive', 'bob@example.com', 'oauth_u2m_per_user', 'store', undefined],
      ['gh', null, 'bearer_token', 'config secret { env: GH_TOKEN }', undefined],
      ['old', 'alice@example.com', 'oauth_u2m_per_user', 'store', 'connection-removed'],
      ['svc', null, 'oauth_m2m', 'store', undefined],
    ])
    expect(JSON.stringify(rows)).not.toMatch(/CANARY/)
  })

  test('--connection narrows stored and bearer rows; --user leaves out shared credentials, bearer tokens too', async () => {
    await fill()
    const snapshot = await snapshotOf()
    expect((await listCredentials({ store, snapshot, now: NOW }, { connection: 'gh' })).map((r) => r.method)).toEqual(['bearer_token'])
    expect((await listCredentials({ store, snapshot, now: NOW }, { connection: 'drive' })).map((r) => r.user)).toEqual(['alice@example.com', 'bob@example.com'])
    expect((await listCredentials({ store, snapshot, now: NOW }, { user: 'alice@example.com' })).map((r) => r.connection)).toEqual(['drive', 'old'])
  })

  test('last use: per-user rows by that user, shared and bearer rows by anyone, only calls under the same auth method', async () => {
    await fill()
    const snapshot = await snapshotOf()
    const index = createLastUseIndex()
    const call = (time: string, connection: string, user: string, authMethod: string, status = 200): void =>
      index.add({ time, type: 'tool.call', connection, user, decision: 'allow', authMethod, status })
    call('2026-11-28T09:00:00Z', 'drive', 'alice@example.com', 'oauth_u2m_per_user')
    call('2026-11-28T09:30:00Z', 'drive', 'bob@example.com', 'oauth_u2m_per_user')
    call('2026-11-28T09:10:00Z', 'crm', 'alice@example.com', 'oauth_u2m_shared')
    call('2026-11-28T09:20:00Z', 'crm', 'bob@example.com', 'oauth_u2m_shared')
    call('2026-11-28T09:40:00Z', 'gh', 'carol@example.com', 'bearer_token')
    // `old` was a per-user connection; a later call under another type is not a use of its token.
    call('2026-11-28T08:00:00Z', 'old', 'alice@example.com', 'oauth_u2m_per_user')
    call('2026-11-28T09:50:00Z', 'old', 'alice@example.com', 'bearer_token')
    const rows = await listCredentials({ store, snapshot, now: NOW, lastUse: index })
    const used = Object.fromEntries(rows.map((r) => [`${r.connection}/${r.user ?? '-'}`, r.lastUsedAt]))
    expect(used).toEqual({
      'crm/-': at('2026-11-28T09:20:00Z'),
      'drive/alice@example.com': at('2026-11-28T09:00:00Z'),
      'drive/bob@example.com': at('2026-11-28T09:30:00Z'),
      'gh/-': at('2026-11-28T09:40:00Z'),
      'old/alice@example.com': at('2026-11-28T08:00:00Z'),
      'svc/-': undefined,
    })
  })

  test('a record that does not open fails the listing as STORE_UNAVAILABLE, never as "no credentials"', async () => {
    const snapshot = await snapshotOf()
    const backend = createMemoryBackend()
    const keyring = (): Keyring =>
      createKeyring({ current: new Secret(randomBytes(32).toString('base64')), previous: [], dangerouslyUseEphemeralKey: false, warn: () => {} })
    await createTokenStore(backend, keyring()).putToken({ connection: 'crm', user: null }, record('oauth_u2m_shared'))
    const otherKey = createTokenStore(backend, keyring())
    await expect(listCredentials({ store: otherKey, snapshot, now: NOW })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
  })
})

describe('formatSpan / formatRelative', () => {
  test.each([
    [45_000, '45s'],
    [42 * MIN, '42m'],
    [119 * MIN, '119m'],
    [5 * 60 * MIN, '5h'],
    [3 * 24 * 60 * MIN, '3d'],
  ])('%i ms is %s', (ms, text) => {
    expect(formatSpan(ms)).toBe(text)
    expect(formatSpan(-ms)).toBe(text)
  })

  test('future and past', () => {
    expect(formatRelative(NOW + 42 * MIN, NOW)).toBe('in 42m')
    expect(formatRelative(NOW - 3 * 60 * MIN, NOW)).toBe('3h ago')
  })
})

test('configYaml loads (fixture sanity)', async () => {
  expect([...(await snapshotOf(configYaml())).connections.keys()]).toEqual(['gh', 'svc', 'crm', 'drive'])
})
