/**
 * The store's key schema (docs/storage-schema.md): every key Keyway writes is built here and
 * nowhere else. Keys never carry a token, a flow id or a user id in clear: user ids and flow ids
 * are SHA-256 hashed, lock names too. Connection names are used as they are because the config
 * restricts them to `^[A-Za-z0-9_-]{1,64}$` (no `:`), which keeps the segments unambiguous: two
 * different (connection, user) pairs can never map to one key.
 * @module
 */
import { CONNECTION_NAME_PATTERN } from '../config/schema.js'
import { sha256Hex } from '../encoding.js'
import { AppError } from '../errors.js'

/** The first segment of every key unless a store is given another (tests use one per run). */
export const DEFAULT_NAMESPACE = 'keyway'

/** Same rule as the config's connection names (design.md §2). */
export { CONNECTION_NAME_PATTERN }
const NAMESPACE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

/** The user segment of a shared (one per connection) token. Never a hash: hashes start with `u`. */
export const SHARED_USER_SEGMENT = 'shared'

/** Which credential a token belongs to; `user: null` is the one shared token of a connection. */
export interface TokenRef {
  readonly connection: string
  readonly user: string | null
}

export { sha256Hex }

/** @throws AppError `INTERNAL` when the namespace is not a single safe segment (a programming error) */
export function assertNamespace(namespace: string): void {
  if (!NAMESPACE_PATTERN.test(namespace)) {
    throw new AppError('INTERNAL', 'store namespace must match ^[A-Za-z0-9_-]{1,64}$')
  }
}

/** @throws AppError `INTERNAL` for a connection name outside the config's pattern or an empty user id */
export function assertTokenRef(ref: TokenRef): void {
  if (typeof ref.connection !== 'string' || !CONNECTION_NAME_PATTERN.test(ref.connection)) {
    throw new AppError('INTERNAL', 'token ref connection must match ^[A-Za-z0-9_-]{1,64}$')
  }
  if (ref.user !== null && (typeof ref.user !== 'string' || ref.user.length === 0)) {
    throw new AppError('INTERNAL', 'token ref user must be a non-empty string or null', { detail: { connection: ref.connection } })
  }
}

/**
 * The user segment: `shared` for `null`, else `u` + SHA-256 hex of the user id. Users that differ
 * only in case or Unicode normalisation are different users here; the identity layer decides
 * whether to normalise before calling the store.
 */
export function userSegment(user: string | null): string {
  return user === null ? SHARED_USER_SEGMENT : `u${sha256Hex(user)}`
}

/** Prefix of every token key of the namespace (optionally of one connection). */
export function tokenPrefix(namespace: string, connection?: string): string {
  return connection === undefined ? `${namespace}:tok:` : `${namespace}:tok:${connection}:`
}

/** `<ns>:tok:<connection>:<shared | u<sha256(user)>>` */
export function tokenKey(namespace: string, ref: TokenRef): string {
  assertTokenRef(ref)
  return `${tokenPrefix(namespace, ref.connection)}${userSegment(ref.user)}`
}

/**
 * `<ns>:flow:<sha256(id)>`: a ticket's key (the `flow` prefix is the stored format, kept). A ticket
 * id such as a consent link's flow id is a bearer secret, so it is hashed.
 */
export function ticketKey(namespace: string, id: string): string {
  return `${namespace}:flow:${sha256Hex(id)}`
}

/** `<ns>:lock:<sha256(name)>`: lock names may carry anything; the key never does. */
export function lockKey(namespace: string, name: string): string {
  return `${namespace}:lock:${sha256Hex(name)}`
}

/**
 * `<ns>:state:<sha256(name)>`: small TTL'd state replicas share (e.g. a credential's refresh
 * back-off); names may carry anything, the key never does.
 */
export function stateKey(namespace: string, name: string): string {
  return `${namespace}:state:${sha256Hex(name)}`
}

/** The lock name for "one refresh of this token at a time across replicas". */
export function tokenLockName(ref: TokenRef): string {
  assertTokenRef(ref)
  return `refresh:${ref.connection}:${userSegment(ref.user)}`
}
