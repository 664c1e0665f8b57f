import { describe, expect, test } from 'vitest'
import type { EgressPolicy } from '../../../src/config/load.js'
import { checkAddresses, checkTarget, type GuardResult, type Resolver } from '../../../src/egress/guard.js'

// Never the network: every name resolves through this table, and the test records each lookup.
function fakeDns(table: Record<string, readonly string[]>): Resolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (hostname: string): Promise<readonly string[]> => {
    calls.push(hostname)
    const found = table[hostname]
    if (found === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' })
    return found
  }
  return Object.assign(resolve, { calls })
}

const strict: EgressPolicy = { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: false }
const loose: EgressPolicy = { allowedHosts: undefined, dangerouslyAllowPrivateNetworks: true }
const dns = fakeDns({
  'api.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
  'internal.example.com': ['10.0.0.5'],
  'metadata.example.com': ['169.254.169.254'],
  'mapped.example.com': ['::ffff:127.0.0.1'],
  'mixed.example.com': ['93.184.216.34', '10.0.0.5'],
  'mixed6.example.com': ['2606:4700::1111', 'fd00::1'],
  'rebind.nip.io': ['127.0.0.1'],
  'empty.example.com': [],
  'garbage.example.com': ['not-an-ip'],
})

async function deny(url: string, policy: EgressPolicy = strict): Promise<Extract<GuardResult, { ok: false }>> {
  const r = await checkTarget(new URL(url), policy, dns)
  if (r.ok) throw new Error(`expected ${url} to be refused`)
  return r
}

describe('checkTarget [egress:block-private-ip]', () => {
  test('a public host is allowed and its addresses returned for pinning', async () => {
    expect(await checkTarget(new URL('https://api.example.com/x'), strict, dns)).toEqual({
      ok: true,
      addresses: ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
    })
  })

  test.each([
    ['https://internal.example.com/', 'host "internal.example.com" resolves to a private address'],
    ['https://metadata.example.com/latest/meta-data/', 'host "metadata.example.com" resolves to a link-local address'],
    ['https://mapped.example.com/', 'host "mapped.example.com" resolves to a loopback address'],
    ['https://mixed.example.com/', 'host "mixed.example.com" resolves to a private address'],
    ['https://mixed6.example.com/', 'host "mixed6.example.com" resolves to a private address'],
    ['https://rebind.nip.io/', 'host "rebind.nip.io" resolves to a loopback address'],
    ['https://10.0.0.5/', 'host "10.0.0.5" is a private address'],
    ['https://169.254.169.254/latest/meta-data/', 'host "169.254.169.254" is a link-local address'],
    ['https://[::1]/', 'host "[::1]" is a loopback address'],
    ['https://[::ffff:127.0.0.1]/', 'host "[::ffff:7f00:1]" is a loopback address'],
    ['https://[::ffff:169.254.169.254]/', 'host "[::ffff:a9fe:a9fe]" is a link-local address'],
    ['https://[64:ff9b::a9fe:a9fe]/', 'host "[64:ff9b::a9fe:a9fe]" is a link-local address'],
    ['https://[fd00::1]/', 'host "[fd00::1]" is a private address'],
    ['https://[fe80::1]/', 'host "[fe80::1]" is a link-local address'],
    ['https://[::]/', 'host "[::]" is an unspecified address'],
    // The WHATWG URL parser turns these IPv4 spellings into 127.0.0.1 / 0.0.0.0 before we see them.
    ['https://2130706433/', 'host "127.0.0.1" is a loopback address'],
    ['https://0x7f.1/', 'host "127.0.0.1" is a loopback address'],
    ['https://0177.0.0.1/', 'host "127.0.0.1" is a loopback address'],
    ['https://127.1/', 'host "127.0.0.1" is a loopback address'],
    ['https://0x7f000001/', 'host "127.0.0.1" is a loopback address'],
    ['https://0/', 'host "0.0.0.0" is an unspecified address'],
  ])('%s is refused before any connection', async (url, detail) => {
    const r = await deny(url)
    expect(r.reason).toBe('private-address')
    expect(r.detail).toBe(`${detail}; only public addresses are allowed unless egress.dangerouslyAllowPrivateNetworks is true`)
    // The detail names the class, never the internal address a name resolved to.
    if (!/^https:\/\/[\d[]/.test(url)) expect(r.detail).not.toMatch(/10\.0\.0\.5|169\.254|127\.0\.0\.1|fd00/)
  })

  test('IP literals are classified without a DNS lookup', async () => {
    const before = dns.calls.length
    await deny('https://10.0.0.5/')
    await deny('https://[::ffff:7f00:1]/')
    await deny('http://2130706433/')
    expect(dns.calls.length).toBe(before)
  })

  test('http is refused without the flag, https and http with it; other schemes never', async () => {
    expect(await deny('http://api.example.com/')).toEqual({
      ok: false,
      reason: 'scheme',
      detail: 'http:// to "api.example.com" is refused; only https:// is allowed unless egress.dangerouslyAllowPrivateNetworks is true',
    })
    expect(await deny('http://2130706433/')).toMatchObject({ reason: 'scheme' })
    expect(await deny('ftp://api.example.com/')).toEqual({ ok: false, reason: 'scheme', detail: 'scheme "ftp:" is refused; only https:// is allowed' })
    expect(await deny('file:///etc/passwd', loose)).toMatchObject({ reason: 'scheme' })
    expect(await deny('gopher://api.example.com/', loose)).toMatchObject({ reason: 'scheme' })
    expect(await deny('ws://api.example.com/', loose)).toMatchObject({ reason: 'scheme' })
    expect((await checkTarget(new URL('http://internal.example.com/'), loose, dns)).ok).toBe(true)
  })

  test('dangerouslyAllowPrivateNetworks lets private, loopback and mapped addresses through', async () => {
    for (const url of ['https://internal.example.com/', 'https://mapped.example.com/', 'http://127.0.0.1:8080/', 'http://[::1]/', 'https://mixed.example.com/'])
      expect((await checkTarget(new URL(url), loose, dns)).ok, url).toBe(true)
    expect(await checkTarget(new URL('http://[::1]:9/'), loose, dns)).toEqual({ ok: true, addresses: ['::1'] })
  })

  test('allowedHosts: exact names and dot-anchored wildcards only', async () => {
    const policy: EgressPolicy = { allowedHosts: ['api.example.com', '*.googleapis.com'], dangerouslyAllowPrivateNetworks: false }
    const ok = fakeDns({ 'api.example.com': ['93.184.216.34'], 'www.googleapis.com': ['142.250.0.1'] })
    expect((await checkTarget(new URL('https://api.example.com/x'), policy, ok)).ok).toBe(true)
    expect((await checkTarget(new URL('https://API.EXAMPLE.COM./x'), policy, ok)).ok).toBe(false) // the list ignores the trailing dot; DNS gets the name as written (not in this table)
    expect((await checkTarget(new URL('https://www.googleapis.com/x'), policy, ok)).ok).toBe(true)
    for (const url of [
      'https://evil.com/',
      'https://api.example.com.evil.com/',
      'https://api.example.com%2eevil.com/',
      'https://evilapi.example.com/',
      'https://googleapis.com/',
      'https://api.example.com@evil.com/',
      'https://evil.com#@api.example.com/',
      'https://ⓔⓥⓘⓛ.com/',
      'https://10.0.0.5/',
    ]) {
      const r = await checkTarget(new URL(url), policy, ok)
      expect(r, url).toMatchObject({ ok: false })
      if (!r.ok) expect(['host-not-allowed', 'bad-url']).toContain(r.reason)
    }
    expect(await checkTarget(new URL('https://evil.com/'), policy, ok)).toEqual({
      ok: false,
      reason: 'host-not-allowed',
      detail: 'host "evil.com" is not in egress.allowedHosts',
    })
  })

  test('allowedHosts ports: an allowed host on a port neither its entry nor the config names is refused before DNS [egress:ports]', async () => {
    const policy: EgressPolicy = {
      allowedHosts: ['api.example.com', 'idp.example.com', 'alt.example.com:8443'],
      dangerouslyAllowPrivateNetworks: false,
      configuredPorts: new Map([['idp.example.com', new Set([8443])]]),
    }
    const ok = fakeDns({ 'api.example.com': ['93.184.216.34'], 'idp.example.com': ['93.184.216.35'], 'alt.example.com': ['93.184.216.36'] })
    for (const url of ['https://api.example.com/', 'https://idp.example.com:8443/token', 'https://idp.example.com/x', 'https://alt.example.com:8443/'])
      expect((await checkTarget(new URL(url), policy, ok)).ok, url).toBe(true)
    const lookups = ok.calls.length
    for (const [url, port, host] of [
      ['https://api.example.com:6379/', 6379, 'api.example.com'],
      ['https://idp.example.com:9443/token', 9443, 'idp.example.com'],
      ['https://alt.example.com/', 443, 'alt.example.com'],
    ] as const)
      expect(await checkTarget(new URL(url), policy, ok)).toEqual({
        ok: false,
        reason: 'port-not-allowed',
        detail: `port ${port} of host "${host}" is not allowed: egress.allowedHosts lists the host without this port, and no connection or endpoint in the config uses it`,
      })
    expect(ok.calls.length).toBe(lookups)
  })

  test('userinfo in the URL is refused', async () => {
    expect(await deny('https://user:sk-CANARY-123@api.example.com/')).toEqual({
      ok: false,
      reason: 'bad-url',
      detail: 'url for "api.example.com" must not carry userinfo',
    })
  })

  test('DNS failure, no address and a non-IP answer are dns-failed', async () => {
    expect(await deny('https://nowhere.example.com/')).toEqual({
      ok: false,
      reason: 'dns-failed',
      detail: 'host "nowhere.example.com" could not be resolved (ENOTFOUND)',
    })
    expect(await deny('https://empty.example.com/')).toEqual({ ok: false, reason: 'dns-failed', detail: 'host "empty.example.com" has no addresses' })
    expect(await deny('https://garbage.example.com/', loose)).toEqual({
      ok: false,
      reason: 'dns-failed',
      detail: 'host "garbage.example.com" resolved to something that is not an ip address',
    })
  })
})

describe('checkAddresses', () => {
  test('one non-public address refuses the set', () => {
    expect(checkAddresses('h', ['8.8.8.8', '::ffff:a9fe:a9fe'], false)).toMatchObject({ ok: false, reason: 'private-address' })
    expect(checkAddresses('h', ['8.8.8.8', '2606:4700::1111'], false)).toEqual({ ok: true, addresses: ['8.8.8.8', '2606:4700::1111'] })
  })
})
