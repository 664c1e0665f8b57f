/**
 * Small encodings several modules share: the SHA-256 digests used for keys, ids and bindings (hex
 * and base64url), and the RFC 6749 §2.3.1 Basic credentials of an OAuth client. Pure functions;
 * no policy.
 * @module
 */
import { createHash, type Hash } from 'node:crypto'

/**
 * Lowercase SHA-256 hex of a text's UTF-8 bytes, exactly as given (no case folding, no
 * normalisation), or of raw bytes.
 */
export function sha256Hex(data: string | Uint8Array): string {
  return digest(data).digest('hex')
}

/** SHA-256 base64url (no padding) of a text's UTF-8 bytes: derived store ids and cache keys. */
export function sha256Base64url(text: string): string {
  return digest(text).digest('base64url')
}

function digest(data: string | Uint8Array): Hash {
  return typeof data === 'string' ? createHash('sha256').update(data, 'utf8') : createHash('sha256').update(data)
}

/**
 * The base64 part of `Authorization: Basic` for an OAuth client: id and secret are each
 * `application/x-www-form-urlencoded` first, as RFC 6749 §2.3.1 requires (and openid-client's
 * `ClientSecretBasic` does).
 */
export function basicClientCredentials(clientId: string, clientSecret: string): string {
  return Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')
}

function formEncode(v: string): string {
  return new URLSearchParams({ v }).toString().slice(2)
}
