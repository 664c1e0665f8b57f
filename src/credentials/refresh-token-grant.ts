/**
 * The `obtain` step both u2m methods give the refresher (design.md §8): redeem the stored refresh
 * token for a new record at the provider. With no refresh token to redeem, the stored token is
 * served until it really expires, then `REAUTHORIZATION_REQUIRED` (`no-refresh-token`) says a
 * person must sign in again. What "no stored token at all" means (consent, or a sign-in by the
 * owner) stays the method's own: it passes `missing`.
 * @module
 */
import type { Connection } from '../config/load.js'
import { AppError } from '../errors.js'
import type { TokenMethod, TokenRecord } from '../store/index.js'
import type { OAuthClient } from './oauth-client.js'
import { isUsable } from './refresh.js'
import { recordFromTokenSet } from './token-record.js'

export interface RefreshTokenGrant {
  readonly connection: Connection
  readonly method: Extract<TokenMethod, 'oauth_u2m_per_user' | 'oauth_u2m_shared'>
  readonly clients: { get(connection: Connection): Promise<Pick<OAuthClient, 'refresh'>> }
  readonly now: () => number
  /** The error for "no stored token" (the refresher calls `obtain` with none only when `missing` was not thrown before). */
  readonly missing: () => AppError
}

/** The `obtain` of a u2m `FreshTokenRequest`: the refreshed record, or the stored one while it lasts. */
export function refreshTokenGrant(g: RefreshTokenGrant): (current: TokenRecord | undefined) => Promise<TokenRecord> {
  return async (current) => {
    if (!current) throw g.missing()
    if (!current.refreshToken) {
      // Nothing to renew with: serve the token until it really expires, then ask for a sign-in.
      if (isUsable(current, g.now())) return current
      throw new AppError('REAUTHORIZATION_REQUIRED', 'the access token expired and the provider issued no refresh token', {
        detail: { connection: g.connection.name, reason: 'no-refresh-token' },
      })
    }
    const set = await (await g.clients.get(g.connection)).refresh(current.refreshToken)
    return recordFromTokenSet(set, { method: g.method, now: g.now(), previous: current })
  }
}
