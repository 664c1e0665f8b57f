/**
 * The credential step every upstream request of a tool call shares, whether the upstream speaks
 * HTTP or MCP: resolve the caller's credential for the connection, check the grant again on the
 * live config, send within the connection's in-flight limits, and on an upstream 401 make one
 * forced refresh and one retry. It decides no grant itself (the orchestrator passes the check in)
 * and reads no answer beyond "was it a 401".
 * @module
 */
import type { Connection } from '../config/load.js'
import type { Credential } from '../credentials/credential.js'
import { describeCaller, type Caller } from '../identity/caller.js'
import type { CallDeps } from './call-tool.js'

/** How sending ended: the upstream's answer, a grant revoked meanwhile, or a consent still missing. */
export type Sent<T> =
  | { readonly kind: 'sent'; readonly value: T }
  | { readonly kind: 'revoked' }
  | { readonly kind: 'consent-required'; readonly url: string; readonly flowId: string; readonly connection: Connection }

/** One call's caller, connection and grant check, as the credential step needs them. */
export interface CredentialSession {
  readonly deps: CallDeps
  readonly caller: Caller
  readonly connection: Connection
  /** Shutdown (at the end of the drain) and the call's own cancellation both cut the upstream request. */
  readonly signals: readonly AbortSignal[]
  readonly onCredential: (secrets: readonly string[]) => void
  readonly stillAllowed: () => boolean
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
  const { deps, caller, connection } = s
  if (!s.stillAllowed()) return { kind: 'revoked' }
  let credential: Credential = await deps.credentials.resolve(connection, caller)
  if (!s.stillAllowed()) return { kind: 'revoked' }
  if (credential.kind === 'consent-required') return { ...credential, connection }
  s.onCredential(credential.secrets)
  // Fails fast with UPSTREAM_BUSY over the connection's or the caller's in-flight limit.
  const release = deps.limits.acquire(connection, describeCaller(caller))
  try {
    let answer = await send(credential.authorization)
    if (unauthorized(answer) && credential.refreshable) {
      const refused = credential.authorization
      credential = await deps.credentials.resolve(connection, caller, { forceRefresh: true, rejectedAuthorization: refused })
      if (credential.kind === 'consent-required') return { ...credential, connection }
      if (credential.authorization === refused) return { kind: 'sent', value: answer }
      if (!s.stillAllowed()) return { kind: 'revoked' }
      s.onCredential(credential.secrets)
      answer = await send(credential.authorization)
    }
    return { kind: 'sent', value: answer }
  } finally {
    release()
  }
}
