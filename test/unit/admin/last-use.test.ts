/**
 * Last use of a credential, read from the audit log: which records are a use (allowed, and the
 * request left with the credential), per user vs shared, per auth method, latest wins whatever
 * the file order, streaming a log file with garbage and a truncated last line, and a missing log.
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { createLastUseIndex, isCredentialUse, readLastUse } from '../../../src/admin/last-use.js'
import type { AuditRecord } from '../../../src/admin/audit-read.js'

const call = (over: Partial<AuditRecord> = {}): AuditRecord => ({
  time: '2026-11-28T09:00:00.000Z',
  type: 'tool.call',
  user: 'alice@example.com',
  connection: 'drive',
  decision: 'allow',
  authMethod: 'oauth_u2m_per_user',
  status: 200,
  ...over,
})

describe('isCredentialUse', () => {
  test.each<[string, AuditRecord, boolean]>([
    ['allowed, upstream answered', call(), true],
    ['allowed, upstream answered 401', call({ status: 401 }), true],
    ['allowed, upstream timed out (the request left)', call({ status: undefined, error: 'UPSTREAM_TIMEOUT' }), true],
    ['denied', call({ decision: 'deny', status: undefined, error: 'PERMISSION_DENIED' }), false],
    ['allowed, consent needed: no token was sent', call({ status: undefined, error: 'CONSENT_REQUIRED' }), false],
    ['allowed, egress refused before sending', call({ status: undefined, error: 'EGRESS_BLOCKED' }), false],
    ['allowed, store down', call({ status: undefined, error: 'STORE_UNAVAILABLE' }), false],
    ['another event', { time: '2026-11-28T09:00:00.000Z', type: 'credential.refreshed', connection: 'drive' }, false],
    ['a foreign line without connection', call({ connection: undefined }), false],
  ])('%s: %s', (_name, rec, expected) => {
    expect(isCredentialUse(rec)).toBe(expected)
  })
})

describe('createLastUseIndex', () => {
  test('latest per user, latest of anyone for shared, records without authMethod count for any method', () => {
    const index = createLastUseIndex()
    index.add(call({ time: '2026-11-28T09:30:00.000Z' }))
    index.add(call({ time: '2026-11-28T09:10:00.000Z' })) // older, later in the file
    index.add(call({ time: '2026-11-28T09:20:00.000Z', user: 'bob@example.com' }))
    index.add(call({ time: '2026-11-28T09:40:00.000Z', user: 'bob@example.com', status: undefined, error: 'CONSENT_REQUIRED' }))
    index.add(call({ time: '2026-11-28T09:50:00.000Z', authMethod: undefined, user: 'carol@example.com' }))
    index.add(call({ time: 'not a time' }))
    expect(index.lastUse('drive', 'alice@example.com', 'oauth_u2m_per_user')).toBe(Date.parse('2026-11-28T09:30:00.000Z'))
    expect(index.lastUse('drive', 'bob@example.com', 'oauth_u2m_per_user')).toBe(Date.parse('2026-11-28T09:20:00.000Z'))
    expect(index.lastUse('drive', null, 'oauth_u2m_per_user')).toBe(Date.parse('2026-11-28T09:50:00.000Z'))
    expect(index.lastUse('drive', 'alice@example.com', 'oauth_u2m_shared')).toBeUndefined()
    expect(index.lastUse('drive', null, 'oauth_u2m_shared')).toBe(Date.parse('2026-11-28T09:50:00.000Z'))
    expect(index.lastUse('nope', null, 'bearer_token')).toBeUndefined()
  })
})

describe('readLastUse', () => {
  test('streams the log (optionally one connection or one user); unreadable lines and a truncated last line are skipped and counted', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keyway-lastuse-'))
    const file = path.join(dir, 'audit.jsonl')
    const lines = [
      JSON.stringify(call({ time: '2026-11-28T09:00:00.000Z' })),
      'garbage',
      JSON.stringify(call({ time: '2026-11-28T09:05:00.000Z', connection: 'gh', authMethod: 'bearer_token', user: 'bob@example.com' })),
      JSON.stringify(call({ time: '2026-11-28T09:06:00.000Z', decision: 'deny', status: undefined })),
      '{"time":"2026-11-28T09:07:00.000Z","type":"tool.ca',
    ]
    await writeFile(file, lines.join('\n'))
    const r = await readLastUse(file)
    if (!r.ok) throw new Error(r.reason)
    expect(r.stats).toEqual({ malformed: 1, truncatedLast: true })
    expect(r.index.lastUse('drive', 'alice@example.com', 'oauth_u2m_per_user')).toBe(Date.parse('2026-11-28T09:00:00.000Z'))
    expect(r.index.lastUse('gh', null, 'bearer_token')).toBe(Date.parse('2026-11-28T09:05:00.000Z'))
    const one = await readLastUse(file, { connection: 'gh' })
    if (!one.ok) throw new Error(one.reason)
    expect(one.index.lastUse('drive', 'alice@example.com', 'oauth_u2m_per_user')).toBeUndefined()
    const bob = await readLastUse(file, { user: 'bob@example.com' })
    if (!bob.ok) throw new Error(bob.reason)
    expect(bob.index.lastUse('gh', 'bob@example.com', 'bearer_token')).toBe(Date.parse('2026-11-28T09:05:00.000Z'))
    expect(bob.index.lastUse('drive', 'alice@example.com', 'oauth_u2m_per_user')).toBeUndefined()
  })

  test('a log that does not exist yet is a result, not a throw', async () => {
    const file = path.join(await mkdtemp(path.join(tmpdir(), 'keyway-lastuse-')), 'none.jsonl')
    expect(await readLastUse(file)).toEqual({ ok: false, missing: true, reason: `audit log ${file} does not exist yet` })
  })
})
