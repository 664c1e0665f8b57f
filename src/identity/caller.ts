/**
 * Who is calling: the one shape every identity source (API key, OIDC access token, the stdio
 * user) produces and every policy decision consumes. Built only by the identity modules.
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import { ACCOUNT_USERS_GROUP } from '../config/load.js'

export type IdentitySource = 'api_key' | 'oidc' | 'stdio'

export interface Caller {
  /** The user id grants and tokens are keyed by (an email or the IdP's subject). */
  readonly user: string
  /** Config groups, groups of the API key or token claim, and `account users`. */
  readonly groups: ReadonlySet<string>
  readonly via: IdentitySource
  readonly scopes: readonly string[]
  /** The groups the credential itself carried (API key entry, token claim), kept to rebuild `groups` on another snapshot. */
  readonly credentialGroups: readonly string[]
}

/** Builds a caller, merging the config's groups for this user with the groups the credential carried. */
export function createCaller(
  snapshot: ConfigSnapshot,
  user: string,
  via: IdentitySource,
  extraGroups: readonly string[] = [],
  scopes: readonly string[] = [],
): Caller {
  const groups = new Set<string>([ACCOUNT_USERS_GROUP, ...(snapshot.groupsOf.get(user) ?? []), ...extraGroups])
  return Object.freeze({ user, groups, via, scopes: Object.freeze([...scopes]), credentialGroups: Object.freeze([...extraGroups]) })
}

/**
 * The same caller as seen by another snapshot: config group memberships are read again (a group
 * edit applies to calls still in flight), what the credential carried stays.
 */
export function rebaseCaller(caller: Caller, snapshot: ConfigSnapshot): Caller {
  return createCaller(snapshot, caller.user, caller.via, caller.credentialGroups, caller.scopes)
}
