/**
 * Builds what Keyway sends upstream from a tool call's arguments, and filters what comes back:
 * the outbound URL (connection origin + `basePath` + the tool's relative `path` + `query`), the
 * caller's extra request headers, and the response headers the model may see (design.md §9).
 * The tool's arguments are never concatenated into a URL that is then resolved: every rule
 * below is checked on the raw text first, and the built URL is checked again against the
 * configured origin and base path. Pure functions: no I/O, no DNS, no credential; the
 * credential is added later by the orchestrator and can never be replaced by a caller header.
 * @module
 * @see https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
 */

/** The methods a tool call may use (design.md §6). */
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** One query parameter value; an array repeats the key (`?a=1&a=2`). */
export type QueryValue = string | number | boolean | readonly (string | number | boolean)[]

export type BuildUrlResult = { readonly ok: true; readonly url: URL } | { readonly ok: false; readonly reason: string }

export type HeaderFilterResult = { readonly ok: true; readonly headers: Record<string, string> } | { readonly ok: false; readonly reason: string }

/** Longest tool `path` accepted (8 KiB): longer paths are abuse or a mistake, and many servers refuse them anyway. */
export const MAX_PATH_LENGTH = 8192
/** Most extra headers a caller may pass; the tool schema does not bound the record. */
export const MAX_CALLER_HEADERS = 64
/** Longest caller header value (8 KiB), in line with common server limits per field. */
export const MAX_HEADER_VALUE_LENGTH = 8192

// C0 controls and DEL, raw. The WHATWG parser silently strips tab and newlines from URLs, so
// a control character can change what a path means between check and use.
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/
// `%` followed by two hex digits that decode to `/`, `\` or a control character.
const ENCODED_SEPARATOR = /%(2f|5c)/i
const ENCODED_CONTROL = /%([01][0-9a-f]|7f)/i
const PERCENT_TRIPLET = /%[0-9a-f]{2}/gi
const BAD_PERCENT = /%(?![0-9a-f]{2})/i
// RFC 3986 §3.1: a scheme followed by `:` in the first segment makes the reference absolute.
const SCHEME_PREFIX = /^[a-z][a-z0-9+.-]*:/i

/**
 * The upstream URL for a tool call: `target.origin` + `target.basePath` + `path` (relative to
 * `basePath`; a leading `/` is optional) + `query`. Refuses, with a lowercase reason naming
 * the rule, anything that could leave the origin or the base path, or that an upstream might
 * decode differently from us:
 *
 * - a path longer than {@link MAX_PATH_LENGTH}; any backslash (WHATWG treats `\` as `/`);
 *   control characters, raw or percent-encoded (`%00`-`%1f`, `%7f`);
 * - `//` at the start (a network-path reference names another host, RFC 3986 §4.2), a scheme
 *   (`https://evil.com/x`), or `@` in the first segment (userinfo that could change authority);
 * - `?` or `#` (the query belongs in `query`; fragments are never sent);
 * - `.` and `..` segments, also percent-encoded (`%2e`, `.%2E`) and with `;params`
 *   (`..;`), even when they would resolve inside `basePath` (RFC 3986 §5.2.4 remove_dot_segments
 *   runs in the WHATWG parser and may run again upstream);
 * - encoded separators `%2f`/`%5c`, double encoding of any of the above (`%252e`), and
 *   malformed percent-encoding.
 *
 * Other characters are percent-encoded by the URL parser (spaces, non-ASCII). The built URL
 * must then have exactly `target.origin` (so `origin` must be in `URL.origin` form) and a
 * pathname under `target.basePath`. Query values are appended with `URLSearchParams`.
 * @see https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4
 * @see https://url.spec.whatwg.org/#path-state
 */
export function buildUpstreamUrl(
  target: { readonly origin: string; readonly basePath: string },
  path: string,
  query?: Readonly<Record<string, QueryValue>>,
): BuildUrlResult {
  const refused = checkPath(path)
  if (refused !== undefined) return { ok: false, reason: refused }
  const relative = path.startsWith('/') ? path.slice(1) : path
  let url: URL
  try {
    url = new URL(target.origin + target.basePath + relative)
  } catch {
    return { ok: false, reason: 'path does not form a valid url' }
  }
  if (query !== undefined) {
    const params = new URLSearchParams()
    for (const key of Object.keys(query)) {
      const value = query[key]
      if (value === undefined) continue
      if (typeof value === 'object') for (const v of value) params.append(key, String(v))
      else params.append(key, String(value))
    }
    const search = params.toString()
    if (search !== '') url.search = search
  }
  // Defence in depth: whatever the checks above missed, the result must stay where it belongs.
  if (url.origin !== target.origin || url.username !== '' || url.password !== '') return { ok: false, reason: 'path would leave the connection origin' }
  if (!url.pathname.startsWith(target.basePath)) return { ok: false, reason: 'path would leave the connection base path' }
  return { ok: true, url }
}

function checkPath(path: string): string | undefined {
  if (path.length > MAX_PATH_LENGTH) return `path is longer than ${MAX_PATH_LENGTH} characters`
  if (path.includes('\\')) return 'path must not contain a backslash'
  if (CONTROL_CHAR.test(path)) return 'path must not contain control characters'
  if (path.startsWith('//')) return 'path must not start with // (it would name another host)'
  if (SCHEME_PREFIX.test(path)) return 'path must be relative, not an absolute url (scheme:); start it with / if a segment contains a colon'
  if (path.includes('?') || path.includes('#')) return 'path must not contain ? or # (put query parameters in query)'
  const first = path.startsWith('/') ? path.slice(1) : path
  const firstEnd = first.indexOf('/')
  if ((firstEnd === -1 ? first : first.slice(0, firstEnd)).includes('@')) return 'path must not have @ in its first segment (userinfo could change the host)'
  if (path.includes('%')) {
    if (BAD_PERCENT.test(path)) return 'path has a malformed percent-encoding'
    if (ENCODED_SEPARATOR.test(path)) return 'path must not contain encoded slashes or backslashes (%2f, %5c)'
    if (ENCODED_CONTROL.test(path)) return 'path must not contain encoded control characters'
    // One decode of %25 (an encoded "%") must not reveal another encoded dot, separator or control.
    const once = decodeTriplets(path)
    if (/%(2e|2f|5c|[01][0-9a-f]|7f)/i.test(once)) return 'path must not contain double percent-encoding of dots, separators or controls'
  }
  for (const segment of first.split('/')) {
    if (isDotSegment(segment)) return 'path must not contain . or .. segments, also not percent-encoded (rfc 3986 §5.2.4)'
  }
  return undefined
}

/** `.`, `..`, `%2e`, `.%2E`, … and the same followed by `;params` (which some servers strip). */
function isDotSegment(segment: string): boolean {
  if (segment === '' || segment.length > 64) return false
  const semi = segment.indexOf(';')
  const bare = (semi === -1 ? segment : segment.slice(0, semi)).replace(/%2e/gi, '.')
  return bare === '.' || bare === '..'
}

/** Decodes `%XX` triplets to single characters (one level), leaving everything else alone. */
function decodeTriplets(s: string): string {
  return s.replace(PERCENT_TRIPLET, (t) => String.fromCharCode(Number.parseInt(t.slice(1), 16)))
}

/** One caller request header Keyway never forwards: `name` exactly, or every name starting with `prefix`. */
export type DroppedHeader = ({ readonly name: string } | { readonly prefix: string }) & { readonly reason: string }

/**
 * Caller request headers Keyway drops, whatever their case, each with the reason; the README
 * "The tool" section renders this table and a test holds the two together. Credentials,
 * framing and routing are Keyway's to set: a caller must never replace the injected credential,
 * smuggle a request, pretend to be a proxy hop or a client address, or make an upstream
 * framework run another method or path than the one Keyway checked.
 */
export const DROPPED_REQUEST_HEADERS: readonly DroppedHeader[] = [
  { name: 'authorization', reason: 'the injected credential is the only one; a caller cannot replace it' },
  { name: 'proxy-authorization', reason: 'a credential for a proxy' },
  { name: 'cookie', reason: 'a session credential' },
  { name: 'set-cookie', reason: 'a response field; a session credential' },
  { name: 'host', reason: "routing: the connection's host decides" },
  { name: 'connection', reason: 'hop-by-hop (RFC 9110 §7.6.1); it could name and remove the injected credential' },
  { name: 'keep-alive', reason: 'hop-by-hop (RFC 9110 §7.6.1)' },
  { name: 'te', reason: 'hop-by-hop (RFC 9110 §7.6.1)' },
  { name: 'trailer', reason: 'hop-by-hop (RFC 9110 §7.6.1)' },
  { name: 'transfer-encoding', reason: 'framing: request smuggling' },
  { name: 'upgrade', reason: 'hop-by-hop (RFC 9110 §7.6.1); switches protocols' },
  { name: 'proxy-connection', reason: 'hop-by-hop, non-standard' },
  { name: 'content-length', reason: 'framing: the HTTP client computes it (request smuggling)' },
  { name: 'expect', reason: 'the HTTP client refuses it' },
  { name: 'accept-encoding', reason: 'Keyway asks for an uncompressed answer, which redaction reads byte by byte' },
  { name: 'forwarded', reason: 'proxy chain and client address (RFC 7239) that upstreams trust for allowlists and rate limits' },
  { prefix: 'x-forwarded-', reason: 'proxy chain, client address, original host, scheme and port' },
  { name: 'via', reason: 'proxy chain' },
  { name: 'x-real-ip', reason: 'client address' },
  { name: 'x-client-ip', reason: 'client address' },
  { name: 'true-client-ip', reason: 'client address' },
  { name: 'cf-connecting-ip', reason: 'client address' },
  { name: 'fastly-client-ip', reason: 'client address' },
  { name: 'x-cluster-client-ip', reason: 'client address' },
  { name: 'x-host', reason: 'host override some frameworks honour' },
  { name: 'x-original-host', reason: 'host override some frameworks honour' },
  { name: 'x-http-method-override', reason: 'method override: a GET Keyway checked (readOnly) would run as another method' },
  { name: 'x-http-method', reason: 'method override' },
  { name: 'x-method-override', reason: 'method override' },
  { name: 'x-original-method', reason: 'method override' },
  { name: 'x-original-url', reason: 'URL rewrite (IIS, Symfony): a path outside basePath would be served' },
  { name: 'x-rewrite-url', reason: 'URL rewrite' },
  { name: 'x-original-uri', reason: 'URL rewrite' },
  { name: 'x-override-url', reason: 'URL rewrite' },
  { prefix: 'proxy-', reason: 'proxy credentials and hop-by-hop fields' },
]

const DROPPED_NAMES: ReadonlySet<string> = new Set(DROPPED_REQUEST_HEADERS.flatMap((h) => ('name' in h ? [h.name] : [])))
const DROPPED_PREFIXES: readonly string[] = DROPPED_REQUEST_HEADERS.flatMap((h) => ('prefix' in h ? [h.prefix] : []))

/** Whether Keyway drops a caller header of this (lowercase) name. */
export function isDroppedRequestHeader(lower: string): boolean {
  return DROPPED_NAMES.has(lower) || DROPPED_PREFIXES.some((p) => lower.startsWith(p))
}

// RFC 9110 §5.1 field-name = token; §5.6.2 tchar.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// RFC 9110 §5.5 field-value: VCHAR, SP, HTAB, obs-text. CR, LF and NUL above all (CVE-2023-23936).
const BAD_FIELD_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/

/**
 * The caller's extra request headers as Keyway will send them: names lowercased, and dropped
 * (case-insensitively) when {@link DROPPED_REQUEST_HEADERS} lists them: credentials, routing,
 * client addresses, framing, hop-by-hop fields (RFC 9110 §7.6.1), method overrides and URL
 * rewrites. A `Connection` header is dropped whole and never honoured, so it cannot remove the
 * injected credential.
 *
 * Refuses the whole set (a result, not a throw) when a name is not an RFC 9110 token, a value
 * holds CR, LF, NUL or another control character, the same name appears twice in different
 * case, or there are too many or too long headers. Reasons never contain a header value.
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-5.5
 */
export function filterCallerHeaders(headers: Readonly<Record<string, string>> | undefined): HeaderFilterResult {
  // Null prototype: a caller header named "__proto__" must stay an ordinary (dropped or kept) name.
  const out: Record<string, string> = Object.create(null) as Record<string, string>
  if (headers === undefined) return { ok: true, headers: out }
  const names = Object.keys(headers)
  if (names.length > MAX_CALLER_HEADERS) return { ok: false, reason: `at most ${MAX_CALLER_HEADERS} headers may be given` }
  const seen = new Set<string>()
  for (const name of names) {
    const value = headers[name]
    if (!TOKEN.test(name)) return { ok: false, reason: 'a header name is not a valid token (rfc 9110 §5.1)' }
    const lower = name.toLowerCase()
    if (typeof value !== 'string') return { ok: false, reason: `header "${lower}" must have a string value` }
    if (seen.has(lower)) return { ok: false, reason: `header "${lower}" is given more than once` }
    seen.add(lower)
    if (BAD_FIELD_VALUE.test(value)) return { ok: false, reason: `header "${lower}" has a value with CR, LF, NUL or another control character` }
    if (value.length > MAX_HEADER_VALUE_LENGTH) return { ok: false, reason: `header "${lower}" is longer than ${MAX_HEADER_VALUE_LENGTH} characters` }
    if (isDroppedRequestHeader(lower)) continue
    out[lower] = value
  }
  return { ok: true, headers: out }
}

// What reaches the model: enough to page, cache, follow up and back off; nothing that sets
// state in a client (Set-Cookie) or describes Keyway's or the upstream's internals.
const EXPOSED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'content-type',
  'content-length',
  'etag',
  'last-modified',
  'location',
  'link',
  'retry-after',
  'x-request-id',
  'ratelimit',
  'ratelimit-policy',
])
// `x-ratelimit-*` (GitHub, many others) and the IETF draft's `ratelimit-*` fields.
const EXPOSED_RESPONSE_PREFIXES = ['x-ratelimit-', 'ratelimit-'] as const

/**
 * The response headers a tool result shows (an allowlist, README "Security model"):
 * `content-type`, `content-length`, `etag`, `last-modified`, `location`, `link`, `retry-after`,
 * `x-request-id`, the rate-limit families `x-ratelimit-*` / `ratelimit-*`, and of
 * `www-authenticate` only the scheme and the RFC 6750 `error` code. Names come out lowercased;
 * `set-cookie`, `authorization` and everything else is dropped. The caller redacts the values.
 */
export function selectResponseHeaders(headers: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of Object.keys(headers)) {
    const value = headers[name]
    if (value === undefined) continue
    const lower = name.toLowerCase()
    if (lower === 'www-authenticate') {
      const challenge = reduceChallenge(value)
      if (challenge !== undefined) out[lower] = challenge
    } else if (EXPOSED_RESPONSE_HEADERS.has(lower) || EXPOSED_RESPONSE_PREFIXES.some((p) => lower.startsWith(p))) out[lower] = value
  }
  return out
}

const CHALLENGE_SCHEME = /^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32})/
const CHALLENGE_ERROR = /(?:^|[\s,])error\s*=\s*"?([\x21\x23-\x5B\x5D-\x7E]{1,64}?)"?(?=\s*(?:,|$))/i

/**
 * A challenge as the model may see it: the first scheme and its `error` code (RFC 6750 §3.1),
 * enough to tell an expired token from a missing scope. Realms, descriptions and `scope` lists
 * can quote the request (and so the credential) and are dropped.
 */
function reduceChallenge(value: string): string | undefined {
  const scheme = CHALLENGE_SCHEME.exec(value)?.[1]
  if (scheme === undefined) return undefined
  const error = CHALLENGE_ERROR.exec(value)?.[1]
  return error === undefined ? scheme : `${scheme} error="${error}"`
}
