/**
 * The one OAuth redirect URI Keyway uses with every provider (design.md §1): exact string,
 * compared by providers character for character (RFC 9700 §4.1.3).
 * @module
 */

export const CALLBACK_PATH = '/login/oauth/http.html'

export function redirectUri(publicUrl: string): string {
  return `${publicUrl.replace(/\/+$/, '')}${CALLBACK_PATH}`
}
