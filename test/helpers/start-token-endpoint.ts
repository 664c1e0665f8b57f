/**
 * A tiny, permissive OAuth token endpoint on 127.0.0.1 that records exactly what it receives
 * (the Authorization header and the form body), for the cases a strict server cannot show: what
 * `header_and_body` puts on the wire, discovery metadata with a chosen
 * `token_endpoint_auth_methods_supported`, and a token endpoint that fails or hangs on demand.
 * It issues opaque tokens `tok-<n>` (or unsigned JWTs with an `exp`, on demand) and checks
 * nothing, except in rotation mode: there it honours `refresh_token` grants the way a strict
 * provider does (each refresh token works once and is replaced; presenting a used one revokes the
 * whole grant, RFC 9700 §4.14.2). Tests only; never beyond loopback.
 * @module
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RecordedTokenRequest {
  readonly authorization: string | undefined
  readonly body: URLSearchParams
}

/**
 * `ok`: issue tokens; `fail`: 503 `temporarily_unavailable`; `hang`: never answer; `hold`: answer
 * as `ok` once `release()` is called (a slow token endpoint the test controls); `echo`: 400
 * `invalid_client` whose `error_description` quotes the Authorization header and the form body
 * it received (a careless provider, for redaction tests).
 */
export type TokenEndpointMode = 'ok' | 'fail' | 'hang' | 'hold' | 'echo'

export interface TokenEndpoint extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`: also the issuer of the discovery document. */
  readonly issuer: string
  readonly tokenUrl: string
  readonly requests: RecordedTokenRequest[]
  /** Serve `/.well-known/openid-configuration` with these extra fields (undefined: 404). */
  setMetadata(extra: Readonly<Record<string, unknown>> | undefined): void
  setMode(mode: TokenEndpointMode): void
  /** Answers every request held in `hold` mode, and goes back to `ok`. */
  release(): void
  /** Resolves once a token request is being held (`hold` mode). */
  held(): Promise<void>
  /** Lifetime of the next tokens, seconds (default 600). */
  setExpiresIn(seconds: number): void
  /**
   * Issued access tokens are `<prefix><n>` (default `tok-`), and the granted `scope` (default
   * `api:read`). With `jwtExpIn` (seconds; `undefined` turns it off) they are unsigned JWTs whose
   * `exp` is that far from the moment they are issued.
   */
  setIssue(opts: { readonly prefix?: string; readonly scope?: string; readonly jwtExpIn?: number | undefined }): void
  /**
   * Rotation mode: `refresh_token` grants accept only the live refresh token (first `initial`),
   * answer with a new one `<initial>-r<n>`, and a used one revokes the grant for good
   * (`invalid_grant` from then on). `undefined` turns rotation off.
   */
  setRotation(initial: string | undefined): void
  /** Rotation mode: whether a used refresh token was presented (and the grant revoked). */
  reuseDetected(): boolean
  close(): Promise<void>
}

export async function startTokenEndpoint(): Promise<TokenEndpoint> {
  const requests: RecordedTokenRequest[] = []
  let metadata: Readonly<Record<string, unknown>> | undefined
  let mode: TokenEndpointMode = 'ok'
  let expiresIn = 600
  let issued = 0
  let prefix = 'tok-'
  let scope = 'api:read'
  let jwtExpIn: number | undefined
  let issuer = ''
  let live: string | undefined
  let initialRefresh = ''
  let rotations = 0
  const used = new Set<string>()
  let revoked = false
  const hanging = new Set<ServerResponse>()
  const holding: (() => void)[] = []
  let onHeld: (() => void) | undefined

  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    res.end(JSON.stringify(body))
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = new URL(req.url ?? '/', issuer).pathname
      if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
        if (!metadata) return json(res, 404, { error: 'not_found' })
        return json(res, 200, { issuer, token_endpoint: `${issuer}/token`, ...metadata })
      }
      if (req.method === 'POST' && path === '/token') {
        requests.push({ authorization: req.headers.authorization, body: new URLSearchParams(Buffer.concat(chunks).toString('utf8')) })
        if (mode === 'hang') {
          hanging.add(res)
          return
        }
        if (mode === 'fail') return json(res, 503, { error: 'temporarily_unavailable' })
        if (mode === 'echo')
          return json(res, 400, {
            error: 'invalid_client',
            error_description: `got authorization ${req.headers.authorization ?? '-'} and body ${Buffer.concat(chunks).toString('utf8')}`,
          })
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
        const issue = (): void => {
          issued++
          let refresh: { refresh_token?: string } = {}
          if (live !== undefined && form.get('grant_type') === 'refresh_token') {
            const presented = form.get('refresh_token') ?? ''
            if (used.has(presented)) revoked = true
            if (revoked || presented !== live) return json(res, 400, { error: 'invalid_grant', error_description: 'refresh token is not valid' })
            used.add(presented)
            live = `${initialRefresh}-r${++rotations}`
            refresh = { refresh_token: live }
          }
          const access =
            jwtExpIn === undefined
              ? `${prefix}${issued}`
              : `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: prefix, n: issued, exp: Math.floor(Date.now() / 1000) + jwtExpIn })).toString('base64url')}.`
          json(res, 200, { access_token: access, token_type: 'Bearer', expires_in: expiresIn, scope, ...refresh })
        }
        if (mode === 'hold') {
          holding.push(issue)
          onHeld?.()
          return
        }
        return issue()
      }
      json(res, 404, { error: 'not_found' })
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const close = (): Promise<void> =>
    new Promise((r) => {
      for (const h of hanging) h.destroy()
      server.closeAllConnections()
      server.close(() => r())
    })
  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    requests,
    setMetadata: (m) => {
      metadata = m
    },
    setMode: (m) => {
      mode = m
    },
    release: () => {
      mode = 'ok'
      for (const issue of holding.splice(0)) issue()
    },
    held: () =>
      holding.length > 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            onHeld = () => {
              onHeld = undefined
              resolve()
            }
          }),
    setExpiresIn: (s) => {
      expiresIn = s
    },
    setIssue: (o) => {
      prefix = o.prefix ?? prefix
      scope = o.scope ?? scope
      if ('jwtExpIn' in o) jwtExpIn = o.jwtExpIn
    },
    setRotation: (initial) => {
      live = initial
      initialRefresh = initial ?? ''
      rotations = 0
      used.clear()
      revoked = false
    },
    reuseDetected: () => revoked,
    close,
    [Symbol.asyncDispose]: close,
  }
}
