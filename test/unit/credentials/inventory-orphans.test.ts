/**
 * Orphaned credentials: what counts as orphaned (connection removed or renamed, auth type
 * changed), grouping and the warning lines of `keyway validate` and a reload, counting what a
 * removed connection holds, and pruning (only orphans, compare-and-delete, audited, never sent to
 * a provider), against a real (memory) token store.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { createMemoryAuditLog } from '../../../src/audit/audit-log.js'
import {
  countStoredCredentials,
  describeOrphan,
  findOrphans,
  groupOrphans,
  orphanReason,
  orphanWarnings,
  pruneOrphans,
  removedConnectionsWarning,
} from '../../../src/credentials/orphans.js'
import type { TokenRecord, TokenRef, TokenStore } from '../../../src/store/index.js'
import { openMemoryStore, record, snapshotOf } from './inventory-fixture.js'

let store: TokenStore
beforeEach(async () => {
  store = await openMemoryStore()
})
afterEach(async () => store.close())

const put = (connection: string, user: string | null, rec: TokenRecord): Promise<void> => store.putToken({ connection, user }, rec)

async function refsIn(s: TokenStore): Promise<string[]> {
  const out: string[] = []
  for await (const { ref } of s.listTokens()) out.push(`${ref.connection}/${ref.user ?? '-'}`)
  return out.sort()
}

describe('orphanReason', () => {
  test('removed, re-typed, or live', async () => {
    const snapshot = await snapshotOf()
    expect(orphanReason('gone', 'oauth_m2m', snapshot)).toBe('connection-removed')
    expect(orphanReason('crm', 'oauth_u2m_per_user', snapshot)).toBe('method-changed')
    expect(orphanReason('gh', 'oauth_m2m', snapshot)).toBe('method-changed')
    expect(orphanReason('svc', 'oauth_m2m', snapshot)).toBeUndefined()
    expect(describeOrphan('gone', 'connection-removed', snapshot)).toBe('connection no longer in the config (removed or renamed)')
    expect(describeOrphan('gh', 'method-changed', snapshot)).toBe('connection now uses bearer_token')
  })
})

describe('findOrphans and the validate warnings', () => {
  test('only orphans are found, grouped per connection with counts and methods, one warning line each', async () => {
    const snapshot = await snapshotOf()
    await put('drive', 'alice@example.com', record('oauth_u2m_per_user'))
    await put('svc', null, record('oauth_m2m'))
    await put('old_drive', 'alice@example.com', record('oauth_u2m_per_user'))
    await put('old_drive', 'bob@example.com', record('oauth_u2m_per_user'))
    await put('crm', 'carol@example.com', record('oauth_u2m_per_user'))
    const orphans = await findOrphans(store, snapshot)
    expect(orphans.map((o) => [o.ref.connection, o.ref.user, o.reason])).toEqual([
      ['crm', 'carol@example.com', 'method-changed'],
      ['old_drive', 'alice@example.com', 'connection-removed'],
      ['old_drive', 'bob@example.com', 'connection-removed'],
    ])
    const groups = groupOrphans(orphans, snapshot)
    expect(groups).toEqual([
      { connection: 'crm', reason: 'method-changed', now: 'oauth_u2m_shared', count: 1, methods: ['oauth_u2m_per_user'] },
      { connection: 'old_drive', reason: 'connection-removed', now: undefined, count: 2, methods: ['oauth_u2m_per_user'] },
    ])
    expect(orphanWarnings(groups)).toEqual([
      'connection "crm" now uses oauth_u2m_shared but 1 oauth_u2m_per_user credential is still stored under it; it is never used again: keyway credentials lists them, keyway credentials --prune deletes them',
      'connection "old_drive" is no longer in the config (removed or renamed) but 2 oauth_u2m_per_user credentials are still stored under it; they are never used again: keyway credentials lists them, keyway credentials --prune deletes them',
    ])
    expect(await findOrphans(store, snapshot, { connection: 'crm' })).toHaveLength(1)
    expect(await findOrphans(store, snapshot, { user: 'bob@example.com' })).toHaveLength(1)
  })

  test('nothing orphaned: no warning', async () => {
    const snapshot = await snapshotOf()
    await put('svc', null, record('oauth_m2m'))
    expect(orphanWarnings(groupOrphans(await findOrphans(store, snapshot), snapshot))).toEqual([])
  })
})

describe('reload: removed connections that hold credentials', () => {
  test('counts per removed connection; connections holding none are left out', async () => {
    await put('old_drive', 'alice@example.com', record('oauth_u2m_per_user'))
    await put('old_drive', 'bob@example.com', record('oauth_u2m_per_user'))
    await put('old_crm', null, record('oauth_u2m_shared'))
    await put('svc', null, record('oauth_m2m'))
    const counts = await countStoredCredentials(store, ['old_crm', 'old_drive', 'never_had_any'])
    expect([...counts]).toEqual([
      ['old_crm', 1],
      ['old_drive', 2],
    ])
    expect(removedConnectionsWarning(counts)).toBe(
      'connections "old_crm" (1 stored credential), "old_drive" (2 stored credentials) were removed from the config (or renamed) but still hold credentials; ' +
        'they are never used again: keyway credentials lists them, keyway credentials --prune deletes them',
    )
    expect(removedConnectionsWarning(new Map([['old_crm', 1]]))).toBe(
      'connection "old_crm" was removed from the config (or renamed) but still holds 1 stored credential; it is never used again: keyway credentials lists them, keyway credentials --prune deletes them',
    )
    expect(removedConnectionsWarning(new Map())).toBeUndefined()
  })
})

describe('pruneOrphans', () => {
  test('deletes only orphans (matching the filter), audits each as not revoked at the provider', async () => {
    const snapshot = await snapshotOf()
    await put('drive', 'alice@example.com', record('oauth_u2m_per_user'))
    await put('svc', null, record('oauth_m2m'))
    await put('crm', null, record('oauth_u2m_shared'))
    await put('old_drive', 'alice@example.com', record('oauth_u2m_per_user'))
    await put('old_drive', 'bob@example.com', record('oauth_u2m_per_user'))
    await put('gh', null, record('oauth_u2m_shared'))
    const audit = createMemoryAuditLog()
    const first = await pruneOrphans({ store, audit }, snapshot, { user: 'bob@example.com' })
    expect(first.map((r) => [r.ref.connection, r.ref.user, r.outcome])).toEqual([['old_drive', 'bob@example.com', 'deleted']])
    const rest = await pruneOrphans({ store, audit }, snapshot)
    expect(rest.map((r) => [r.ref.connection, r.ref.user, r.method, r.reason, r.outcome])).toEqual([
      ['gh', null, 'oauth_u2m_shared', 'method-changed', 'deleted'],
      ['old_drive', 'alice@example.com', 'oauth_u2m_per_user', 'connection-removed', 'deleted'],
    ])
    expect(await refsIn(store)).toEqual(['crm/-', 'drive/alice@example.com', 'svc/-'])
    expect(audit.events).toEqual([
      {
        type: 'credential.revoked',
        connection: 'old_drive',
        user: 'bob@example.com',
        authMethod: 'oauth_u2m_per_user',
        reason: 'pruned as orphaned (connection-removed); not revoked at the provider',
      },
      {
        type: 'credential.revoked',
        connection: 'gh',
        authMethod: 'oauth_u2m_shared',
        reason: 'pruned as orphaned (method-changed); not revoked at the provider',
      },
      {
        type: 'credential.revoked',
        connection: 'old_drive',
        user: 'alice@example.com',
        authMethod: 'oauth_u2m_per_user',
        reason: 'pruned as orphaned (connection-removed); not revoked at the provider',
      },
    ])
    expect(JSON.stringify(audit.events)).not.toMatch(/CANARY/)
    expect(await pruneOrphans({ store, audit }, snapshot)).toEqual([])
  })

  test('a record rewritten between listing and deleting is left in place (changed); one deleted meanwhile is gone', async () => {
    const snapshot = await snapshotOf()
    const a: TokenRef = { connection: 'old', user: 'alice@example.com' }
    const b: TokenRef = { connection: 'old', user: 'bob@example.com' }
    await store.putToken(a, record('oauth_u2m_per_user'))
    await store.putToken(b, record('oauth_u2m_per_user'))
    // A store that lets something else act right after each listing, as a server with an older config would.
    const racing: TokenStore = {
      ...store,
      listTokens: async function* (filter) {
        const items: { ref: TokenRef; record: TokenRecord }[] = []
        for await (const item of store.listTokens(filter)) items.push(item)
        await store.putToken(a, record('oauth_u2m_per_user'))
        await store.deleteToken(b)
        yield* items
      },
    }
    const results = await pruneOrphans({ store: racing, audit: createMemoryAuditLog() }, snapshot)
    expect(results.map((r) => [r.ref.user, r.outcome])).toEqual([
      ['alice@example.com', 'changed'],
      ['bob@example.com', 'gone'],
    ])
    expect(await store.getToken(a)).toBeDefined()
  })
})
