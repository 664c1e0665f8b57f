/**
 * What Keyway remembers about a user's MCP client, for asking consent the way the client
 * understands (design.md §7 step 2; the choice itself is `mcp/consent.ts`'s), and the key that
 * signs the `requestState` of a consent question.
 *
 * - A 2025-era HTTP client is served per request, so the server never sees its `initialize`; the
 *   app records, per user, whether the user's last `initialize` declared URL elicitation (and the
 *   client's name), in the store with a TTL, so any replica recalls it. Two facts, never a token.
 * - The `requestState` HMAC key is derived with HKDF from `store.encryptionKey`, so every replica
 *   verifies what another one minted.
 * @module
 */
import { hkdfSync, randomBytes } from 'node:crypto'
import * as z from 'zod'
import { sha256Base64url } from '../encoding.js'
import { errorMessage, type Logger } from '../log.js'
import type { Secret } from '../secret.js'
import { parseStoreKey, type TokenStore } from '../store/index.js'

/**
 * How long what a user's last 2025-era `initialize` declared is remembered. 2025-era clients
 * initialize once per connection and may stay connected for days; a client not seen for a week
 * no longer decides how the user is asked.
 */
export const CLIENT_CAPABILITIES_TTL_MS = 7 * 24 * 60 * 60_000
/** HKDF `info`: the requestState HMAC key is never the store's AES key itself (domain separation). */
const REQUEST_STATE_KEY_INFO = 'keyway/mcp/requestState/v1'
/** Longest client name kept (it is shown in logs only). */
const CLIENT_NAME_MAX_CHARS = 200

const ClientCapabilitiesRecordSchema = z.strictObject({
  purpose: z.literal('client-capabilities'),
  elicitationUrl: z.boolean(),
  clientName: z.string().max(CLIENT_NAME_MAX_CHARS).optional(),
  at: z.number().int().nonnegative(),
})

/** What a 2025-era `initialize` declared, as far as consent cares. */
export interface InitializeFacts {
  /** `capabilities.elicitation.url` was declared. */
  readonly elicitationUrl: boolean
  readonly clientName?: string | undefined
}

/**
 * Where a user's last 2025-era `initialize` is remembered: derived from the user id (hashed, as
 * every store key is), so any replica finds it. It holds two facts, never a token.
 */
export function clientCapabilitiesRecordId(user: string): string {
  return sha256Base64url(`keyway:client-capabilities\u0000${user}`)
}

/**
 * The HMAC key of `requestState`: HKDF-SHA256 (RFC 5869) of `store.encryptionKey`, so every
 * replica sharing the store derives the same key. Without a configured key (the store's
 * `dangerouslyUseEphemeralKey`), a random per-process key, like the store's own.
 */
export function requestStateKey(settings: { readonly encryptionKey: Secret | undefined }): Uint8Array {
  if (!settings.encryptionKey) return randomBytes(32)
  const ikm = parseStoreKey(settings.encryptionKey, 'store.encryptionKey')
  return new Uint8Array(hkdfSync('sha256', ikm, Buffer.alloc(0), REQUEST_STATE_KEY_INFO, 32))
}

export interface ClientMemory {
  /** Records what a user's 2025-era `initialize` declared. Never throws: a store failure only means the plain link is used. */
  remember(user: string, facts: InitializeFacts): Promise<void>
  /** Whether the user's last recorded `initialize` declared URL elicitation; false when unknown or unreadable. */
  recallUrlElicitation(user: string): Promise<boolean>
}

export function createClientMemory(deps: { readonly store: TokenStore; readonly log: Logger; readonly now: () => number }): ClientMemory {
  return {
    async remember(user, facts) {
      const clientName = facts.clientName?.slice(0, CLIENT_NAME_MAX_CHARS)
      try {
        await deps.store.putTicket(
          clientCapabilitiesRecordId(user),
          { purpose: 'client-capabilities', elicitationUrl: facts.elicitationUrl, ...(clientName === undefined ? {} : { clientName }), at: deps.now() },
          CLIENT_CAPABILITIES_TTL_MS,
        )
      } catch (e) {
        deps.log.warn('client capabilities not recorded; this user gets the plain consent link', { error: errorMessage(e) })
      }
    },
    async recallUrlElicitation(user) {
      try {
        const r = ClientCapabilitiesRecordSchema.safeParse(await deps.store.getTicket(clientCapabilitiesRecordId(user)))
        return r.success && r.data.elicitationUrl
      } catch (e) {
        deps.log.warn('client capabilities not readable; using the plain consent link', { error: errorMessage(e) })
        return false
      }
    },
  }
}
