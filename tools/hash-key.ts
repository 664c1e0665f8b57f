/**
 * `keyway hash-key [--user ID] [--groups a,b]`: makes a new random API key, prints it once,
 * and prints the `identity.apiKeys` line holding only its SHA-256.
 * @module
 */
import { parseArgs } from 'node:util'
import { newApiKey } from '../src/identity/api-keys.js'
import type { Command } from './cli.js'

export const run: Command = async (argv, io) => {
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, groups: { type: 'string' } }, strict: true })
  const { key, sha256 } = newApiKey()
  const user = values.user ?? 'USER@example.com'
  const groups = (values.groups ?? '')
    .split(',')
    .map((g) => g.trim())
    .filter(Boolean)
  io.out(`key:    ${key}`)
  io.out('        (shown once; give it to the user; Keyway stores only its hash)')
  io.out('config line for identity.apiKeys:')
  io.out(`    - { user: ${user}, groups: [${groups.join(', ')}], sha256: ${sha256} }`)
  return 0
}
