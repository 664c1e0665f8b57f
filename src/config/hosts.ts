/**
 * Host name matching for `egress.allowedHosts` and the loopback test used at load time. Pure
 * functions; address classification of resolved IPs lives in `egress/address.ts`.
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
  const h = hostname.toLowerCase().replace(/\.$/, '').replace(/^\[|\]$/g, '')
  return h === 'localhost' || h.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::1' || h === '0.0.0.0'
}
