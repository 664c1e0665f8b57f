/**
 * Revoking stored credentials (`keyway credentials revoke`): for each matching token, ask the
 * provider to revoke it when it has a revocation endpoint (RFC 7009, the refresh token first,
 * which ends the grant, then the access token), then delete the record whatever the provider
 * said, and audit it. A connection no longer in the config, or one whose record does not open,
 * is deleted locally only, and the result says so. Never returns or prints a token.
 * @module
 */
import type { AuditLog } from '../audit/audit-log.js'
import type { ConfigSnapshot } from '../config/load.js'
import { hasReason, isAppError } from '../errors.js'
import type { TokenRecord, TokenRef, TokenStore } from '../store/index.js'
import type { OAuthClients } from '../credentials/oauth-client.js'

/** What happened at the provider for one token. */
export type ProviderRevocation =
  | {
      readonly kind: 'revoked'
      /** What the provider revoked. */
      readonly tokens: readonly ('refresh_token' | 'access_token')[]
      /** What it answered `unsupported_token_type` for (RFC 7009 §2.2.1), e.g. JWT access tokens. */
      readonly unsupported: readonly ('refresh_token' | 'access_token')[]
    }
  | { readonly kind: 'no-endpoint' }
  | { readonly kind: 'not-in-config' }
  | { readonly kind: 'failed'; readonly message: string }

export interface RevokeResult {
  readonly ref: TokenRef
  readonly provider: ProviderRevocation
  readonly deleted: boolean
}

export interface RevokeDeps {
  readonly store: TokenStore
  readonly clients: OAuthClients
  readonly audit: AuditLog
}

/**
 * Revokes every stored token of `connection` (optionally of one user). Records are collected
 * first, then each is revoked and deleted.
 * @throws AppError `STORE_UNAVAILABLE` when the store fails or a record does not open
 */
export async function revokeCredentials(deps: RevokeDeps, snapshot: ConfigSnapshot, connection: string, user?: string): Promise<RevokeResult[]> {
  const found: { ref: TokenRef; record: TokenRecord }[] = []
  for await (const item of deps.store.listTokens({ connection, ...(user === undefined ? {} : { user }) })) found.push(item)
  const results: RevokeResult[] = []
  for (const { ref, record } of found) {
    const provider = await revokeAtProvider(deps, snapshot, ref, record)
    const deleted = await deps.store.deleteToken(ref)
    deps.audit.record({
      type: 'credential.revoked',
      connection: ref.connection,
      ...(ref.user === null ? {} : { user: ref.user }),
      authMethod: record.method,
      ...(provider.kind === 'revoked' ? {} : { reason: provider.kind === 'failed' ? 'provider revocation failed' : provider.kind }),
    })
    results.push({ ref, provider, deleted })
  }
  return results
}

async function revokeAtProvider(deps: RevokeDeps, snapshot: ConfigSnapshot, ref: TokenRef, record: TokenRecord): Promise<ProviderRevocation> {
  const connection = snapshot.connections.get(ref.connection)
  if (!connection || connection.auth.type === 'bearer_token') return { kind: 'not-in-config' }
  try {
    const client = await deps.clients.get(connection)
    if (!client.revocationEndpoint) return { kind: 'no-endpoint' }
    const tokens: ('refresh_token' | 'access_token')[] = []
    const unsupported: ('refresh_token' | 'access_token')[] = []
    const attempt = async (token: string, hint: 'refresh_token' | 'access_token'): Promise<void> => {
      try {
        if (await client.revoke(token, hint)) tokens.push(hint)
      } catch (e) {
        if (hasReason(e, 'CREDENTIAL_UNAVAILABLE', 'unsupported_token_type')) unsupported.push(hint)
        else throw e
      }
    }
    if (record.refreshToken !== undefined) await attempt(record.refreshToken, 'refresh_token')
    await attempt(record.accessToken, 'access_token')
    return { kind: 'revoked', tokens, unsupported }
  } catch (e) {
    return { kind: 'failed', message: isAppError(e) ? e.message : 'unexpected failure' }
  }
}
