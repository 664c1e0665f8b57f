/**
 * Static API keys (design.md §5): the config holds only the SHA-256 of each key; a presented
 * key is hashed and compared in constant time against every entry, so neither timing nor an
 * early exit tells which entry almost matched. Also makes new keys for `keyway hash-key`.
 * @module
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { ApiKeyEntry } from '../config/load.js'
import { sha256Hex } from '../encoding.js'

/** Prefix that makes a Keyway key recognisable to secret scanners and people. */
export const API_KEY_PREFIX = 'kw_'

/** A new random key (256 bits) and the hash to put in `identity.apiKeys`. */
export function newApiKey(): { key: string; sha256: string } {
  const key = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`
  return { key, sha256: sha256Hex(key) }
}

/** Finds the entry whose hash equals the presented key's, comparing every entry in constant time. */
export function matchApiKey(presented: string, keys: ReadonlyMap<string, ApiKeyEntry>): ApiKeyEntry | undefined {
  const digest = createHash('sha256').update(presented, 'utf8').digest()
  let found: ApiKeyEntry | undefined
  for (const [hex, entry] of keys) {
    if (timingSafeEqual(digest, Buffer.from(hex, 'hex')) && found === undefined) found = entry
  }
  return found
}
