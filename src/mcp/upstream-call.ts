/**
 * The upstream half of a tool call on a `protocol: mcp` connection (design.md §12): `tools/call`
 * on the upstream MCP server with the caller's credential, behind the connection's circuit
 * breaker, and the answer as the caller sees it. The upstream's result passes through unchanged
 * (content, `structuredContent`, `isError`, `_meta`) except that every occurrence of the injected
 * credential is redacted and the upstream's own protocol envelope (`resultType`, its server
 * info) is dropped, since Keyway answers with its own. Relayed notifications are redacted the
 * same way. Grants, consent and audit stay with the orchestrator (`call-tool.ts`).
 * @module
 */
import type { Connection } from '../config/load.js'
import { AppError } from '../errors.js'
import { isRecord } from '../is-record.js'
import type { UpstreamAnswer } from '../mcp-upstream/client.js'
import { formsOf, redactJsonValue, type Forms } from '../redact.js'
import { oneLine } from '../safe-text.js'
import type { CallHooks, CallSession, UpstreamCalls } from './call-tool.js'
import { withCredential, type Sent } from './credential-step.js'
import { toolError, type ToolResult } from './tool-result.js'

/** `_meta` key of the upstream's own server info on 2026-07-28 results; Keyway's replaces it. */
const SERVER_INFO_META_KEY = 'io.modelcontextprotocol/serverInfo'
/** Longest upstream error message passed on (one line). */
const MAX_ERROR_CHARS = 500

/**
 * Calls one upstream tool. An open breaker refuses before any credential is resolved; network
 * failures, 5xx answers and answers that are not MCP count against it, every other answer (a
 * result, a JSON-RPC error, a 4xx) shows the upstream is alive.
 */
export async function callUpstreamTool(
  session: CallSession,
  upstream: UpstreamCalls,
  upstreamName: string,
  args: Record<string, unknown> | undefined,
  hooks: CallHooks,
): Promise<Sent<UpstreamAnswer>> {
  const { connection } = session
  upstream.breakers.check(connection.name)
  // The secrets of the credential in use, to redact relayed notifications as the result is.
  let forms: Forms | undefined
  const tracked: CallSession = {
    ...session,
    onCredential: (secrets) => {
      forms = formsOf(secrets)
      session.onCredential?.(secrets)
    },
  }
  const onNotification = hooks.onNotification
  const send = async (authorization: string): Promise<UpstreamAnswer> => {
    try {
      const answer = await upstream.client.callTool({ connection, authorization }, upstreamName, args, {
        signals: session.signals,
        ...(hooks.meta ? { meta: hooks.meta } : {}),
        ...(onNotification
          ? {
              onNotification: (n) => {
                const params = n.params && forms ? (redactJsonValue(n.params, forms).value as Record<string, unknown>) : n.params
                onNotification(params ? { method: n.method, params } : { method: n.method })
              },
            }
          : {}),
      })
      if (answer.kind === 'http' && answer.status >= 500) upstream.breakers.failed(connection.name)
      else upstream.breakers.succeeded(connection.name)
      return answer
    } catch (e) {
      upstream.breakers.failed(connection.name)
      throw e
    }
  }
  return withCredential(tracked, send, (answer) => answer.kind === 'http' && answer.status === 401)
}

/** What the caller gets for the upstream's answer, the code of a failure, and how many secrets were redacted. */
export function upstreamResult(
  answer: UpstreamAnswer,
  connection: Connection,
  forms: Forms | undefined,
): { readonly result: ToolResult; readonly error?: string; readonly redacted: number } {
  const host = new URL(connection.origin).host
  switch (answer.kind) {
    case 'result': {
      if (answer.result.resultType === 'input_required')
        return failed('UPSTREAM_UNAVAILABLE', `the MCP server at ${host} asked for input during the call, which Keyway does not relay`)
      const shown = asToolResult(answer.result)
      if (!Array.isArray(shown.content)) return failed('UPSTREAM_UNAVAILABLE', `the MCP server at ${host} answered a tool result without content`)
      if (!forms) return { result: shown as unknown as ToolResult, redacted: 0 }
      const scrubbed = redactJsonValue(shown, forms)
      return { result: scrubbed.value as ToolResult, redacted: scrubbed.count }
    }
    case 'error': {
      const message = forms ? (redactJsonValue(answer.message, forms).value as string) : answer.message
      const said = `the MCP server at ${host} refused the call: ${oneLine(message, MAX_ERROR_CHARS)} (${answer.code})`
      // Invalid params (-32602) is about the arguments the model sent; anything else is the server's trouble.
      return failed(answer.code === -32602 ? 'INVALID_REQUEST' : 'UPSTREAM_UNAVAILABLE', said)
    }
    case 'http': {
      const said = `the MCP server at ${host} answered HTTP ${answer.status}`
      if (answer.status === 401 || answer.status === 403) return failed('CREDENTIAL_UNAVAILABLE', `${said}: it refused the connection's credential`)
      if (answer.status === 429) return failed('UPSTREAM_BUSY', `${said}: too many requests; retry after a moment`)
      return failed('UPSTREAM_UNAVAILABLE', said)
    }
    default: {
      const never: never = answer
      throw new AppError('INTERNAL', `unexpected upstream answer ${String(never)}`)
    }
  }
}

function failed(code: 'INVALID_REQUEST' | 'UPSTREAM_UNAVAILABLE' | 'UPSTREAM_BUSY' | 'CREDENTIAL_UNAVAILABLE', message: string) {
  return { result: toolError(code, message), error: code, redacted: 0 }
}

/**
 * The upstream's result without its protocol envelope (`resultType`, its own server info), its
 * members in the order the MCP SDK gives a tool result (`_meta`, `content`, `structuredContent`,
 * `isError`, then any other), so the fast path and the SDK path answer byte for byte alike.
 */
function asToolResult(result: Record<string, unknown>): Record<string, unknown> {
  const { resultType: _resultType, _meta: meta, content, structuredContent, isError, ...rest } = result
  let kept: Record<string, unknown> | undefined
  if (isRecord(meta)) {
    const { [SERVER_INFO_META_KEY]: _theirs, ...others } = meta
    if (Object.keys(others).length > 0) kept = others
  }
  return {
    ...(kept ? { _meta: kept } : {}),
    content,
    ...(structuredContent === undefined ? {} : { structuredContent }),
    ...(isError === undefined ? {} : { isError }),
    ...rest,
  }
}
