/**
 * Host and port matching for `egress.allowedHosts` and the loopback test used at load time.
 * An entry names a host (`api.github.com`, `*.googleapis.com`, an IPv4 address, `[v6]`) and
 * optionally a port (`host:8443`, `[v6]:8443`). An entry with a port allows exactly that port;
 * one without allows the scheme's default port and the ports the config itself names on that
 * host (connection hosts and OAuth endpoints), so a metadata document or a redirect cannot move
 * a request to another port of an allowed host (README "Security model"). Pure functions;
 * address classification of resolved IPs lives in `egress/address.ts`.
 * @module
 */

/** `api.github.com` matches itself; `*.googleapis.com` matches any subdomain, not the apex. */
export function hostMatches(hostname: string, pattern: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '')
  const p = pattern.toLowerCase().replace(/\.$/, '')
  if (p.startsWith('*.')) return h.endsWith(p.slice(1)) && h.length > p.length - 1
  return h === p
}

/** Names that always mean this machine, before any DNS lookup. */
export function isLoopbackHostname(hostname: string): boolean {
  const h = hostname
    .toLowerCase()
    .replace(/\.$/, '')
    .replace(/^\[|\]$/g, '')
  return h === 'localhost' || h.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::1' || h === '0.0.0.0'
}

/** One parsed `egress.allowedHosts` entry: a host pattern in `URL.hostname` form and, if given, a port. */
export interface AllowedHost {
  readonly pattern: string
  readonly port: number | undefined
}

/** Ports the config names per host (`URL.hostname` form, lowercase, no trailing dot). */
export type ConfiguredPorts = ReadonlyMap<string, ReadonlySet<number>>

/** Whether a URL may be dialled under an allow-list, and if not, which half failed. */
export type AllowedTargetVerdict = 'allowed' | 'host-not-allowed' | 'port-not-allowed'

const PORT_TEXT = /^[0-9]{1,5}$/
const MAX_PORT = 65535

/**
 * Parses one `egress.allowedHosts` entry: `name`, `*.name`, `name:port`, `1.2.3.4[:port]`,
 * `[v6]` or `[v6]:port`. The host is put in the form the URL parser gives `URL.hostname`
 * (lowercase, punycode, canonical IP text, brackets around IPv6), so `[0:0::1]` and `[::1]`
 * are one entry. Returns a problem sentence instead when the entry is not one of those.
 */
export function parseAllowedHost(entry: string): AllowedHost | string {
  const text = entry.trim().toLowerCase()
  let host: string
  let portText: string | undefined
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    if (end === -1) return 'an IPv6 entry needs its closing bracket: [v6] or [v6]:port'
    host = text.slice(0, end + 1)
    const rest = text.slice(end + 1)
    if (rest !== '') {
      if (!rest.startsWith(':')) return 'after [v6] only :port may follow'
      portText = rest.slice(1)
    }
  } else {
    const colon = text.indexOf(':')
    if (colon !== text.lastIndexOf(':')) return 'write an IPv6 address in brackets: [v6] or [v6]:port'
    host = colon === -1 ? text : text.slice(0, colon)
    if (colon !== -1) portText = text.slice(colon + 1)
  }
  let port: number | undefined
  if (portText !== undefined) {
    port = PORT_TEXT.test(portText) ? Number(portText) : Number.NaN
    if (!(port >= 1 && port <= MAX_PORT)) return `port must be a number from 1 to ${MAX_PORT}`
  }
  const wildcard = host.startsWith('*.')
  const parsed = URL.parse(`http://${wildcard ? `x${host.slice(1)}` : host}/`)
  if (!parsed || parsed.hostname === '' || parsed.port !== '' || parsed.pathname !== '/' || parsed.username !== '')
    return 'must be a host name, *.domain, an IP address or [v6], optionally followed by :port'
  const name = parsed.hostname.replace(/\.$/, '')
  return { pattern: wildcard ? `*${name.slice(1)}` : name, port }
}

// Parsed lists by identity: a snapshot's list is frozen and reused until the next reload, so
// the hot path parses nothing.
const compiled = new WeakMap<readonly string[], readonly AllowedHost[]>()

/** The parsed entries of an allow-list; entries that do not parse match nothing (fail closed). */
export function compileAllowedHosts(list: readonly string[]): readonly AllowedHost[] {
  let out = compiled.get(list)
  if (out === undefined) {
    out = list.flatMap((e) => {
      const p = parseAllowedHost(e)
      return typeof p === 'string' ? [] : [p]
    })
    compiled.set(list, out)
  }
  return out
}

/** The port a URL dials: its own, or the scheme's default (RFC 9110 §4.2). */
export function effectivePort(url: URL): number {
  return url.port !== '' ? Number(url.port) : defaultPort(url.protocol)
}

function defaultPort(protocol: string): number {
  return protocol === 'https:' ? 443 : protocol === 'http:' ? 80 : 0
}

/**
 * Whether `url` is on an allowed host and port: an entry with a port must name the URL's port;
 * an entry without one allows the scheme's default port and any port in `configured` for that
 * host. `'port-not-allowed'` when the host matched some entry but no port did.
 */
export function checkAllowedTarget(url: URL, entries: readonly AllowedHost[], configured: ConfiguredPorts | undefined): AllowedTargetVerdict {
  const host = url.hostname.replace(/\.$/, '')
  const port = effectivePort(url)
  let hostSeen = false
  for (const e of entries) {
    if (!hostMatches(host, e.pattern)) continue
    hostSeen = true
    if (e.port === undefined ? port === defaultPort(url.protocol) || configured?.get(host)?.has(port) === true : e.port === port) return 'allowed'
  }
  return hostSeen ? 'port-not-allowed' : 'host-not-allowed'
}

/** The ports each host is named with in `urls` (connection hosts, issuers, OAuth endpoints). */
export function configuredPortsOf(urls: Iterable<string>): ConfiguredPorts {
  const out = new Map<string, Set<number>>()
  for (const raw of urls) {
    const u = URL.parse(raw)
    if (!u) continue
    const host = u.hostname.toLowerCase().replace(/\.$/, '')
    let ports = out.get(host)
    if (!ports) out.set(host, (ports = new Set()))
    ports.add(effectivePort(u))
  }
  return out
}
