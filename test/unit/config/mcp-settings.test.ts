/**
 * `protocol: mcp` connections in the config (design.md §12): defaults resolved into
 * `Connection.mcp`, which connections reach `tools` and `mcpConnections`, every problem of an
 * `mcp` block reported at once with its line, and the warnings about exposed-name clashes.
 */
import { describe, expect, test } from 'vitest'
import { loadConfigText } from '../../../src/config/load.js'

const FILE = '/cfg/connections.yaml'
const load = (text: string) => loadConfigText(text, FILE, { env: { T: 'tok' } })

const OAUTH = `      authorizationEndpoint: https://idp.example.com/authorize
      tokenEndpoint: https://idp.example.com/token
      clientId: keyway
      clientSecret: { env: T }`

const config = (connections: string) => `version: 1
connections:
${connections}`

const bearer = (name: string, extra = '') => `  ${name}:
    host: https://${name}.example.com
    isMcpConnection: true
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
${extra}`

describe('protocol: mcp connections', () => {
  test('defaults: protocol http, no mcp settings; mcp settings resolved with the connection name as prefix', async () => {
    const r = await load(
      config(`${bearer('api')}${bearer('everything', '    protocol: mcp\n')}${bearer('gh', '    protocol: mcp\n    mcp: { prefix: github, include: ["get_*", search], exclude: ["get_secret*"], catalog: { refreshSeconds: 60 }, onUnavailable: error }\n')}  quiet:
    host: https://quiet.example.com
    protocol: mcp
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: T } }
`),
    )
    expect(r.ok).toBe(true)
    if (!r.ok) return
    const s = r.snapshot
    expect(s.connections.get('api')).toMatchObject({ protocol: 'http', mcp: undefined })
    expect(s.connections.get('everything')?.mcp).toEqual({
      prefix: 'everything',
      include: undefined,
      exclude: [],
      catalogCredential: 'shared',
      refreshSeconds: 600,
      onUnavailable: 'omit',
    })
    expect(s.connections.get('gh')?.mcp).toEqual({
      prefix: 'github',
      include: ['get_*', 'search'],
      exclude: ['get_secret*'],
      catalogCredential: 'shared',
      refreshSeconds: 60,
      onUnavailable: 'error',
    })
    // `tools` stays the HTTP tools; exposed MCP upstreams are listed apart, sorted; `quiet` is not exposed.
    expect(s.tools.map((c) => c.name)).toEqual(['api'])
    expect(s.mcpConnections.map((c) => c.name)).toEqual(['everything', 'gh'])
    expect(Object.isFrozen(s.connections.get('gh')?.mcp?.include)).toBe(true)
  })

  test('catalog credential defaults to owner on oauth_u2m_per_user and shared on the other methods', async () => {
    const r = await load(
      config(`  drive:
    host: https://drive.example.com
    protocol: mcp
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
${OAUTH}
  crm:
    host: https://crm.example.com
    protocol: mcp
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_shared
${OAUTH}
  svc:
    host: https://svc.example.com
    protocol: mcp
    owner: { servicePrincipal: etl }
    mcp: { catalog: { credential: caller } }
    auth:
      type: oauth_m2m
${OAUTH}
`),
    )
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.snapshot.connections.get('drive')?.mcp?.catalogCredential).toBe('owner')
    expect(r.snapshot.connections.get('crm')?.mcp?.catalogCredential).toBe('shared')
    expect(r.snapshot.connections.get('svc')?.mcp?.catalogCredential).toBe('caller')
  })

  test('every problem of mcp settings is reported at once, with its line', async () => {
    const r = await load(
      config(`  plain:
    host: https://plain.example.com
    owner: { user: admin@example.com }
    mcp: { prefix: p }
    auth: { type: bearer_token, token: { env: T } }
  drive:
    host: https://drive.example.com
    protocol: mcp
    readOnly: true
    owner: { user: admin@example.com }
    mcp:
      include: ["get_*_x", "ok*"]
      exclude: ["*secret"]
      catalog: { credential: shared }
    auth:
      type: oauth_u2m_per_user
${OAUTH}
  team:
    host: https://team.example.com
    protocol: mcp
    owner: { group: eng }
    auth:
      type: oauth_u2m_per_user
${OAUTH}
`),
    )
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems).toEqual([
      `${FILE}:6 connections.plain.mcp: mcp settings apply only to connections with protocol: mcp`,
      `${FILE}:11 connections.drive.readOnly: readOnly applies to HTTP connections (protocol: http); an MCP upstream decides what its tools do`,
      `${FILE}:16 connections.drive.mcp.catalog.credential: an oauth_u2m_per_user connection has no shared credential; use owner (the owner user's token) or caller (each caller's own)`,
      `${FILE}:14 connections.drive.mcp.include[0]: "get_*_x": * is allowed only at the end (a prefix match)`,
      `${FILE}:15 connections.drive.mcp.exclude[0]: "*secret": * is allowed only at the end (a prefix match)`,
      // No catalog block: the line is the connection's.
      `${FILE}:24 connections.team.mcp.catalog.credential: catalog credential owner needs an owner { user: ID } with their own token on this per-user connection; set owner to a user or use caller`,
    ])
  })

  test('schema limits: prefix pattern, refreshSeconds 10..86400, credential and onUnavailable values', async () => {
    const r = await load(
      config(
        bearer('a', '    protocol: mcp\n    mcp: { prefix: "has space", catalog: { refreshSeconds: 5, credential: everyone }, onUnavailable: retry }\n') +
          bearer('b', '    protocol: grpc\n'),
      ),
    )
    expect(r.ok).toBe(false)
    if (r.ok) return
    const paths = r.problems.map((p) => p.split(' ')[1])
    expect(paths).toEqual([
      'connections.a.mcp.prefix:',
      'connections.a.mcp.catalog.credential:',
      'connections.a.mcp.catalog.refreshSeconds:',
      'connections.a.mcp.onUnavailable:',
      'connections.b.protocol:',
    ])
    expect(r.problems[0]).toContain('must match ^[A-Za-z0-9_-]{1,40}$')
  })

  test('warnings: two upstreams under one prefix, an HTTP tool named like an upstream tool', async () => {
    const r = await load(
      config(
        bearer('gh_a', '    protocol: mcp\n    mcp: { prefix: gh }\n') +
          bearer('gh_b', '    protocol: mcp\n    mcp: { prefix: gh }\n') +
          bearer('gh__issues') +
          bearer('other', '    protocol: mcp\n'),
      ),
    )
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.warnings).toEqual([
      'connections "gh_a", "gh_b" share the mcp prefix "gh": of tools with the same name, only the first connection\'s is exposed',
      'the HTTP tool "gh__issues" starts with "gh__", the prefix of "gh_a": an upstream tool of that name would be left out',
    ])
  })
})
