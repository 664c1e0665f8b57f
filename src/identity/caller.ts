/**
 * Who is calling: the one shape every identity source (API key, OIDC access token, the stdio
 * user) produces and every policy decision consumes. Built only by the identity modules. A caller
 * is a person (`user`) or a service principal (a client acting for nobody, README "Service
 * principals"); the two kinds never match each other's grants, whatever the names.
 * @module
 */
import type { ConfigSnapshot } from '../config/load.js'
import { ACCOUNT_USERS_GROUP } from '../config/load.js'
import { FrozenSet } from '../readonly-collections.js'

export type IdentitySource = 'api_key' | 'oidc' | 'stdio'

/** A person, or a service principal mapped from a client in `identity.oidc.servicePrincipals`. */
export type CallerKind = 'user' | 'service_principal'

export interface Caller {
  readonly kind: CallerKind
  /**
   * The user id grants and tokens are keyed by (an email or the IdP's subject); for a service
   * principal, its name. Anything keyed by this value must look at `kind` too (`callerKey`).
   */
  readonly user: string
  /** Config groups, groups of the API key or token claim, and `account users` (users only); a `FrozenSet`, so it cannot change. */
  readonly groups: ReadonlySet<string>
  readonly via: IdentitySource
  readonly scopes: readonly string[]
  /** The groups the credential itself carried (API key entry, token claim), kept to rebuild `groups` on another snapshot. */
  readonly credentialGroups: readonly string[]
}

/** Builds a user caller, merging the config's groups for this user with the groups the credential carried. */
export function createCaller(
  snapshot: ConfigSnapshot,
  user: string,
  via: IdentitySource,
  extraGroups: readonly string[] = [],
  scopes: readonly string[] = [],
): Caller {
  const groups = new FrozenSet<string>([ACCOUNT_USERS_GROUP, ...(snapshot.groupsOf.get(user) ?? []), ...extraGroups])
  return Object.freeze({ kind: 'user', user, groups, via, scopes: Object.freeze([...scopes]), credentialGroups: Object.freeze([...extraGroups]) })
}

/**
 * Builds a service principal caller. Its groups are only those `identity.oidc.servicePrincipals`
 * gives it: not `account users` (a grant meant for every person must not reach machines) and
 * not the `groups` section, which lists users.
 */
export function createServicePrincipalCaller(snapshot: ConfigSnapshot, name: string, via: IdentitySource, scopes: readonly string[] = []): Caller {
  const groups = new FrozenSet<string>(snapshot.identity.servicePrincipals.get(name) ?? [])
  return Object.freeze({ kind: 'service_principal', user: name, groups, via, scopes: Object.freeze([...scopes]), credentialGroups: Object.freeze([]) })
}

/**
 * The same caller as seen by another snapshot: config group memberships are read again (a group
 * edit applies to calls still in flight), what the credential carried stays.
 */
export function rebaseCaller(caller: Caller, snapshot: ConfigSnapshot): Caller {
  if (caller.kind === 'service_principal') return createServicePrincipalCaller(snapshot, caller.user, caller.via, caller.scopes)
  return createCaller(snapshot, caller.user, caller.via, caller.credentialGroups, caller.scopes)
}

/** `user alice@example.com` / `service principal etl-bot`: how a caller reads in messages and logs. */
export function describeCaller(caller: Caller): string {
  return caller.kind === 'service_principal' ? `service principal ${caller.user}` : `user ${caller.user}`
}

/** A key that tells a user and a service principal of the same name apart, for caches. */
export function callerKey(caller: Caller): string {
  return `${caller.kind}\u0000${caller.user}`
}
