/**
 * The one error type of Keyway and its code registry. Every failure that can reach a caller
 * (a tool result, an HTTP answer, a CLI line) carries one of these codes; callers branch on
 * `code` (and on `detail.reason` through `hasReason`), never on message text. This module decides
 * nothing about transport: an error becomes an answer in five places, one per kind of answer:
 * tool results (`mcp/call-tool.ts`), HTTP answers (`http/error-answer.ts`, with the status of
 * each code from {@link HTTP_STATUS} here, so that every route answers a code alike), consent and
 * sign-in pages (`consent/browser-flow.ts`), and CLI lines (`tools/keyway.ts` for every
 * subcommand, `tools/authorize.ts` and `tools/credentials.ts` for their own failure line).
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
  INVALID_REQUEST: 'the tool arguments are malformed (method, path, query, headers or body), or an upstream MCP server refused them as invalid params',
  EGRESS_BLOCKED: 'the request would leave the connection (host, base path, address class) and was refused',
  UPSTREAM_TIMEOUT: 'the external API did not answer within the timeout',
  UPSTREAM_UNAVAILABLE:
    "the external API could not be reached or answered an error (including an upstream MCP server's error or open circuit), or Keyway is shutting down (`server shutting down`: retry, another replica answers)",
  UPSTREAM_BUSY:
    'the connection, or this caller on it, already has as many requests in flight as its limit allows, or an upstream MCP server answered 429; retry after a moment',
  STORE_UNAVAILABLE: 'the token store failed or holds a record that does not decrypt; nothing was assumed',
  CREDENTIAL_UNAVAILABLE:
    "the provider's token endpoint refused or failed to issue a credential, or an upstream MCP server refused the injected one (HTTP 401/403)",
  CONFIG_INVALID: 'the config file has problems; each is reported as file:line path: problem',
  IDENTITY_INVALID: 'the caller could not be authenticated',
  FLOW_INVALID: 'a consent or sign-in link is unknown, expired, already used or opened by another user',
  INTERNAL: 'an unexpected failure; details are in the server log',
}

/**
 * A code or name that came from outside Keyway (a provider's OAuth error, a network error code),
 * carried as `detail.reason` as it was received. Branded so that only `externalReason` makes one:
 * a mistyped literal never passes for it.
 */
export type ExternalReason = string & { readonly __externalReason: true }

/** Marks a string received from a provider or the network as an {@link ExternalReason}. */
export function externalReason(s: string): ExternalReason {
  return s as ExternalReason
}

/** OAuth error codes Keyway branches on or names (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8707). */
type OAuthErrorReason =
  | 'invalid_grant'
  | 'invalid_client'
  | 'invalid_request'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'unsupported_token_type'

/**
 * Every `detail.reason` an error of each code may carry. Code that branches on a reason does so
 * through {@link hasReason}, so a reason not listed here fails to compile, where it is made and
 * where it is tested. `never`: the code carries no reason.
 */
interface ReasonsByCode {
  PERMISSION_DENIED: never
  /** Why the caller must consent (`credentials/oauth-u2m-per-user.ts`). */
  CONSENT_REQUIRED: 'no-token' | 'invalid_grant' | 'no-refresh-token' | 'reauthorization-required'
  NOT_AUTHORIZED: never
  /** `invalid_grant`: the provider refused the refresh token; `no-refresh-token`: none to renew with. */
  REAUTHORIZATION_REQUIRED: 'invalid_grant' | 'no-refresh-token'
  /** undici's code for a header or body it refuses. */
  INVALID_REQUEST: ExternalReason
  /** `egress/guard.ts` denials, `egress-blocked` from a token endpoint, an off-origin metadata endpoint. */
  EGRESS_BLOCKED: 'scheme' | 'bad-url' | 'host-not-allowed' | 'port-not-allowed' | 'private-address' | 'egress-blocked' | 'endpoint-off-issuer-origin'
  /** `deadline` (the request's own timeout) or the network's timeout code. */
  UPSTREAM_TIMEOUT: 'deadline' | ExternalReason
  /** `dns-failed`, `response-too-large`, `network-error` or the network's error code. */
  UPSTREAM_UNAVAILABLE: 'dns-failed' | 'response-too-large' | 'network-error' | ExternalReason
  UPSTREAM_BUSY: never
  /** Why a record did not open (`store/sealed.ts`, `store/token-store.ts`), or the lock and save failures. */
  STORE_UNAVAILABLE: 'malformed' | 'unknown-key-id' | 'authentication-failed' | 'not-json' | 'bad-payload' | 'lock-timeout' | 'lock-lost' | 'save-abandoned'
  /** The provider's OAuth error, or what went wrong around the token request (`credentials/oauth-client.ts`, `refresh.ts`). */
  CREDENTIAL_UNAVAILABLE:
    | OAuthErrorReason
    | 'backoff'
    | 'token-endpoint-slow'
    | 'no-token-endpoint'
    | 'insecure-endpoint'
    | 'endpoint-off-issuer-origin'
    | 'timeout'
    | 'unreachable'
    | 'bad-response'
    | 'issuer-mismatch'
    | 'invalid-response'
    | 'client-error'
    | 'challenge'
    | 'unexpected'
    | ExternalReason
  CONFIG_INVALID: never
  IDENTITY_INVALID: 'endpoint-off-issuer-origin'
  /** A flow record that does not fit, a connection gone or changed, or the provider's refusal at the callback. */
  FLOW_INVALID: 'wrong-record' | 'connection-gone' | 'connection-changed' | 'invalid_grant' | 'response-mismatch' | 'invalid-response' | ExternalReason
  INTERNAL: never
}

/** The reasons an error of code `C` may carry (a union of `C`s gives the union of their reasons). */
export type ReasonOf<C extends AppErrorCode> = C extends AppErrorCode ? ReasonsByCode[C] : never

/** `detail` of an error of code `C`: flat fields, and `reason` one of {@link ReasonOf}<C>. */
export type ErrorDetail<C extends AppErrorCode = AppErrorCode> = Readonly<Record<string, string | number | boolean>> & { readonly reason?: ReasonOf<C> }

/** The statuses an `AppError` is answered with over HTTP. */
export type ErrorStatus = 400 | 401 | 403 | 429 | 500 | 502 | 503 | 504

/**
 * The HTTP status of each code, for the routes that answer an `AppError` as JSON (`http/error-answer.ts`).
 * Tool results over MCP do not use it: there an error is a result with `isError`. Codes that are
 * not exposed (`CONFIG_INVALID`, `INTERNAL`) are answered as a bare 500 whatever caused them.
 */
export const HTTP_STATUS: Readonly<Record<AppErrorCode, ErrorStatus>> = {
  PERMISSION_DENIED: 403,
  CONSENT_REQUIRED: 403,
  NOT_AUTHORIZED: 403,
  REAUTHORIZATION_REQUIRED: 403,
  INVALID_REQUEST: 400,
  EGRESS_BLOCKED: 403,
  UPSTREAM_TIMEOUT: 504,
  UPSTREAM_UNAVAILABLE: 502,
  UPSTREAM_BUSY: 429,
  STORE_UNAVAILABLE: 503,
  CREDENTIAL_UNAVAILABLE: 502,
  CONFIG_INVALID: 500,
  IDENTITY_INVALID: 401,
  FLOW_INVALID: 400,
  INTERNAL: 500,
}

/** Status of a call stopped because Keyway is shutting down (`detail.stopped`, `shutdown.ts`): retry elsewhere. */
export const SHUTTING_DOWN_STATUS: ErrorStatus = 503

export class AppError<C extends AppErrorCode = AppErrorCode> extends Error {
  readonly code: C
  readonly detail: ErrorDetail<C> | undefined

  constructor(code: C, message: string, opts: { cause?: unknown; detail?: ErrorDetail<C> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'AppError'
    this.code = code
    this.detail = opts.detail
  }

  /** Whether the message may be shown to the caller as it is (all tool codes are written for the model). */
  get expose(): boolean {
    return (TOOL_ERROR_CODES as readonly string[]).includes(this.code) || this.code === 'FLOW_INVALID'
  }

  /** The HTTP status of this error: {@link HTTP_STATUS}, except 503 for a call stopped by a shutdown. */
  get httpStatus(): ErrorStatus {
    const stopped = this.detail?.['stopped']
    if (this.code === 'UPSTREAM_UNAVAILABLE' && (stopped === 'draining' || stopped === 'shutdown')) return SHUTTING_DOWN_STATUS
    return HTTP_STATUS[this.code]
  }
}

export function isAppError<C extends AppErrorCode>(e: unknown, code?: C): e is AppError<C> {
  return e instanceof AppError && (code === undefined || e.code === code)
}

/** Whether `e` is an `AppError` of `code` whose `detail.reason` is `reason`; both are checked at compile time. */
export function hasReason<C extends AppErrorCode>(e: unknown, code: C, reason: ReasonOf<C>): e is AppError<C> {
  return isAppError(e, code) && e.detail?.reason === reason
}
