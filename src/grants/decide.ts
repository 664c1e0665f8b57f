/**
 * The authorization decision for `USE CONNECTION`: pure, default-deny, and explicit about which
 * rule allowed a call so the audit line can name it. Precedence: ownership, then the first
 * grant (in file order) whose principal is the caller or one of its groups. A principal matches
 * by kind and name: a grant to user `etl-bot` never reaches service principal `etl-bot`, nor the
 * reverse. A service principal never uses a per-user connection (it has no account of its own to
 * consent with). Knows nothing of HTTP, MCP or credentials.
 * @module
 */
import type { Connection, Grant } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import type { Caller } from '../identity/caller.js'

export type Decision =
  | { readonly effect: 'allow'; readonly via: 'owner' | 'grant'; readonly principal: Principal }
  | { readonly effect: 'deny'; readonly reason: 'no-grant' | 'needs-person' }

/** Whether `principal` names this caller directly (user, service principal) or through one of its groups. */
export function isPrincipal(caller: Caller, principal: Principal): boolean {
  if ('user' in principal) return caller.kind === 'user' && principal.user === caller.user
  if ('servicePrincipal' in principal) return caller.kind === 'service_principal' && principal.servicePrincipal === caller.user
  return caller.groups.has(principal.group)
}

export function decide(caller: Caller, connection: Connection, grants: readonly Grant[]): Decision {
  if (caller.kind === 'service_principal' && connection.auth.type === 'oauth_u2m_per_user') return { effect: 'deny', reason: 'needs-person' }
  if (isPrincipal(caller, connection.owner)) return { effect: 'allow', via: 'owner', principal: connection.owner }
  for (const g of grants) {
    if (g.on === connection.name && isPrincipal(caller, g.to)) return { effect: 'allow', via: 'grant', principal: g.to }
  }
  return { effect: 'deny', reason: 'no-grant' }
}

/** `user alice@example.com` / `group data-engineering` / `service principal etl-bot`: how a principal reads in messages and audit lines. */
export function describePrincipal(p: Principal): string {
  if ('user' in p) return `user ${p.user}`
  if ('group' in p) return `group ${p.group}`
  return `service principal ${p.servicePrincipal}`
}
