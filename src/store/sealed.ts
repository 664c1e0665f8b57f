/**
 * The sealed record envelope: `kw1.<keyId>.<iv>.<ciphertext‖tag>` (base64url, no padding), where
 * the plaintext is JSON and the associated data binds the envelope to the store key it lives
 * under, so a ciphertext copied to another key does not open. Anything that does not open
 * (tampered, truncated, wrong or unknown key, not JSON) is `STORE_UNAVAILABLE`, never a miss.
 * Error messages name the record kind and the reason, never the value or the plaintext.
 * @module
 */
import { AppError } from '../errors.js'
import type { Keyring } from './crypto.js'

/** The envelope version; a new format gets a new prefix and old ones stay readable. */
export const SEAL_VERSION = 'kw1'

const KEY_ID_PATTERN = /^[0-9a-f]{16}$/
const BASE64URL_PATTERN = /^[A-Za-z0-9_-]+$/

/** Why a stored value could not be opened (`detail.reason` of the error). */
export type OpenFailure = 'malformed' | 'unknown-key-id' | 'authentication-failed' | 'not-json'

/**
 * The associated data: version, key id and the full store key. Binding the key means a record
 * copied under another (connection, user) fails authentication instead of being served there.
 */
function associatedData(keyId: string, storeKey: string): Buffer {
  return Buffer.from(`${SEAL_VERSION}.${keyId}.${storeKey}`, 'utf8')
}

/** Seals `value` (JSON-serialisable) for storage under `storeKey` with the keyring's current key. */
export function sealJson(keyring: Keyring, storeKey: string, value: unknown): string {
  const plaintext = Buffer.from(JSON.stringify(value), 'utf8')
  const { keyId, iv, ciphertext } = keyring.encrypt(plaintext, associatedData(keyring.currentKeyId, storeKey))
  return `${SEAL_VERSION}.${keyId}.${iv.toString('base64url')}.${ciphertext.toString('base64url')}`
}

/** The key id a sealed value names, or `undefined` when it is not an envelope (no decryption). */
export function sealedKeyId(sealed: string): string | undefined {
  const parts = sealed.split('.')
  return parts.length === 4 && parts[0] === SEAL_VERSION && KEY_ID_PATTERN.test(parts[1] ?? '') ? parts[1] : undefined
}

/**
 * Opens a sealed value stored under `storeKey` and parses its JSON.
 * @param what the record kind for the error message (`token record`, `ticket record`)
 * @throws AppError `STORE_UNAVAILABLE` with `detail.reason` an {@link OpenFailure}
 */
export function openJson(keyring: Keyring, storeKey: string, sealed: string, what: string): unknown {
  const fail = (reason: OpenFailure): AppError =>
    new AppError('STORE_UNAVAILABLE', `stored ${what} does not open (${reason}); it was not treated as missing`, {
      detail: { reason, record: what },
    })
  const parts = sealed.split('.')
  const [version, keyId, iv, body] = parts
  if (
    parts.length !== 4 ||
    version !== SEAL_VERSION ||
    keyId === undefined ||
    !KEY_ID_PATTERN.test(keyId) ||
    iv === undefined ||
    !BASE64URL_PATTERN.test(iv) ||
    body === undefined ||
    !BASE64URL_PATTERN.test(body)
  ) {
    throw fail('malformed')
  }
  const result = keyring.decrypt(keyId, Buffer.from(iv, 'base64url'), Buffer.from(body, 'base64url'), associatedData(keyId, storeKey))
  if (!result.ok) throw fail(result.reason)
  try {
    return JSON.parse(result.plaintext.toString('utf8')) as unknown
  } catch {
    throw fail('not-json')
  }
}
