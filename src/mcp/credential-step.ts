/**
 * The credential step every upstream request shares, a tool call's (HTTP or MCP) and an MCP
 * catalog's listing alike: resolve the credential for the connection, check the grant again on
 * the live config, send within the connection's in-flight limits, and on an upstream 401 make one
 * forced refresh and one retry. It decides no grant itself (the orchestrator passes the check in)
 * and reads no answer beyond "was it a 401".
 * @module
 */
import type { Connection } from '../config/load.js'
import type { Credential, CredentialProvider } from '../credentials/credential.js'
import type { ConcurrencyLimiter } from '../egress/limits.js'
import { describeCaller, type Caller } from '../identity/caller.js'

/** How sending ended: the upstream's answer, a grant revoked meanwhile, or a consent still missing. */
export type Sent<T> =
  | { readonly kind: 'sent'; readonly value: T }
  | { readonly kind: 'revoked' }
  | { readonly kind: 'consent-required'; readonly url: string; readonly flowId: string; readonly connection: Connection }

/** Whose credential for which connection, and what the step checks around it. */
export interface CredentialSession {
  readonly credentials: CredentialProvider
  readonly caller: Caller
  readonly connection: Connection
  /** The in-flight limits of tool calls (`UPSTREAM_BUSY` over them); left out, none (a catalog's listing). */
  readonly limits?: ConcurrencyLimiter
  /** Told the secrets of each credential used, for redaction. */
  readonly onCredential?: (secrets: readonly string[]) => void
  /** The grant check, run again after every wait; left out, always allowed. */
  readonly stillAllowed?: () => boolean
}

/**
 * The credential step every upstream request shares: resolve the credential, check the grant
 * again, send within the connection's in-flight limits, and on an upstream 401 make one forced
 * refresh and one retry, never a loop. At most one forced refresh per credential per cooldown
 * across replicas (design.md §8): the same credential back means none was made, and the
 * upstream's 401 is the answer.
 */
export async function withCredential<T>(
  s: CredentialSession,
  send: (authorization: string) => Promise<T>,
  unauthorized: (answer: T) => boolean,
): Promise<Sent<T>> {
  const { credentials, caller, connection } = s
  const allowed = (): boolean => s.stillAllowed?.() ?? true
  if (!allowed()) return { kind: 'revoked' }
  let credential: Credential = await credentials.resolve(connection, caller)
  if (!allowed()) return { kind: 'revoked' }
  if (credential.kind === 'consent-required') return { ...credential, connection }
  s.onCredential?.(credential.secrets)
  // Fails fast with UPSTREAM_BUSY over the connection's or the caller's in-flight limit.
  const release = s.limits?.acquire(connection, describeCaller(caller))
  try {
    let answer = await send(credential.authorization)
    if (unauthorized(answer) && credential.refreshable) {
      const refused = credential.authorization
      credential = await credentials.resolve(connection, caller, { forceRefresh: true, rejectedAuthorization: refused })
      if (credential.kind === 'consent-required') return { ...credential, connection }
      if (credential.authorization === refused) return { kind: 'sent', value: answer }
      if (!allowed()) return { kind: 'revoked' }
      s.onCredential?.(credential.secrets)
      answer = await send(credential.authorization)
    }
    return { kind: 'sent', value: answer }
  } finally {
    release?.()
  }
}
