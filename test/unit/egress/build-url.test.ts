import { readFile } from 'node:fs/promises'
import { describe, expect, test } from 'vitest'
import { buildUpstreamUrl, DROPPED_REQUEST_HEADERS, filterCallerHeaders, MAX_PATH_LENGTH, selectResponseHeaders } from '../../../src/egress/build-url.js'

const github = { origin: 'https://api.github.com', basePath: '/' }
const drive = { origin: 'https://www.googleapis.com', basePath: '/drive/v3/' }

function refusal(target: { origin: string; basePath: string }, path: string): string {
  const r = buildUpstreamUrl(target, path)
  if (r.ok) throw new Error(`expected ${JSON.stringify(path)} to be refused, got ${r.url.href}`)
  return r.reason
}

describe('buildUpstreamUrl refuses paths that could leave the origin or base path [egress:path-confined]', () => {
  test.each([
    // [path, rule named in the reason]
    ['//evil.com/x', /must not start with \/\//],
    ['\\\\evil.com', /backslash/],
    ['\\\\evil.com\\x', /backslash/],
    ['/\\evil.com', /backslash/],
    ['a\\..\\b', /backslash/],
    ['https://evil.com/x', /absolute url \(scheme:\)/],
    ['http://169.254.169.254/latest/meta-data/', /absolute url/],
    ['javascript:alert(1)', /absolute url/],
    ['../admin', /\. or \.\. segments/],
    ['/../admin', /\. or \.\. segments/],
    ['a/../../b', /\. or \.\. segments/],
    ['a/../b', /\. or \.\. segments/], // refused even though it stays inside basePath
    ['./x', /\. or \.\. segments/],
    ['a/./b', /\. or \.\. segments/],
    ['a/.', /\. or \.\. segments/],
    ['a/..', /\. or \.\. segments/],
    ['%2e%2e/admin', /\. or \.\. segments/],
    ['%2E%2E/admin', /\. or \.\. segments/],
    ['.%2e/x', /\. or \.\. segments/],
    ['%2e./x', /\. or \.\. segments/],
    ['%2e/x', /\. or \.\. segments/],
    ['users/%2e%2e/%2e%2e/admin', /\. or \.\. segments/],
    ['..;/admin', /\. or \.\. segments/],
    ['a/..;jsessionid=1/b', /\. or \.\. segments/],
    ['..%2fadmin', /encoded slashes/],
    ['users/..%2F..%2Fadmin', /encoded slashes/],
    ['a%5cb', /encoded slashes or backslashes/],
    ['%252e%252e%252fadmin', /double percent-encoding/],
    ['a/%252e%252e/b', /double percent-encoding/],
    ['a/%2500', /double percent-encoding/],
    ['/x\u0000y', /control characters/],
    ['/x\ny', /control characters/],
    ['/x\ry', /control characters/],
    ['/x\ty', /control characters/],
    ['/x\u007fy', /control characters/],
    ['/x%00y', /encoded control characters/],
    ['/x%0d%0aHost:%20evil', /encoded control characters/],
    ['/x%1f', /encoded control characters/],
    ['/x%7F', /encoded control characters/],
    ['@evil.com/x', /@ in its first segment/],
    ['/user:pass@evil.com/x', /@ in its first segment/],
    ['/ok?inject=1', /\? or #/],
    ['/ok#frag', /\? or #/],
    ['/a%zz', /malformed percent-encoding/],
    ['/a%', /malformed percent-encoding/],
    ['/' + 'a'.repeat(MAX_PATH_LENGTH), /longer than 8192/],
  ])('%j is refused (%s)', (path, rule) => {
    expect(refusal(github, path)).toMatch(rule)
    expect(refusal(drive, path)).toMatch(rule)
  })

  test('reasons are lowercase and never echo the path', () => {
    for (const path of ['//sk-CANARY-123.evil', '/sk-CANARY-123?x=1', '%2e%2e/sk-CANARY-123']) {
      const reason = refusal(github, path)
      expect(reason).not.toContain('sk-CANARY-123')
      expect(reason).toBe(reason.toLowerCase())
    }
  })
})

describe('buildUpstreamUrl builds URLs under the base path', () => {
  test.each([
    [github, '/repos/o/r/issues', 'https://api.github.com/repos/o/r/issues'],
    [github, 'repos/o/r/issues', 'https://api.github.com/repos/o/r/issues'],
    [github, '', 'https://api.github.com/'],
    [github, '/', 'https://api.github.com/'],
    [github, '/users/@me', 'https://api.github.com/users/@me'],
    [github, '/a//b', 'https://api.github.com/a//b'],
    [github, '/a/b/', 'https://api.github.com/a/b/'],
    [github, '/files/naïve café', 'https://api.github.com/files/na%C3%AFve%20caf%C3%A9'],
    [github, '/files/日本', 'https://api.github.com/files/%E6%97%A5%E6%9C%AC'],
    [github, '/files/na%C3%AFve', 'https://api.github.com/files/na%C3%AFve'],
    [github, '/files/100%25', 'https://api.github.com/files/100%25'],
    [github, '/v1/images:annotate', 'https://api.github.com/v1/images:annotate'],
    [github, '/...', 'https://api.github.com/...'],
    [github, '/a/.well-known/x', 'https://api.github.com/a/.well-known/x'],
    [github, '/a..b/c.', 'https://api.github.com/a..b/c.'],
    [github, '/a/file%2ejson', 'https://api.github.com/a/file%2ejson'],
    [drive, '/files', 'https://www.googleapis.com/drive/v3/files'],
    [drive, 'files/abc/permissions', 'https://www.googleapis.com/drive/v3/files/abc/permissions'],
    [drive, '', 'https://www.googleapis.com/drive/v3/'],
    [{ origin: 'http://127.0.0.1:8080', basePath: '/api/' }, '/x', 'http://127.0.0.1:8080/api/x'],
  ])('%j + %j → %s', (target, path, href) => {
    const r = buildUpstreamUrl(target, path)
    expect(r).toEqual({ ok: true, url: new URL(href) })
    if (r.ok) expect(r.url.href).toBe(href)
  })

  test('query values are appended with URLSearchParams; arrays repeat the key', () => {
    const r = buildUpstreamUrl(drive, '/files', { q: "name contains 'a&b'", pageSize: 10, supportsAllDrives: true, fields: ['id', 'name'], empty: '' })
    expect(r.ok && r.url.href).toBe(
      'https://www.googleapis.com/drive/v3/files?q=name+contains+%27a%26b%27&pageSize=10&supportsAllDrives=true&fields=id&fields=name&empty=',
    )
    if (r.ok) expect(r.url.searchParams.getAll('fields')).toEqual(['id', 'name'])
  })

  test('a query cannot change the path or add a fragment', () => {
    const r = buildUpstreamUrl(github, '/x', { 'a#b': '/../../c?d#e', '\r\n': '\u0000' })
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.url.pathname).toBe('/x')
    expect(r.url.hash).toBe('')
    expect(r.url.searchParams.get('a#b')).toBe('/../../c?d#e')
  })

  test('an empty query adds no "?"', () => {
    const r = buildUpstreamUrl(github, '/x', {})
    expect(r.ok && r.url.href).toBe('https://api.github.com/x')
  })

  test('the built URL is checked against the origin and base path (defence in depth)', () => {
    // A target whose origin is not in URL.origin form can never match: fail closed.
    expect(buildUpstreamUrl({ origin: 'https://api.github.com:443', basePath: '/' }, '/x')).toEqual({
      ok: false,
      reason: 'path would leave the connection origin',
    })
    // A base path the URL parser rewrites can never match either.
    expect(buildUpstreamUrl({ origin: 'https://a.example', basePath: '/a b/' }, '/x')).toEqual({
      ok: false,
      reason: 'path would leave the connection base path',
    })
  })
})

describe('filterCallerHeaders [egress:header-filter]', () => {
  test('drops credentials, routing, framing, hop-by-hop and proxy headers case-insensitively; lowercases the rest', () => {
    const r = filterCallerHeaders({
      Authorization: 'Bearer sk-CANARY-123',
      'PROXY-AUTHORIZATION': 'x',
      Cookie: 'a=b',
      'Set-Cookie': 'a=b',
      Host: 'evil.example',
      Connection: 'close, Authorization',
      'Keep-Alive': 'timeout=5',
      TE: 'trailers',
      Trailer: 'x',
      'Transfer-Encoding': 'chunked',
      Upgrade: 'websocket',
      'Proxy-Connection': 'keep-alive',
      'Content-Length': '5',
      'Proxy-Anything': 'x',
      'X-Forwarded-For': '127.0.0.1',
      'x-forwarded-host': 'evil.example',
      Forwarded: 'for=1.2.3.4',
      Expect: '100-continue',
      'Accept-Encoding': 'gzip',
      Accept: 'application/vnd.github+json',
      'X-GitHub-Api-Version': '2022-11-28',
      'Content-Type': 'application/json',
      'If-None-Match': '"abc"',
    })
    expect(r).toEqual({
      ok: true,
      headers: { accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28', 'content-type': 'application/json', 'if-none-match': '"abc"' },
    })
  })

  test('method overrides, URL rewrites and client-address claims are dropped in any case [egress:dropped-headers]', () => {
    const r = filterCallerHeaders({
      'X-HTTP-Method-Override': 'DELETE',
      'x-http-method': 'DELETE',
      'X-Method-Override': 'PUT',
      'X-Original-Method': 'PATCH',
      'X-Original-URL': '/admin',
      'X-Rewrite-URL': '/admin',
      'X-Original-URI': '/admin',
      'X-Real-IP': '127.0.0.1',
      'X-Client-IP': '127.0.0.1',
      'True-Client-IP': '127.0.0.1',
      'X-Host': 'internal.example',
      Via: '1.1 trusted-proxy',
      'X-Note': 'kept',
    })
    expect(r).toEqual({ ok: true, headers: { 'x-note': 'kept' } })
  })

  test('the README lists exactly the dropped headers of the table, with the same reasons [egress:dropped-headers]', async () => {
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('Caller headers Keyway never forwards'), readme.indexOf('## Config reference'))
    const rows = [...section.matchAll(/^\| `([a-z0-9-]+\*?)` \| (.+) \|$/gm)].map((m) => [m[1], m[2]])
    expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(DROPPED_REQUEST_HEADERS.map((h) => ['name' in h ? h.name : `${h.prefix}*`, h.reason])))
  })

  test('undefined and empty give no headers', () => {
    expect(filterCallerHeaders(undefined)).toEqual({ ok: true, headers: {} })
    expect(filterCallerHeaders({})).toEqual({ ok: true, headers: {} })
  })

  test('"__proto__" is an ordinary name, not a prototype change', () => {
    const r = filterCallerHeaders(JSON.parse('{"__proto__":"x","a":"b"}') as Record<string, string>)
    expect(r.ok).toBe(true)
    if (r.ok) {
      expect(Object.keys(r.headers).sort()).toEqual(['__proto__', 'a'])
      expect(Object.getPrototypeOf(r.headers)).toBeNull()
    }
  })

  test.each([
    [{ 'X-A': 'a\r\nHost: evil' }, 'header "x-a" has a value with CR, LF, NUL or another control character'],
    [{ 'X-A': 'a\nb' }, 'header "x-a" has a value with CR, LF, NUL or another control character'],
    [{ 'X-A': 'a\u0000b' }, 'header "x-a" has a value with CR, LF, NUL or another control character'],
    [{ Authorization: 'Bearer x\r\nX-Evil: 1' }, 'header "authorization" has a value with CR, LF, NUL or another control character'],
    [{ 'X A': 'v' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ 'X-A:': 'v' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ ':authority': 'evil' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ 'X-A\r\nHost': 'v' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ '': 'v' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ 'X-Ä': 'v' }, 'a header name is not a valid token (rfc 9110 §5.1)'],
    [{ 'X-Dup': 'a', 'x-dup': 'b' }, 'header "x-dup" is given more than once'],
    [{ authorization: 'a', Authorization: 'b' }, 'header "authorization" is given more than once'],
    [{ 'X-Long': 'v'.repeat(8193) }, 'header "x-long" is longer than 8192 characters'],
    [Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`x-${i}`, 'v'])), 'at most 64 headers may be given'],
  ])('%j is refused', (headers, reason) => {
    expect(filterCallerHeaders(headers)).toEqual({ ok: false, reason })
  })

  test('a refusal never contains the header value', () => {
    const r = filterCallerHeaders({ 'X-Key': 'sk-CANARY-123\r\nX: y' })
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.reason).not.toContain('sk-CANARY-123')
  })

  test('tabs and obs-text are allowed in values', () => {
    expect(filterCallerHeaders({ 'X-A': 'a\tb', 'X-B': 'caf\u00e9' })).toEqual({ ok: true, headers: { 'x-a': 'a\tb', 'x-b': 'caf\u00e9' } })
  })
})

describe('selectResponseHeaders', () => {
  test('keeps only the allowlist, lowercased; never set-cookie', () => {
    expect(
      selectResponseHeaders({
        'content-type': 'application/json',
        'Content-Length': '12',
        etag: '"e"',
        'last-modified': 'x',
        location: 'https://api.github.com/next',
        link: '<https://api.github.com/x?page=2>; rel="next"',
        'retry-after': '30',
        'x-ratelimit-remaining': '4999',
        'X-RateLimit-Reset': '1700000000',
        'ratelimit-policy': '10;w=1',
        'x-request-id': 'r1',
        'www-authenticate': 'Bearer error="insufficient_scope"',
        'set-cookie': 'session=sk-CANARY-123',
        'Set-Cookie': 'b=c',
        server: 'nginx',
        'x-amz-cf-id': 'internal',
        authorization: 'Bearer x',
        'proxy-authenticate': 'Basic',
        via: '1.1 proxy',
        missing: undefined,
      }),
    ).toEqual({
      'content-type': 'application/json',
      'content-length': '12',
      etag: '"e"',
      'last-modified': 'x',
      location: 'https://api.github.com/next',
      link: '<https://api.github.com/x?page=2>; rel="next"',
      'retry-after': '30',
      'x-ratelimit-remaining': '4999',
      'x-ratelimit-reset': '1700000000',
      'ratelimit-policy': '10;w=1',
      'x-request-id': 'r1',
      'www-authenticate': 'Bearer error="insufficient_scope"',
    })
  })
})
