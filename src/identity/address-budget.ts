/**
 * A per-client-address budget of introspection calls (a token bucket per address), so unknown
 * bearer strings cannot turn Keyway into an amplifier against the identity provider: each address
 * may cause at most `perMinute` calls a minute, refilled evenly. IPv6 addresses count per /64
 * (one customer's usual allocation), IPv4-mapped IPv6 as the IPv4 address. Pure apart from its own
 * memory; time is passed in. It must not decide what happens to a refused request.
 * @module
 */
import { isIPv4, isIPv6 } from 'node:net'

/** Addresses remembered; beyond it the one unused longest is forgotten (and starts full again). */
export const ADDRESS_BUDGET_MAX_ENTRIES = 10_000

const MINUTE_MS = 60_000

export interface AddressBudget {
  /** Spends one call for `address` and says whether there was one to spend. */
  take(address: string, nowMs: number): boolean
  readonly size: number
}

export function createAddressBudget(perMinute: number, maxEntries = ADDRESS_BUDGET_MAX_ENTRIES): AddressBudget {
  if (!(perMinute >= 1)) throw new RangeError('perMinute must be at least 1')
  const perMs = perMinute / MINUTE_MS
  const buckets = new Map<string, { tokens: number; atMs: number }>()
  return {
    take(address, nowMs) {
      const key = budgetKey(address)
      const b = buckets.get(key)
      let tokens = perMinute
      if (b) {
        buckets.delete(key)
        tokens = Math.min(perMinute, b.tokens + Math.max(0, nowMs - b.atMs) * perMs)
      } else {
        while (buckets.size >= maxEntries) {
          const oldest = buckets.keys().next()
          if (oldest.done) break
          buckets.delete(oldest.value)
        }
      }
      const ok = tokens >= 1
      buckets.set(key, { tokens: ok ? tokens - 1 : tokens, atMs: nowMs })
      return ok
    },
    get size() {
      return buckets.size
    },
  }
}

/** The unit an address is budgeted as: IPv4 as is, IPv6 by its /64 prefix, anything else verbatim. */
export function budgetKey(address: string): string {
  const a = address.toLowerCase()
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)
  if (mapped?.[1] && isIPv4(mapped[1])) return mapped[1]
  if (!isIPv6(a)) return a
  return `${expandIPv6(a).slice(0, 4).join(':')}::/64`
}

/** Eight hextets of an IPv6 address (zone id dropped, `::` expanded, embedded IPv4 kept as two). */
function expandIPv6(address: string): string[] {
  const noZone = address.split('%', 1)[0] ?? address
  const [head = '', tail] = noZone.split('::')
  const part = (s: string): string[] => (s === '' ? [] : s.split(':').flatMap(hextetsOf))
  const left = part(head)
  const right = tail === undefined ? [] : part(tail)
  const zeros = Array.from({ length: Math.max(0, 8 - left.length - right.length) }, () => '0')
  return [...left, ...zeros, ...right].map((h) => h.replace(/^0+(?=.)/, ''))
}

function hextetsOf(s: string): string[] {
  if (!s.includes('.')) return [s]
  const [a = 0, b = 0, c = 0, d = 0] = s.split('.').map(Number)
  return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)]
}
