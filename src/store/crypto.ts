/**
 * The store's keyring: parses `store.encryptionKey` / `store.encryptionKeys` (base64 of exactly 32
 * bytes), names every key by a key id, and performs AES-256-GCM with associated data. New writes
 * use the current key; reads accept any key in the ring, found by the key id carried in the
 * record. Raw key bytes stay inside this module's closures: they are never properties, never
 * printed, and never part of an error message. The record envelope is `sealed.ts`'s business.
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { sha256Hex } from '../encoding.js'
import { AppError } from '../errors.js'
import type { Secret } from '../secret.js'

/** AES-256 needs exactly 32 key bytes (`openssl rand -base64 32`). */
export const STORE_KEY_BYTES = 32
/** 96-bit IVs are the GCM default (NIST SP 800-38D §8.2); a fresh random one per seal. */
export const GCM_IV_BYTES = 12
/** Full 128-bit tags; shorter tags are refused on decrypt (Node accepts them unless told not to). */
export const GCM_TAG_BYTES = 16
/** 16 hex chars = 64 bits of SHA-256: enough to tell keys apart, too short to matter for a 256-bit key. */
const KEY_ID_HEX_CHARS = 16

const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+)$/

/** How to obtain the keys; mirrors `ConfigSnapshot.store`. */
export interface KeyringOptions {
  /** `store.encryptionKey`: seals every new write. */
  readonly current: Secret | undefined
  /** `store.encryptionKeys`: older keys, used only to open records they sealed. */
  readonly previous: readonly Secret[]
  /** `store.dangerouslyUseEphemeralKey`: with no current key, make a random one for this process. */
  readonly dangerouslyUseEphemeralKey: boolean
  /** Called once, loudly, when the ephemeral key is in use. */
  readonly warn: (message: string) => void
}

/** Why a decrypt failed; kept as `detail.reason` on the `STORE_UNAVAILABLE` error. */
export type DecryptFailure = 'unknown-key-id' | 'authentication-failed'

export type DecryptResult = { readonly ok: true; readonly plaintext: Buffer } | { readonly ok: false; readonly reason: DecryptFailure }

/** An AES-256-GCM keyring. Key bytes are not reachable from it. */
export interface Keyring {
  /** The key id new writes are sealed with. */
  readonly currentKeyId: string
  /** Every key id that can open a record, current first. */
  readonly keyIds: readonly string[]
  /** Encrypts with the current key and a fresh random IV; `ciphertext` ends with the 16-byte tag. */
  encrypt(plaintext: Uint8Array, aad: Uint8Array): { readonly keyId: string; readonly iv: Buffer; readonly ciphertext: Buffer }
  /** Decrypts with the key named by `keyId`; any mismatch (tag, AAD, key) is a failure, never partial output. */
  decrypt(keyId: string, iv: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): DecryptResult
}

/**
 * The id of a key: the first 16 hex chars of SHA-256 over the raw key bytes, so an operator can
 * tell which key sealed a record: `printf %s "$KEY" | base64 -d | sha256sum | cut -c1-16`.
 */
export function keyIdOf(key: Uint8Array): string {
  return sha256Hex(key).slice(0, KEY_ID_HEX_CHARS)
}

/**
 * Decodes a store key: standard or URL-safe base64 (padding optional, surrounding whitespace
 * ignored) of exactly 32 bytes. The error names `setting` and never the value.
 * @throws AppError `CONFIG_INVALID`
 */
export function parseStoreKey(secret: Secret, setting: string): Buffer {
  const text = secret.reveal().trim()
  const bytes = BASE64_PATTERN.test(text) ? Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64') : undefined
  if (bytes === undefined || bytes.length !== STORE_KEY_BYTES) {
    const got = bytes === undefined ? 'is not base64' : `decodes to ${bytes.length} bytes`
    throw new AppError('CONFIG_INVALID', `${setting} must be base64 of exactly ${STORE_KEY_BYTES} bytes (openssl rand -base64 32); it ${got}`, {
      detail: { setting },
    })
  }
  return bytes
}

/**
 * Builds the keyring from config. No current key is a config error (with the command that makes
 * one) unless `dangerouslyUseEphemeralKey` is set, which makes a random key and warns once.
 * @throws AppError `CONFIG_INVALID` for a missing or malformed key
 */
export function createKeyring(opts: KeyringOptions): Keyring {
  let current: Buffer
  if (opts.current !== undefined) {
    current = parseStoreKey(opts.current, 'store.encryptionKey')
  } else if (opts.dangerouslyUseEphemeralKey) {
    current = randomBytes(STORE_KEY_BYTES)
    opts.warn(
      'store.dangerouslyUseEphemeralKey is true: stored tokens and flows are sealed with a random key that dies with this process, ' +
        'so every one of them becomes unreadable after a restart (development only; set store.encryptionKey instead)',
    )
  } else {
    throw new AppError(
      'CONFIG_INVALID',
      'store.encryptionKey is not set: tokens are stored encrypted; make a key with `openssl rand -base64 32` and reference it as store.encryptionKey: { env: KEYWAY_ENCRYPTION_KEY }',
      { detail: { setting: 'store.encryptionKey' } },
    )
  }
  const keys = new Map<string, Buffer>()
  const currentKeyId = keyIdOf(current)
  keys.set(currentKeyId, current)
  opts.previous.forEach((secret, i) => {
    const bytes = parseStoreKey(secret, `store.encryptionKeys[${i}]`)
    const id = keyIdOf(bytes)
    const known = keys.get(id)
    if (known !== undefined && !known.equals(bytes)) {
      // 64-bit ids: a clash between different keys is astronomically unlikely, but never guess.
      throw new AppError('CONFIG_INVALID', `store.encryptionKeys[${i}] has the same key id as another key; make a new key`, {
        detail: { setting: `store.encryptionKeys[${i}]` },
      })
    }
    keys.set(id, bytes)
  })
  const keyIds = Object.freeze([...keys.keys()])

  const keyring: Keyring = {
    currentKeyId,
    keyIds,
    encrypt(plaintext, aad) {
      const iv = randomBytes(GCM_IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', current, iv, { authTagLength: GCM_TAG_BYTES })
      cipher.setAAD(aad)
      const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
      return { keyId: currentKeyId, iv, ciphertext: body }
    },
    decrypt(keyId, iv, ciphertext, aad) {
      const key = keys.get(keyId)
      if (key === undefined) return { ok: false, reason: 'unknown-key-id' }
      if (iv.length !== GCM_IV_BYTES || ciphertext.length < GCM_TAG_BYTES) return { ok: false, reason: 'authentication-failed' }
      const tagAt = ciphertext.length - GCM_TAG_BYTES
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: GCM_TAG_BYTES })
        decipher.setAAD(aad)
        decipher.setAuthTag(ciphertext.subarray(tagAt))
        const plaintext = Buffer.concat([decipher.update(ciphertext.subarray(0, tagAt)), decipher.final()])
        return { ok: true, plaintext }
      } catch {
        return { ok: false, reason: 'authentication-failed' }
      }
    },
  }
  Object.defineProperty(keyring, Symbol.for('nodejs.util.inspect.custom'), {
    value: () => `Keyring(current ${currentKeyId}, ${keyIds.length} key${keyIds.length === 1 ? '' : 's'})`,
  })
  return Object.freeze(keyring)
}
