/**
 * The egress guard: decides whether Keyway may connect to a URL under the configured
 * `EgressPolicy` (design.md §9), and returns the addresses it approved so the connection can
 * be pinned to them. It checks the scheme (https only unless the operator opted out), the
 * `egress.allowedHosts` list (host and port), and the class of every address the host resolves to (OWASP
 * SSRF: resolve, then refuse private, loopback, link-local, ... addresses). Expected refusals
 * are return values, not throws. It must not open sockets or send anything: DNS goes through
 * the injected `Resolver` only, and enforcing the verdict is `safe-fetch.ts`'s job.
 * @module
 * @see https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
 */
import { lookup } from 'node:dns/promises'
import type { EgressPolicy } from '../config/load.js'
import { checkAllowedTarget, compileAllowedHosts, effectivePort } from '../config/hosts.js'
import { classifyAddress, isIpLiteral, type AddressClass } from './address.js'

/** Resolves a host name to every address it has (IPv4 and IPv6, as text). */
export type Resolver = (hostname: string) => Promise<readonly string[]>

/** Why a target was refused. */
export type EgressDenial = 'scheme' | 'bad-url' | 'host-not-allowed' | 'port-not-allowed' | 'private-address' | 'dns-failed'

export type GuardResult =
  { readonly ok: true; readonly addresses: readonly string[] } | { readonly ok: false; readonly reason: EgressDenial; readonly detail: string }

/**
 * The default resolver: the operating system's resolver (`getaddrinfo`, so `/etc/hosts`
 * applies), every address, in the order the system returns them.
 */
export const systemResolver: Resolver = async (hostname) => {
  const found = await lookup(hostname, { all: true, verbatim: true })
  return found.map((a) => a.address)
}

/**
 * Checks a URL before Keyway connects to it:
 *
 * 1. the scheme is `https:` (or `http:` with `dangerouslyAllowPrivateNetworks`), else `'scheme'`;
 * 2. the URL carries no userinfo, else `'bad-url'`;
 * 3. when `policy.allowedHosts` is set, the host matches an entry, else `'host-not-allowed'`,
 *    and the port is the entry's, or (entry without a port) the scheme's default port or one
 *    the config names on that host (`policy.configuredPorts`), else `'port-not-allowed'`;
 * 4. an IP-literal host (also `[v6]`, and what the URL parser made of `2130706433` or
 *    `0x7f.1`) is classified as it is; a name is resolved with `resolve`, and a failure or
 *    an empty answer is `'dns-failed'`;
 * 5. every address must be `'public'` unless `dangerouslyAllowPrivateNetworks`, else
 *    `'private-address'`: one private address among public ones is enough to refuse,
 *    because the connection could go to any of them.
 *
 * `detail` is a lowercase sentence naming the host and the rule, never a resolved address.
 * The caller must connect only to the returned `addresses` (DNS pinning), see `safe-fetch.ts`.
 */
export async function checkTarget(url: URL, policy: EgressPolicy, resolve: Resolver): Promise<GuardResult> {
  const allowPrivate = policy.dangerouslyAllowPrivateNetworks
  const host = url.hostname
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && allowPrivate)) {
    const detail =
      url.protocol === 'http:'
        ? `${url.protocol}// to "${host}" is refused; only https:// is allowed unless egress.dangerouslyAllowPrivateNetworks is true`
        : `scheme "${url.protocol}" is refused; only https:// is allowed`
    return { ok: false, reason: 'scheme', detail }
  }
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'bad-url', detail: `url for "${host}" must not carry userinfo` }
  const allowed = policy.allowedHosts
  if (allowed !== undefined) {
    const verdict = checkAllowedTarget(url, compileAllowedHosts(allowed), policy.configuredPorts)
    if (verdict === 'host-not-allowed') return { ok: false, reason: verdict, detail: `host "${host}" is not in egress.allowedHosts` }
    if (verdict === 'port-not-allowed')
      return {
        ok: false,
        reason: verdict,
        detail: `port ${effectivePort(url)} of host "${host}" is not allowed: egress.allowedHosts lists the host without this port, and no connection or endpoint in the config uses it`,
      }
  }

  // An IP-literal host needs no lookup; the URL parser already turned 2130706433, 0x7f.1 and
  // [::ffff:127.0.0.1] into their canonical forms.
  if (isIpLiteral(host)) return checkAddresses(host, [host.startsWith('[') ? host.slice(1, -1) : host], allowPrivate, true)
  let addresses: readonly string[]
  try {
    addresses = await resolve(host)
  } catch (e) {
    return { ok: false, reason: 'dns-failed', detail: `host "${host}" could not be resolved${dnsCode(e)}` }
  }
  if (addresses.length === 0) return { ok: false, reason: 'dns-failed', detail: `host "${host}" has no addresses` }
  return checkAddresses(host, addresses, allowPrivate)
}

/**
 * The address half of {@link checkTarget}, also run at connect time by the pinned agent:
 * every address must be a valid IP and, unless `allowPrivate`, `'public'`.
 */
export function checkAddresses(host: string, addresses: readonly string[], allowPrivate: boolean, literal = false): GuardResult {
  for (const address of addresses) {
    const kind: AddressClass = classifyAddress(address)
    if (kind === 'invalid') return { ok: false, reason: 'dns-failed', detail: `host "${host}" resolved to something that is not an ip address` }
    if (kind !== 'public' && !allowPrivate)
      return {
        ok: false,
        reason: 'private-address',
        detail: `host "${host}" ${literal ? 'is' : 'resolves to'} ${kind === 'unspecified' ? 'an' : 'a'} ${kind} address; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true`,
      }
  }
  return { ok: true, addresses }
}

function dnsCode(e: unknown): string {
  const code = typeof e === 'object' && e !== null && 'code' in e ? e.code : undefined
  return typeof code === 'string' && /^[A-Z_]{1,32}$/.test(code) ? ` (${code})` : ''
}
