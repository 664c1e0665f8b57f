/**
 * Asks the authorization server whether an opaque access token is live (RFC 7662 token
 * introspection), authenticating as Keyway's introspection client with `client_secret_basic`.
 * It returns the raw response; `oidc.ts` decides what is acceptable. The token goes only into the
 * request body to the issuer's own endpoint, and into no error message.
 * @module
 */
import { basicClientCredentials } from '../encoding.js'
import { AppError } from '../errors.js'
import type { Secret } from '../secret.js'

/** Per request; a slow issuer must not hold MCP requests for long. */
export const INTROSPECTION_TIMEOUT_MS = 5_000

/**
 * POSTs `token` with `token_type_hint=access_token` and returns the JSON object the server
 * answered. Throws `AppError('IDENTITY_INVALID')` when the call fails or the answer is not 200 JSON.
 * @see https://www.rfc-editor.org/rfc/rfc7662#section-2
 */
export async function introspectToken(
  endpoint: URL,
  token: string,
  client: { readonly clientId: string; readonly clientSecret: Secret },
  fetchImpl: typeof fetch,
): Promise<Readonly<Record<string, unknown>>> {
  // RFC 6749 §2.3.1: form-urlencode both parts before base64, as openid-client's ClientSecretBasic does.
  const basic = basicClientCredentials(client.clientId, client.clientSecret.reveal())
  let res: Response
  try {
    res = await fetchImpl(endpoint, {
      method: 'POST',
      headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
      redirect: 'manual',
      signal: AbortSignal.timeout(INTROSPECTION_TIMEOUT_MS),
    })
  } catch (e) {
    throw new AppError('IDENTITY_INVALID', 'token introspection request failed', { cause: e })
  }
  if (res.status !== 200) {
    await res.body?.cancel()
    throw new AppError('IDENTITY_INVALID', `token introspection answered ${res.status}`, { detail: { status: res.status } })
  }
  let body: unknown
  try {
    body = await res.json()
  } catch (e) {
    throw new AppError('IDENTITY_INVALID', 'token introspection answer is not json', { cause: e })
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new AppError('IDENTITY_INVALID', 'token introspection answer is not a json object')
  return body as Readonly<Record<string, unknown>>
}
