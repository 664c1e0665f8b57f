/**
 * Property tests (fast-check) of the two egress rules a caller's arguments meet first: whatever
 * path and query `buildUpstreamUrl` accepts stays on the connection's origin, under its base path,
 * with no dot segment; and whatever headers `filterCallerHeaders` lets through contain no dropped,
 * hop-by-hop or credential header, in any casing.
 */
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { buildUpstreamUrl, DROPPED_REQUEST_HEADERS, filterCallerHeaders, isDroppedRequestHeader } from '../../../src/egress/build-url.js'

const targets = [
  { origin: 'https://api.example.com', basePath: '/' },
  { origin: 'https://api.example.com:8443', basePath: '/v1/' },
  { origin: 'http://127.0.0.1:4100', basePath: '/api/v1/' },
]

// Pieces that make the interesting paths: separators, dots, encodings (also double), userinfo,
// schemes, query and fragment marks, controls, non-ASCII, plus ordinary segment text.
const piece = fc.oneof(
  fc.constantFrom(
    '/',
    '//',
    '\\',
    '.',
    '..',
    '%2e',
    '%2E',
    '%2f',
    '%5c',
    '%25',
    '%252e',
    '%00',
    '%0a',
    '%',
    '@',
    ':',
    ';',
    '?',
    '#',
    'https:',
    '//evil.example',
    '\t',
    '\n',
    ' ',
    'é',
    '\u202e',
  ),
  fc.stringMatching(/^[A-Za-z0-9_~.-]{1,8}$/),
)
const pathArb = fc.array(piece, { maxLength: 12 }).map((parts) => parts.join(''))
const queryArb = fc.option(
  fc.dictionary(
    fc.string({ maxLength: 6 }),
    fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.boolean(), fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 })),
  ),
  { nil: undefined },
)

describe('buildUpstreamUrl properties [egress:path-confined]', () => {
  test('an accepted path gives a URL on the origin, under the base path, without userinfo, fragment or dot segments', () => {
    fc.assert(
      fc.property(fc.constantFrom(...targets), pathArb, queryArb, (target, path, query) => {
        const r = buildUpstreamUrl(target, path, query)
        if (!r.ok) {
          // A refusal names the rule, never the path.
          expect(r.reason).toMatch(/^[a-z]/)
          if (path.length > 3) expect(r.reason).not.toContain(path)
          return
        }
        const url = r.url
        expect(url.origin).toBe(target.origin)
        expect(url.username + url.password + url.hash).toBe('')
        expect(url.pathname.startsWith(target.basePath)).toBe(true)
        for (const segment of url.pathname.split('/')) {
          const once = segment.replace(/%2e/gi, '.')
          expect(once === '.' || once === '..').toBe(false)
        }
        // Parsing the URL again (what any upstream does) changes nothing.
        expect(new URL(url.href).pathname).toBe(url.pathname)
      }),
      { numRuns: 2000 },
    )
  })

  test('the query never changes the path, origin or fragment', () => {
    fc.assert(
      fc.property(queryArb, (query) => {
        const r = buildUpstreamUrl(targets[1] as (typeof targets)[number], '/items', query)
        expect(r.ok).toBe(true)
        if (!r.ok) return
        expect([r.url.origin, r.url.pathname, r.url.hash]).toEqual(['https://api.example.com:8443', '/v1/items', ''])
      }),
    )
  })
})

const dropped = DROPPED_REQUEST_HEADERS.flatMap((h) => ('name' in h ? [h.name] : [`${h.prefix}anything`, `${h.prefix}for`]))
const nameArb = fc.oneof(
  fc.mixedCase(fc.constantFrom(...dropped, 'authorization', 'connection', 'transfer-encoding')),
  fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,14}$/),
)
const valueArb = fc.stringMatching(/^[\x20-\x7e]{0,24}$/)

describe('filterCallerHeaders properties [egress:header-filter]', () => {
  test('what passes holds no dropped, hop-by-hop or credential header in any casing, lowercased, values unchanged', () => {
    fc.assert(
      fc.property(fc.dictionary(nameArb, valueArb, { maxKeys: 20 }), (headers) => {
        const r = filterCallerHeaders(headers)
        if (!r.ok) {
          // Only duplicate names in different casing are refused among these inputs.
          expect(r.reason).toMatch(/is given more than once$/)
          return
        }
        for (const name of Object.keys(r.headers)) {
          expect(name).toBe(name.toLowerCase())
          expect(isDroppedRequestHeader(name)).toBe(false)
          expect(['authorization', 'proxy-authorization', 'cookie', 'host', 'connection', 'transfer-encoding', 'content-length']).not.toContain(name)
        }
        for (const [name, value] of Object.entries(headers)) if (!isDroppedRequestHeader(name.toLowerCase())) expect(r.headers[name.toLowerCase()]).toBe(value)
      }),
      { numRuns: 1000 },
    )
  })
})
