/**
 * What the orchestrator gets back when it asks for a connection's credential: either the
 * header to inject, or the fact that the caller must first connect their own account. Failures
 * (not signed in, revoked grant, store down, provider refusing) are thrown as `AppError`.
 * @module
 */
import type { Connection } from '../config/load.js'
import type { Caller } from '../identity/caller.js'

export type Credential =
  | {
      readonly kind: 'ready'
      /** The value of the `Authorization` header sent upstream. */
      readonly authorization: string
      /** Whether a forced refresh could produce a different token (OAuth methods). */
      readonly refreshable: boolean
      /**
       * Every secret this credential is made of (the token, a refresh token, the client secret):
       * whatever the upstream answers is redacted of them before the caller sees it (`redact.ts`).
       */
      readonly secrets: readonly string[]
    }
  | {
      readonly kind: 'consent-required'
      /** `<publicUrl>/connect/<flowId>`: the link the person opens. */
      readonly url: string
      readonly flowId: string
    }

export interface ResolveOptions {
  /**
   * Ignore a cached access token and refresh (after an upstream 401), at most once per cooldown
   * (design.md §8); within it the same credential comes back and the 401 stands.
   */
  readonly forceRefresh?: boolean
  /** With `forceRefresh`: the `Authorization` value the upstream refused; a stored token other than it is used without a refresh. */
  readonly rejectedAuthorization?: string
}

export interface CredentialProvider {
  resolve(connection: Connection, caller: Caller, opts?: ResolveOptions): Promise<Credential>
}
