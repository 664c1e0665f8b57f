/**
 * A caller cannot change after it is built: its groups are a read-only set at runtime, not only in
 * the type, so nothing between authentication and `decide` can add a group.
 */
import { describe, expect, test } from 'vitest'
import { loadConfigText } from '../../../src/config/load.js'
import { createCaller, createServicePrincipalCaller, rebaseCaller } from '../../../src/identity/caller.js'

const CONFIG = `version: 1
groups:
  eng: [alice@example.com]
identity:
  oidc:
    issuer: https://idp.example.com
    audience: keyway
    servicePrincipals:
      client-1: { name: etl-bot, groups: [robots] }
connections: {}
`

describe('Caller', () => {
  test('groups cannot be added to or removed at runtime, by method or through Set.prototype [type:config-readonly]', async () => {
    const r = await loadConfigText(CONFIG, '/cfg/connections.yaml', { env: {} })
    if (!r.ok) throw new Error(r.problems.join('\n'))
    const people = createCaller(r.snapshot, 'alice@example.com', 'api_key', ['from-key'])
    const robot = createServicePrincipalCaller(r.snapshot, 'etl-bot', 'oidc')
    for (const caller of [people, robot, rebaseCaller(people, r.snapshot)]) {
      const before = [...caller.groups].sort()
      expect(Object.isFrozen(caller) && Object.isFrozen(caller.groups)).toBe(true)
      expect(caller.groups instanceof Set).toBe(false)
      expect(() => (caller.groups as Set<string>).add('admins')).toThrow(TypeError)
      expect(() => Set.prototype.add.call(caller.groups, 'admins')).toThrow(TypeError)
      expect(() => Set.prototype.delete.call(caller.groups, before[0])).toThrow(TypeError)
      expect(() => Object.assign(caller, { groups: new Set(['admins']) })).toThrow(TypeError)
      expect([...caller.groups].sort()).toEqual(before)
      expect(caller.groups.has('admins')).toBe(false)
    }
    expect([...people.groups].sort()).toEqual(['account users', 'eng', 'from-key'])
    expect([...robot.groups]).toEqual(['robots'])
  })
})
