/**
 * The token store's public surface: open a backend from `store.url`, build the keyring from the
 * `store` settings, and create the typed store over both. Other modules import from here and
 * never reach into a backend, the envelope or the key schema directly, with one exception: the
 * config schema takes the `store.url` rules (`STORE_SCHEMES` of `backend.ts`, `redis-url.ts`)
 * from those pure leaves, since this index imports the schema (through `keys.ts`).
 * @module
 */
export { createBackend, type BackendKind, type BackendOptions, type LockHandle, type StoreBackend } from './backend.js'
export { createKeyring, keyIdOf, parseStoreKey, type Keyring, type KeyringOptions } from './crypto.js'
export { openTokenStore, type OpenTokenStoreOptions, type StoreSettings } from './open.js'
export { describeStoreUrl } from './redis-url.js'
export { createMemoryBackend, type MemoryBackend, type MemoryBackendOptions } from './memory-backend.js'
export {
  createTokenStore,
  isFlowId,
  newFlowId,
  tokenLockName,
  type TicketRecord,
  type ResealResult,
  type StateRecord,
  type TokenMethod,
  type TokenRecord,
  type TokenRef,
  type TokenStore,
  type TokenStoreOptions,
  type WithLockOptions,
} from './token-store.js'
