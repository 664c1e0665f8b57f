/**
 * Address classification for the egress guard: given one IP address as text (what a resolver
 * returns, or an IP-literal host after URL parsing), say which class it belongs to. Only
 * `'public'` may be dialled unless the operator set `egress.dangerouslyAllowPrivateNetworks`.
 * The classification works on the parsed bytes, never on the text (CVE-2026-43929: Node
 * serialises `[::ffff:127.0.0.1]` as `[::ffff:7f00:1]`, so dotted-quad regexes miss it), and
 * addresses that embed an IPv4 address (IPv4-mapped, NAT64, 6to4) are classified by that
 * IPv4 address. Unallocated IPv6 space (outside `2000::/3`) counts as reserved: default deny.
 * Pure functions; no DNS, no sockets, no dependency.
 * @module
 * @see https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
 * @see https://www.iana.org/assignments/iana-ipv4-special-registry/
 * @see https://www.iana.org/assignments/iana-ipv6-special-registry/
 */
import { isIPv4, isIPv6 } from 'node:net'

/** What an address is; everything but `'public'` is refused by default. */
export type AddressClass = 'public' | 'loopback' | 'private' | 'link-local' | 'unspecified' | 'multicast' | 'reserved' | 'invalid'

/**
 * Classifies one IPv4 or IPv6 address given as text. Accepts the forms a resolver or the
 * WHATWG URL parser produce (dotted quad; any RFC 4291 §2.2 IPv6 text form, optionally in
 * brackets or with a `%zone`). Anything else is `'invalid'`.
 *
 * IPv4: RFC 1918 and RFC 6598 (`100.64/10`) are private; `127/8` loopback; `169.254/16`
 * link-local; `0.0.0.0` unspecified and the rest of `0/8` reserved; `224/4` multicast;
 * `240/4`, `255.255.255.255`, `192.0.0/24`, the TEST-NETs, `198.18/15` and `192.88.99/24`
 * reserved (RFC 6890).
 *
 * IPv6: `::` unspecified, `::1` loopback, `fc00::/7` and `fec0::/10` private, `fe80::/10`
 * link-local, `ff00::/8` multicast; `::ffff:0:0/96` (RFC 4291 §2.5.5.2), `64:ff9b::/96`
 * (RFC 6052) and `2002::/16` (RFC 3056) by their embedded IPv4 address; documentation,
 * discard, IETF protocol and unallocated space reserved.
 */
export function classifyAddress(ip: string): AddressClass {
  let text = ip
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1)
  if (isIPv4(text)) {
    const v4 = parseIPv4(text)
    return v4 === undefined ? 'invalid' : classifyIPv4(v4[0], v4[1], v4[2], v4[3])
  }
  const zone = text.indexOf('%')
  if (zone !== -1) text = text.slice(0, zone)
  if (!isIPv6(text)) return 'invalid'
  const v6 = parseIPv6(text)
  return v6 === undefined ? 'invalid' : classifyIPv6(v6)
}

/** Whether the text is an IPv4 or IPv6 literal (brackets allowed), i.e. needs no DNS lookup. */
export function isIpLiteral(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  return isIPv4(h) || isIPv6(h)
}

function classifyIPv4(a: number, b: number, c: number, d: number): AddressClass {
  if (a === 0) return b === 0 && c === 0 && d === 0 ? 'unspecified' : 'reserved' // 0/8 "this network"
  if (a === 10) return 'private' // RFC 1918
  if (a === 127) return 'loopback'
  if (a === 169 && b === 254) return 'link-local' // includes 169.254.169.254, cloud metadata
  if (a === 172 && b >= 16 && b <= 31) return 'private' // RFC 1918
  if (a === 192 && b === 168) return 'private' // RFC 1918
  if (a === 100 && b >= 64 && b <= 127) return 'private' // RFC 6598 shared address space (CGNAT)
  if (a === 192 && b === 0 && c === 0) return 'reserved' // RFC 6890 IETF protocol assignments
  if (a === 192 && b === 0 && c === 2) return 'reserved' // TEST-NET-1
  if (a === 198 && b === 51 && c === 100) return 'reserved' // TEST-NET-2
  if (a === 203 && b === 0 && c === 113) return 'reserved' // TEST-NET-3
  if (a === 192 && b === 88 && c === 99) return 'reserved' // deprecated 6to4 relay anycast
  if (a === 198 && (b === 18 || b === 19)) return 'reserved' // RFC 2544 benchmarking
  if (a >= 224 && a <= 239) return 'multicast'
  if (a >= 240) return 'reserved' // 240/4 and the limited broadcast 255.255.255.255
  return 'public'
}

function classifyIPv6(w: readonly number[]): AddressClass {
  const [w0 = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0, w5 = 0, w6 = 0, w7 = 0] = w
  const embedded = (hi: number, lo: number): AddressClass => classifyIPv4(hi >> 8, hi & 0xff, lo >> 8, lo & 0xff)
  const firstFiveZero = w0 === 0 && w1 === 0 && w2 === 0 && w3 === 0 && w4 === 0
  if (firstFiveZero && w5 === 0) {
    if (w6 === 0 && w7 === 0) return 'unspecified'
    if (w6 === 0 && w7 === 1) return 'loopback'
    return 'reserved' // ::/96 deprecated IPv4-compatible addresses
  }
  if (firstFiveZero && w5 === 0xffff) return embedded(w6, w7) // ::ffff:a.b.c.d, also written ::ffff:7f00:1
  if (w0 === 0 && w1 === 0 && w2 === 0 && w3 === 0 && w4 === 0xffff && w5 === 0) return embedded(w6, w7) // RFC 2765 IPv4-translated
  if (w0 === 0x64 && w1 === 0xff9b) {
    if (w2 === 0 && w3 === 0 && w4 === 0 && w5 === 0) return embedded(w6, w7) // RFC 6052 NAT64 well-known prefix
    if (w2 === 1) return 'private' // 64:ff9b:1::/48 RFC 8215 local-use NAT64
    return 'reserved'
  }
  if (w0 === 0x2002) return embedded(w1, w2) // RFC 3056 6to4 carries the IPv4 address in bits 16..47
  if ((w0 & 0xfe00) === 0xfc00) return 'private' // fc00::/7 unique local
  if ((w0 & 0xffc0) === 0xfe80) return 'link-local' // fe80::/10
  if ((w0 & 0xffc0) === 0xfec0) return 'private' // fec0::/10 deprecated site-local
  if ((w0 & 0xff00) === 0xff00) return 'multicast' // ff00::/8
  if ((w0 & 0xe000) !== 0x2000) return 'reserved' // outside 2000::/3 nothing is allocated for unicast
  if (w0 === 0x2001 && w1 === 0x0db8) return 'reserved' // 2001:db8::/32 documentation
  if (w0 === 0x2001 && w1 < 0x0200) return 'reserved' // 2001::/23 IETF protocol assignments (Teredo, ORCHID, ...)
  if (w0 === 0x3fff && w1 < 0x1000) return 'reserved' // 3fff::/20 documentation (RFC 9637)
  if (w0 === 0x5f00) return 'reserved' // 5f00::/16 SRv6 SIDs (RFC 9602)
  return 'public'
}

function parseIPv4(text: string): [number, number, number, number] | undefined {
  const parts = text.split('.')
  if (parts.length !== 4) return undefined
  const out: [number, number, number, number] = [0, 0, 0, 0]
  for (let i = 0; i < 4; i++) {
    const n = Number(parts[i])
    if (!Number.isInteger(n) || n < 0 || n > 255) return undefined
    out[i] = n
  }
  return out
}

/** Eight 16-bit words of an IPv6 text form already validated by `net.isIPv6`. */
function parseIPv6(text: string): number[] | undefined {
  let head = text
  const words: number[] = []
  // A trailing dotted quad (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) stands for the last two words.
  let tail: number[] = []
  const lastColon = head.lastIndexOf(':')
  const last = head.slice(lastColon + 1)
  if (last.includes('.')) {
    const v4 = parseIPv4(last)
    if (!v4) return undefined
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]]
    head = head.slice(0, lastColon + 1)
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1)
  }
  const gap = head.indexOf('::')
  const hex = (s: string): number[] => (s === '' ? [] : s.split(':').map((p) => Number.parseInt(p, 16)))
  if (gap === -1) words.push(...hex(head))
  else {
    const left = hex(head.slice(0, gap))
    const right = hex(head.slice(gap + 2))
    const fill = 8 - left.length - right.length - tail.length
    if (fill < 0) return undefined
    words.push(...left, ...new Array<number>(fill).fill(0), ...right)
  }
  words.push(...tail)
  if (words.length !== 8 || words.some((n) => !Number.isInteger(n) || n < 0 || n > 0xffff)) return undefined
  return words
}
