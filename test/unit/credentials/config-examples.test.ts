/**
 * The OAuth example configs load as the README says (placeholder secrets), and name the methods
 * they document, so they cannot rot unnoticed.
 */
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { loadConfigFile } from '../../../src/config/load.js'

const env = { KEYWAY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'), BILLING_CLIENT_SECRET: 'x', GDRIVE_CLIENT_SECRET: 'y' }

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
})
