/**
 * A token store in memory with a fresh random encryption key, on the test's clock: the store unit
 * tests of refresh, consent records and per-user credentials open one per test.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { Secret } from '../../src/secret.js'
import { openTokenStore, type TokenStore } from '../../src/store/index.js'

export function openMemoryStore(now: () => number): Promise<TokenStore> {
  return openTokenStore(
    { url: 'memory://', encryptionKey: new Secret(randomBytes(32).toString('base64')), encryptionKeys: [], dangerouslyUseEphemeralKey: false },
    { warn: () => {}, now },
  )
}
