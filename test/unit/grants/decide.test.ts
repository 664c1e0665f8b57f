import { describe, expect, test } from 'vitest'
import type { Connection, Grant } from '../../../src/config/load.js'
import { decide } from '../../../src/grants/decide.js'
import type { Caller } from '../../../src/identity/caller.js'

const caller = (user: string, groups: string[] = []): Caller => ({
  kind: 'user',
  user,
  groups: new Set(['account users', ...groups]),
  via: 'api_key',
  scopes: [],
  credentialGroups: groups,
})
const service = (name: string, groups: string[] = []): Caller => ({
  kind: 'service_principal',
  user: name,
  groups: new Set(groups),
  via: 'oidc',
  scopes: [],
  credentialGroups: [],
})
const conn = (name: string, owner: Connection['owner'], type = 'bearer_token'): Connection =>
  ({
    name,
    owner,
    origin: 'https://x',
    basePath: '/',
    isMcpConnection: true,
    description: undefined,
    readOnly: false,
    timeoutMs: 1,
    maxResponseBytes: 1,
    auth: { type },
  }) as unknown as Connection

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

describe('decide: service principals match by kind and name [identity:service-principal]', () => {
  const gh = conn('gh', { user: 'owner@x' })
  const grants: Grant[] = [
    { on: 'gh', to: { user: 'etl-bot' } },
    { on: 'gh', to: { servicePrincipal: 'report-bot' } },
    { on: 'gh', to: { group: 'bots' } },
    { on: 'gh', to: { group: 'account users' } },
  ]
  test.each([
    ['a grant to service principal report-bot', service('report-bot'), { effect: 'allow', via: 'grant', principal: { servicePrincipal: 'report-bot' } }],
    ['a grant to a group the mapping gives it', service('x-bot', ['bots']), { effect: 'allow', via: 'grant', principal: { group: 'bots' } }],
    ['a grant to user etl-bot does not reach service principal etl-bot', service('etl-bot'), { effect: 'deny', reason: 'no-grant' }],
    ['account users does not reach a service principal', service('other-bot'), { effect: 'deny', reason: 'no-grant' }],
  ] as const)('%s', (_name, who, expected) => {
    expect(decide(who, gh, grants)).toEqual(expected)
  })

  test('a grant to service principal report-bot does not reach user report-bot (only account users does)', () => {
    expect(decide(caller('report-bot'), gh, grants.slice(0, 3))).toEqual({ effect: 'deny', reason: 'no-grant' })
  })

  test('a service principal owner is an owner; a user of the same name is not', () => {
    const owned = conn('c', { servicePrincipal: 'etl-bot' })
    expect(decide(service('etl-bot'), owned, [])).toMatchObject({ effect: 'allow', via: 'owner' })
    expect(decide(caller('etl-bot'), owned, [])).toEqual({ effect: 'deny', reason: 'no-grant' })
  })

  test('a service principal never uses a per-user connection, even through a grant', () => {
    const drive = conn('drive', { user: 'owner@x' }, 'oauth_u2m_per_user')
    expect(decide(service('etl-bot', ['bots']), drive, [{ on: 'drive', to: { group: 'bots' } }])).toEqual({ effect: 'deny', reason: 'needs-person' })
  })
})
