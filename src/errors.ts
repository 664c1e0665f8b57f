/**
 * The one error type of Keyway and its code registry. Every failure that can reach a caller
 * (a tool result, an HTTP answer, a CLI line) carries one of these codes; callers branch on
 * `code`, never on message text. This module decides nothing about transport: an error becomes
 * an answer in five places, one per kind of answer: tool results (`mcp/call-tool.ts`), HTTP
 * answers (`http/app.ts`), consent and sign-in pages (`consent/browser-flow.ts`), and CLI lines
 * (`tools/keyway.ts` for every subcommand, `tools/authorize.ts` and `tools/credentials.ts`
 * for their own failure line).
 * @module
 */

/** Codes a tool result may start with (design.md §6). They are a public contract. */
export const TOOL_ERROR_CODES = [
  'PERMISSION_DENIED',
  'CONSENT_REQUIRED',
  'NOT_AUTHORIZED',
  'REAUTHORIZATION_REQUIRED',
  'INVALID_REQUEST',
  'EGRESS_BLOCKED',
  'UPSTREAM_TIMEOUT',
  'UPSTREAM_UNAVAILABLE',
  'UPSTREAM_BUSY',
  'STORE_UNAVAILABLE',
  'CREDENTIAL_UNAVAILABLE',
] as const

/** Codes that stay inside Keyway or reach an administrator (CLI, logs, start-up). */
export const INTERNAL_ERROR_CODES = ['CONFIG_INVALID', 'IDENTITY_INVALID', 'FLOW_INVALID', 'INTERNAL'] as const

export type ToolErrorCode = (typeof TOOL_ERROR_CODES)[number]
export type AppErrorCode = ToolErrorCode | (typeof INTERNAL_ERROR_CODES)[number]

/** One-line meaning of every code; the README table is checked against this by a test. */
export const ERROR_CODE_MEANINGS: Readonly<Record<AppErrorCode, string>> = {
  PERMISSION_DENIED: 'the caller holds no USE CONNECTION grant on the connection',
  CONSENT_REQUIRED: 'the caller has not connected their own account yet; the message carries the link',
  NOT_AUTHORIZED: 'a shared OAuth connection has not been signed in by its owner (`keyway authorize`)',
  REAUTHORIZATION_REQUIRED: 'the stored grant was revoked or expired at the provider; sign in again',
  INVALID_REQUEST: 'the tool arguments are malformed (method, path, query, headers or body)',
  EGRESS_BLOCKED: 'the request would leave the connection (host, base path, address class) and was refused',
  UPSTREAM_TIMEOUT: 'the external API did not answer within the timeout',
  UPSTREAM_UNAVAILABLE: 'the external API could not be reached, or Keyway is shutting down (`server shutting down`: retry, another replica answers)',
  UPSTREAM_BUSY: 'the connection, or this caller on it, already has as many requests in flight as its limit allows; retry after a moment',
  STORE_UNAVAILABLE: 'the token store failed or holds a record that does not decrypt; nothing was assumed',
  CREDENTIAL_UNAVAILABLE: "the provider's token endpoint refused or failed to issue a credential",
  CONFIG_INVALID: 'the config file has problems; each is reported as file:line path: problem',
  IDENTITY_INVALID: 'the caller could not be authenticated',
  FLOW_INVALID: 'a consent or sign-in link is unknown, expired, already used or opened by another user',
  INTERNAL: 'an unexpected failure; details are in the server log',
}

export type ErrorDetail = Readonly<Record<string, string | number | boolean>>

export class AppError extends Error {
  readonly code: AppErrorCode
  readonly detail: ErrorDetail | undefined

  constructor(code: AppErrorCode, message: string, opts: { cause?: unknown; detail?: ErrorDetail } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'AppError'
    this.code = code
    this.detail = opts.detail
  }

  /** Whether the message may be shown to the caller as it is (all tool codes are written for the model). */
  get expose(): boolean {
    return (TOOL_ERROR_CODES as readonly string[]).includes(this.code) || this.code === 'FLOW_INVALID'
  }
}

export function isAppError(e: unknown, code?: AppErrorCode): e is AppError {
  return e instanceof AppError && (code === undefined || e.code === code)
}
