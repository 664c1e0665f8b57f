/**
 * Small encodings several modules share: the SHA-256 hex digest used for keys and bindings, and
 * the RFC 6749 §2.3.1 Basic credentials of an OAuth client. Pure functions; no policy.
 * @module
 */
import { createHash } from 'node:crypto'

/** Lowercase SHA-256 hex of the UTF-8 bytes, exactly as given (no case folding, no normalisation). */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
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
