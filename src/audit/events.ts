/**
 * The audit event vocabulary (design.md §10): one discriminated union, dotted lowercase types.
 * Fields are facts an auditor needs; no event carries a secret, token, code or query value.
 * @module
 */
import type { AuthType } from '../config/schema.js'
import type { IdentitySource } from '../identity/caller.js'
import type { StopReason } from '../shutdown.js'

export interface ToolCallEvent {
  readonly type: 'tool.call'
  /** The calling user; a service principal is named in `servicePrincipal` instead, never here. */
  readonly user?: string
  readonly servicePrincipal?: string
  readonly via: IdentitySource
  readonly connection: string
  /** The upstream's own tool name, on a `protocol: mcp` connection (method is then `tools/call` and path empty). */
  readonly tool?: string
  readonly method: string
  /** The path under basePath, without query. */
  readonly path: string
  readonly decision: 'allow' | 'deny'
  /** What allowed the call: `owner`, or `grant to group data-engineering`. */
  readonly rule?: string
  readonly authMethod?: AuthType
  readonly status?: number
  readonly error?: string
  /** Occurrences of the call's own secrets replaced in what the upstream answered; absent when none. */
  readonly redacted?: number
  /**
   * Set when the call did not run to its end: `draining` (refused during shutdown, nothing sent),
   * `shutdown` (aborted when the drain time was up), `cancelled` (the client cancelled it).
   */
  readonly stopped?: StopReason
  readonly durationMs: number
}

export interface ConsentEvent {
  readonly type: 'consent.started' | 'consent.granted' | 'consent.failed' | 'consent.account_mismatch'
  readonly user: string
  readonly connection: string
  /** The provider account that signed in (email, else subject), when the provider named it. */
  readonly providerAccount?: string
  /** `consent.account_mismatch`: the provider account `auth.accountMatch` asked for, in words. */
  readonly expected?: string
  readonly reason?: string
  readonly scopes?: string
  readonly warning?: string
}

export interface CredentialEvent {
  readonly type: 'credential.obtained' | 'credential.refreshed' | 'credential.refresh_failed' | 'credential.revoked'
  readonly connection: string
  readonly user?: string
  readonly authMethod: AuthType
  readonly reason?: string
  readonly warning?: string
}

export interface ConfigEvent {
  readonly type: 'config.reloaded' | 'config.rejected'
  readonly file: string
  readonly problems?: number
  readonly connections?: number
  readonly grants?: number
}

export interface GrantEvent {
  readonly type: 'grant.changed'
  readonly statement: string
  readonly file: string
}

export type AuditEvent = ToolCallEvent | ConsentEvent | CredentialEvent | ConfigEvent | GrantEvent
export type AuditEventType = AuditEvent['type']
