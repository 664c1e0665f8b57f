/**
 * Wiring for start-up: turns the config's `store` settings into an open token store. The keyring
 * is built first, so a missing or malformed key fails before any file or connection is opened.
 * This module holds no state and makes no decision the modules it calls do not already make.
 * @module
 */
import type { Secret } from '../secret.js'
import { createBackend, type BackendOptions } from './backend.js'
import { createKeyring } from './crypto.js'
import { createTokenStore, type TokenStore } from './token-store.js'

/** The `store` part of a `ConfigSnapshot`. */
export interface StoreSettings {
  readonly url: string
  readonly password?: Secret | undefined
  /** Sentinel AUTH (`store.sentinelPassword`); only `redis+sentinel://` uses it. */
  readonly sentinelPassword?: Secret | undefined
  readonly encryptionKey: Secret | undefined
  readonly encryptionKeys: readonly Secret[]
  readonly dangerouslyUseEphemeralKey: boolean
}

export interface OpenTokenStoreOptions {
  /** Receives the one loud warning of `dangerouslyUseEphemeralKey`, and the store's warnings (an unreplicated token write). */
  readonly warn: (message: string) => void
  readonly now?: () => number
  readonly namespace?: string
  readonly backend?: BackendOptions
}

/**
 * Opens the store the settings describe.
 * @throws AppError `CONFIG_INVALID` for a missing or malformed key or an unusable `store.url`
 * @throws AppError `STORE_UNAVAILABLE` when a SQLite file cannot be opened (Redis connects lazily)
 */
export async function openTokenStore(settings: StoreSettings, opts: OpenTokenStoreOptions): Promise<TokenStore> {
  const keyring = createKeyring({
    current: settings.encryptionKey,
    previous: settings.encryptionKeys,
    dangerouslyUseEphemeralKey: settings.dangerouslyUseEphemeralKey,
    warn: opts.warn,
  })
  const backend = await createBackend(settings.url, {
    ...opts.backend,
    ...(opts.now === undefined ? {} : { now: opts.now }),
    ...(settings.password === undefined ? {} : { password: settings.password }),
    ...(settings.sentinelPassword === undefined ? {} : { sentinelPassword: settings.sentinelPassword }),
    warn: opts.backend?.warn ?? opts.warn,
  })
  return createTokenStore(backend, keyring, {
    ...(opts.now === undefined ? {} : { now: opts.now }),
    ...(opts.namespace === undefined ? {} : { namespace: opts.namespace }),
  })
}
