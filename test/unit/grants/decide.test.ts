import { describe, expect, test } from 'vitest'
import type { Connection, Grant } from '../../../src/config/load.js'
import { decide } from '../../../src/grants/decide.js'
import type { Caller } from '../../../src/identity/caller.js'

const caller = (user: string, groups: string[] = []): Caller => ({ user, groups: new Set(['account users', ...groups]), via: 'api_key', scopes: [], credentialGroups: groups })
const conn = (name: string, owner: Connection['owner']): Connection =>
  ({ name, owner, origin: 'https://x', basePath: '/', isMcpConnection: true, description: undefined, readOnly: false, timeoutMs: 1, maxResponseBytes: 1, auth: { type: 'bearer_token' } }) as unknown as Connection

describe('decide [grant:deny-by-default]', () => {
  const gh = conn('gh', { user: 'owner@x' })
  const grants: Grant[] = [
    { on: 'other', to: { user: 'alice@x' } },
    { on: 'gh', to: { group: 'eng' } },
    { on: 'gh', to: { user: 'bob@x' } },
  ]
  test.each([
    ['owner', caller('owner@x'), { effect: 'allow', via: 'owner', principal: { user: 'owner@x' } }],
    ['group grant', caller('carol@x', ['eng']), { effect: 'allow', via: 'grant', principal: { group: 'eng' } }],
    ['user grant', caller('bob@x'), { effect: 'allow', via: 'grant', principal: { user: 'bob@x' } }],
    ['grant on another connection', caller('alice@x'), { effect: 'deny', reason: 'no-grant' }],
    ['no grant at all', caller('dave@x'), { effect: 'deny', reason: 'no-grant' }],
    ['user id equal to a group name', caller('eng'), { effect: 'deny', reason: 'no-grant' }],
  ] as const)('%s', (_name, who, expected) => {
    expect(decide(who, gh, grants)).toEqual(expected)
  })

  test('the built-in group account users covers every authenticated caller', () => {
    expect(decide(caller('anyone@x'), gh, [{ on: 'gh', to: { group: 'account users' } }])).toMatchObject({ effect: 'allow', via: 'grant' })
  })

  test('a group owner makes every member an owner', () => {
    expect(decide(caller('m@x', ['admins']), conn('c', { group: 'admins' }), [])).toMatchObject({ effect: 'allow', via: 'owner' })
  })
})
