/**
 * The authorization decision for `USE CONNECTION`: pure, default-deny, and explicit about which
 * rule allowed a call so the audit line can name it. Precedence: ownership, then the first
 * grant (in file order) whose principal is the caller or one of its groups. Knows nothing of
 * HTTP, MCP or credentials.
 * @module
 */
import type { Connection, Grant } from '../config/load.js'
import type { Principal } from '../config/schema.js'
import type { Caller } from '../identity/caller.js'

export type Decision =
  | { readonly effect: 'allow'; readonly via: 'owner' | 'grant'; readonly principal: Principal }
  | { readonly effect: 'deny'; readonly reason: 'no-grant' }

/** Whether `principal` names this caller directly (user) or through one of its groups. */
export function isPrincipal(caller: Caller, principal: Principal): boolean {
  return 'user' in principal ? principal.user === caller.user : caller.groups.has(principal.group)
}

export function decide(caller: Caller, connection: Connection, grants: readonly Grant[]): Decision {
  if (isPrincipal(caller, connection.owner)) return { effect: 'allow', via: 'owner', principal: connection.owner }
  for (const g of grants) {
    if (g.on === connection.name && isPrincipal(caller, g.to)) return { effect: 'allow', via: 'grant', principal: g.to }
  }
  return { effect: 'deny', reason: 'no-grant' }
}

/** `user alice@example.com` / `group data-engineering`: how a principal reads in messages and audit lines. */
export function describePrincipal(p: Principal): string {
  return 'user' in p ? `user ${p.user}` : `group ${p.group}`
}
