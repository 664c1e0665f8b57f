import { describe, expect, test } from 'vitest'
import { checkAllowedTarget, compileAllowedHosts, configuredPortsOf, parseAllowedHost, type AllowedTargetVerdict } from '../../../src/config/hosts.js'

describe('parseAllowedHost', () => {
  test.each([
    ['api.example.com', { pattern: 'api.example.com', port: undefined }],
    ['API.Example.COM.', { pattern: 'api.example.com', port: undefined }],
    ['api.example.com:8443', { pattern: 'api.example.com', port: 8443 }],
    ['*.googleapis.com', { pattern: '*.googleapis.com', port: undefined }],
    ['*.googleapis.com:443', { pattern: '*.googleapis.com', port: 443 }],
    ['127.0.0.1', { pattern: '127.0.0.1', port: undefined }],
    ['127.0.0.1:8080', { pattern: '127.0.0.1', port: 8080 }],
    ['[::1]', { pattern: '[::1]', port: undefined }],
    ['[0:0::1]:9000', { pattern: '[::1]', port: 9000 }],
    ['[2001:DB8::1]:443', { pattern: '[2001:db8::1]', port: 443 }],
    ['bücher.example', { pattern: 'xn--bcher-kva.example', port: undefined }],
  ])('%s parses', (entry, expected) => {
    expect(parseAllowedHost(entry)).toEqual(expected)
  })

  test.each([
    ['api.example.com:0', 'port must be a number from 1 to 65535'],
    ['api.example.com:65536', 'port must be a number from 1 to 65535'],
    ['api.example.com:', 'port must be a number from 1 to 65535'],
    ['api.example.com:https', 'port must be a number from 1 to 65535'],
    ['::1', 'write an IPv6 address in brackets: [v6] or [v6]:port'],
    ['[::1', 'an IPv6 entry needs its closing bracket: [v6] or [v6]:port'],
    ['[::1]8080', 'after [v6] only :port may follow'],
    ['api.example.com/path', 'must be a host name, *.domain, an IP address or [v6], optionally followed by :port'],
    ['user@api.example.com', 'must be a host name, *.domain, an IP address or [v6], optionally followed by :port'],
    ['exa mple.com', 'must be a host name, *.domain, an IP address or [v6], optionally followed by :port'],
  ])('%s is refused: %s', (entry, problem) => {
    expect(parseAllowedHost(entry)).toBe(problem)
  })
})

describe('checkAllowedTarget [egress:ports]', () => {
  const configured = configuredPortsOf(['http://127.0.0.1:4100', 'https://idp.example.com:8443/realms/x', 'https://api.example.com'])
  const rows: readonly [string, readonly string[], string, AllowedTargetVerdict][] = [
    ['the default https port of a port-less entry', ['api.example.com'], 'https://api.example.com/x', 'allowed'],
    ['an explicit default port is the same port', ['api.example.com'], 'https://api.example.com:443/x', 'allowed'],
    ['another port of a port-less entry', ['api.example.com'], 'https://api.example.com:6379/', 'port-not-allowed'],
    ['a port the config names on that host', ['idp.example.com'], 'https://idp.example.com:8443/token', 'allowed'],
    ['the default port next to a configured one', ['idp.example.com'], 'https://idp.example.com/token', 'allowed'],
    ['a loopback upstream on its configured port', ['127.0.0.1'], 'http://127.0.0.1:4100/', 'allowed'],
    ['the same loopback host on another port', ['127.0.0.1'], 'http://127.0.0.1:4101/', 'port-not-allowed'],
    ['an entry with a port allows that port', ['api.example.com:8443'], 'https://api.example.com:8443/', 'allowed'],
    ['an entry with a port allows no other, not even the default', ['api.example.com:8443'], 'https://api.example.com/', 'port-not-allowed'],
    ['an entry with a port ignores configured ports', ['127.0.0.1:9999'], 'http://127.0.0.1:4100/', 'port-not-allowed'],
    ['a second entry for the host adds its port', ['api.example.com', 'api.example.com:8443'], 'https://api.example.com:8443/', 'allowed'],
    ['a wildcard entry with a port', ['*.example.com:8443'], 'https://a.example.com:8443/', 'allowed'],
    ['a wildcard entry on another port', ['*.example.com'], 'https://a.example.com:22/', 'port-not-allowed'],
    ['an IPv6 entry with a port', ['[::1]:9000'], 'http://[::1]:9000/', 'allowed'],
    ['an IPv6 entry on another port', ['[::1]:9000'], 'http://[::1]:9001/', 'port-not-allowed'],
    ['another host', ['api.example.com'], 'https://evil.example.com/', 'host-not-allowed'],
    ['an entry that does not parse matches nothing', ['api.example.com:99999'], 'https://api.example.com/', 'host-not-allowed'],
  ]
  test.each(rows)('%s', (_what, list, url, verdict) => {
    expect(checkAllowedTarget(new URL(url), compileAllowedHosts(list), configured)).toBe(verdict)
  })

  test('the http default port is 80, not 443', () => {
    expect(checkAllowedTarget(new URL('http://plain.example/'), compileAllowedHosts(['plain.example']), undefined)).toBe('allowed')
    expect(checkAllowedTarget(new URL('http://plain.example:443/'), compileAllowedHosts(['plain.example']), undefined)).toBe('port-not-allowed')
  })

  test('a compiled list is parsed once per list object', () => {
    const list = ['api.example.com']
    expect(compileAllowedHosts(list)).toBe(compileAllowedHosts(list))
  })
})
