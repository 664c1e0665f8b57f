/**
 * The example configs load as the README says (placeholder secrets), and name the methods and
 * settings they document, so they cannot rot unnoticed.
 */
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { loadConfigFile } from '../../../src/config/load.js'

const env = { KEYWAY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'), BILLING_CLIENT_SECRET: 'x', GDRIVE_CLIENT_SECRET: 'y' }
const key = env.KEYWAY_ENCRYPTION_KEY

describe('config/examples', () => {
  test.each([
    ['oauth-m2m.yaml', 'billing', 'oauth_m2m'],
    ['oauth-u2m-shared.yaml', 'team_drive', 'oauth_u2m_shared'],
    ['oauth-u2m-per-user.yaml', 'my_drive', 'oauth_u2m_per_user'],
  ])('%s loads and uses %s with %s', async (file, connection, type) => {
    const r = await loadConfigFile(path.resolve('config/examples', file), { env })
    if (!r.ok) throw new Error(r.problems.join('\n'))
    expect(r.snapshot.connections.get(connection)?.auth.type).toBe(type)
  })

  test('upstream-mcp.yaml loads with the env the README names, and both connections are protocol: mcp with the documented mcp settings', async () => {
    const file = path.resolve('config/examples/upstream-mcp.yaml')
    const r = await loadConfigFile(file, { env: { KEYWAY_ENCRYPTION_KEY: key, EVERYTHING_TOKEN: 'unused', NOTES_CLIENT_SECRET: 'z' } })
    if (!r.ok) throw new Error(r.problems.join('\n'))
    const everything = r.snapshot.connections.get('everything')
    const notes = r.snapshot.connections.get('notes')
    expect(everything).toMatchObject({ protocol: 'mcp', isMcpConnection: true, auth: { type: 'bearer_token' } })
    expect(everything?.mcp).toEqual({
      prefix: 'everything',
      include: undefined,
      exclude: ['trigger-*'],
      catalogCredential: 'shared',
      refreshSeconds: 600,
      onUnavailable: 'omit',
    })
    expect(notes).toMatchObject({ protocol: 'mcp', isMcpConnection: true, auth: { type: 'oauth_u2m_per_user' } })
    expect(notes?.mcp).toEqual({
      prefix: 'notes',
      include: ['get_*', 'search_notes'],
      exclude: [],
      catalogCredential: 'owner',
      refreshSeconds: 600,
      onUnavailable: 'omit',
    })
    expect(r.snapshot.mcpConnections.map((c) => c.name)).toEqual(['everything', 'notes'])
    // The env it names is what it needs: without NOTES_CLIENT_SECRET it does not load.
    const without = await loadConfigFile(file, { env: { KEYWAY_ENCRYPTION_KEY: key, EVERYTHING_TOKEN: 'unused' } })
    expect(without.ok).toBe(false)
  })
})
