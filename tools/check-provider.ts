/**
 * `keyway check-provider URL_OR_CONNECTION [--config F] [--json]`: fetches an OAuth provider's
 * metadata (OpenID Connect Discovery, then RFC 8414) for an issuer URL or for a connection of the
 * config, and reports the six prerequisites of per-user connections with a fix for each that is
 * not met. Exit 0 when none fails (unknown does not fail), 1 when any fails, 2 on bad usage.
 * Plain http:// is fetched only from loopback hosts. The config is read without secrets.
 * @module
 */
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { isLoopbackHostname } from '../src/config/hosts.js'
import { loadConfigFile, type ConfigSnapshot, type Connection } from '../src/config/load.js'
import { CONNECTION_NAME_PATTERN, type CredentialExchange } from '../src/config/schema.js'
import { checkProvider, type AdvisoryResult, type PrerequisiteResult, type ProviderReport } from '../src/admin/check-provider.js'
import { redirectUri } from '../src/credentials/redirect-uri.js'
import { metadataUrls } from '../src/identity/oidc-discovery.js'
import { configPath, problemsHeadline, reportProblems, type CliIo, type Command } from './cli.js'

/** Per metadata request; a provider that takes longer is reported as unreachable. */
export const METADATA_FETCH_TIMEOUT_MS = 10_000
/** Metadata documents are a few KB; anything near this is not one. */
const MAX_METADATA_BYTES = 1024 * 1024

interface Target {
  /** What the user asked about, for the report. */
  readonly label: string
  /** Where metadata is looked for, in order (the issuer, or origins guessed from explicit endpoints). */
  readonly issuers: readonly string[]
  readonly authorizationEndpoint?: string | undefined
  readonly tokenEndpoint?: string | undefined
  readonly revocationEndpoint?: string | undefined
  readonly credentialExchange?: CredentialExchange | undefined
  /** False when metadata is guessed from an endpoint's origin: its issuer need not match. */
  readonly issuerConfigured: boolean
}

interface Discovery {
  readonly metadata: Record<string, unknown> | undefined
  readonly url: string | undefined
  readonly issuer: string | undefined
  readonly attempts: readonly string[]
}

export const run: Command = async (argv, io) => {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, json: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  })
  const [arg, ...extra] = positionals
  if (!arg || extra.length > 0) {
    io.err('usage: keyway check-provider ISSUER_URL_OR_CONNECTION [--config F] [--json]')
    return 2
  }
  const file = configPath(values.config, io)
  const asUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(arg) ? URL.parse(arg) : null
  const notes: string[] = []

  let snapshot: ConfigSnapshot | undefined
  if (existsSync(file)) {
    const loaded = await loadConfigFile(file, { env: io.env, skipSecrets: true })
    if (loaded.ok) snapshot = loaded.snapshot
    else if (!asUrl) {
      reportProblems(io, problemsHeadline(file, loaded.problems.length), loaded.problems)
      return 1
    } else notes.push(`config ${file} does not load (keyway validate shows why); the redirect URI cannot be derived from it`)
  } else if (asUrl) notes.push(`no config found at ${file}; pass --config to derive the redirect URI`)

  let target: Target
  if (asUrl) {
    if (asUrl.protocol !== 'https:' && asUrl.protocol !== 'http:') {
      io.err(`keyway: issuer URL must be https:// (or http:// on loopback), not ${asUrl.protocol}`)
      return 2
    }
    const issuer = arg.replace(/\/+$/, '')
    // A connection of the config with this issuer says which credentialExchange will be used.
    const match = [...(snapshot?.connections.values() ?? [])].find((c) => c.auth.type !== 'bearer_token' && c.auth.issuer?.replace(/\/+$/, '') === issuer)
    const exchange = match && match.auth.type !== 'bearer_token' ? match.auth.credentialExchange : undefined
    if (match) notes.push(`connection ${match.name} uses this issuer; its credentialExchange (${exchange ?? 'chosen from metadata'}) is checked`)
    target = { label: issuer, issuers: [issuer], issuerConfigured: true, credentialExchange: exchange }
  } else {
    if (!CONNECTION_NAME_PATTERN.test(arg)) {
      io.err(`keyway: "${arg}" is neither an issuer URL nor a connection name`)
      return 2
    }
    if (!snapshot) {
      io.err(`keyway: no config found at ${file} to look up connection "${arg}"; pass --config or an issuer URL`)
      return 2
    }
    const connection = snapshot.connections.get(arg)
    if (!connection) {
      io.err(`keyway: connection "${arg}" is not in ${file}`)
      return 2
    }
    const t = connectionTarget(connection)
    if (typeof t === 'string') {
      io.err(`keyway: ${t}`)
      return 2
    }
    target = t
  }
  for (const issuer of target.issuers) {
    const refusal = refuseInsecure(issuer)
    if (refusal) {
      io.err(`keyway: ${refusal}`)
      return 2
    }
  }

  const discovery = await discover(target.issuers)
  if (discovery.url && !target.issuerConfigured)
    notes.push(`metadata was looked up at the origin of the connection's endpoints; set auth.issuer if it describes another server`)
  const report = checkProvider({
    metadata: discovery.metadata,
    issuer: target.issuerConfigured ? discovery.issuer : undefined,
    authorizationEndpoint: target.authorizationEndpoint,
    tokenEndpoint: target.tokenEndpoint,
    revocationEndpoint: target.revocationEndpoint,
    credentialExchange: target.credentialExchange,
    redirectUri: snapshot ? redirectUri(snapshot.server.publicUrl) : undefined,
  })
  if (values.json) {
    io.out(JSON.stringify({ target: target.label, metadataUrl: discovery.url ?? null, attempts: discovery.attempts, notes, ...report }))
  } else {
    printReport(io, target, discovery, report, notes)
  }
  return report.ok ? 0 : 1
}

/** A connection's issuer, or the origins of its explicit endpoints (where providers usually publish metadata). */
function connectionTarget(c: Connection): Target | string {
  if (c.auth.type === 'bearer_token') return `connection "${c.name}" uses bearer_token; check-provider applies to OAuth connections`
  const a = c.auth
  const issuers = a.issuer
    ? [a.issuer.replace(/\/+$/, '')]
    : [...new Set([a.authorizationEndpoint, a.tokenEndpoint].flatMap((e) => (e ? [new URL(e).origin] : [])))]
  return {
    label: `connection ${c.name} (${a.type}${a.issuer ? `, issuer ${a.issuer}` : ''})`,
    issuers,
    authorizationEndpoint: a.authorizationEndpoint,
    tokenEndpoint: a.tokenEndpoint,
    revocationEndpoint: a.revocationEndpoint,
    credentialExchange: a.credentialExchange,
    issuerConfigured: a.issuer !== undefined,
  }
}

function refuseInsecure(issuer: string): string | undefined {
  const u = new URL(issuer)
  if (u.protocol === 'https:') return undefined
  if (u.protocol === 'http:' && isLoopbackHostname(u.hostname)) return undefined
  return `refusing to fetch metadata over ${u.protocol}// from ${u.hostname}: only https://, or http:// on a loopback host, is allowed`
}

async function discover(issuers: readonly string[]): Promise<Discovery> {
  const attempts: string[] = []
  for (const issuer of issuers) {
    for (const url of metadataUrls(issuer)) {
      const r = await fetchMetadata(url)
      if (typeof r === 'string') {
        attempts.push(`${url.href}: ${r}`)
        continue
      }
      return { metadata: r, url: url.href, issuer, attempts }
    }
  }
  return { metadata: undefined, url: undefined, issuer: issuers[0], attempts }
}

/** The metadata object, or why there is none (one short phrase). */
async function fetchMetadata(url: URL): Promise<Record<string, unknown> | string> {
  let res: Response
  try {
    res = await fetch(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(METADATA_FETCH_TIMEOUT_MS) })
  } catch (e) {
    const name = e instanceof Error ? e.name : ''
    if (name === 'TimeoutError' || name === 'AbortError') return `no answer within ${METADATA_FETCH_TIMEOUT_MS / 1000} s`
    const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : e instanceof Error ? e.message : String(e)
    return `unreachable (${cause})`
  }
  if (res.status !== 200) {
    await res.body?.cancel()
    const location = res.headers.get('location')
    return location ? `answered ${res.status}, redirecting to ${location}` : `answered ${res.status}`
  }
  const text = await res.text()
  if (text.length > MAX_METADATA_BYTES) return 'answered a document too large to be metadata'
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return 'answered something that is not JSON'
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'answered JSON that is not an object'
  return value as Record<string, unknown>
}

const MARK: Readonly<Record<PrerequisiteResult['status'] | AdvisoryResult['status'], string>> = {
  pass: 'PASS',
  fail: 'FAIL',
  unknown: 'UNKNOWN',
  warn: 'WARN',
}

function printReport(io: CliIo, target: Target, d: Discovery, report: ProviderReport, notes: readonly string[]): void {
  io.out(`Provider check for ${target.label}`)
  if (d.url) io.out(`metadata: ${d.url}`)
  else io.out('metadata: none found')
  for (const a of d.attempts) io.out(`  tried ${a}`)
  for (const n of notes) io.out(`note: ${n}`)
  io.out('')
  const width = Math.max(...report.prerequisites.map((p) => p.title.length), ...report.advisories.map((a) => a.title.length))
  report.prerequisites.forEach((p, i) => {
    io.out(`${MARK[p.status].padEnd(8)} ${i + 1}. ${p.title.padEnd(width)}  ${p.detail}`)
    if (p.fix) io.out(`${' '.repeat(12 + width)}  fix: ${p.fix}`)
  })
  io.out('')
  for (const a of report.advisories) {
    io.out(`${MARK[a.status].padEnd(8)}    ${a.title.padEnd(width)}  ${a.detail}`)
    if (a.fix) io.out(`${' '.repeat(12 + width)}  fix: ${a.fix}`)
  }
  const count = (s: PrerequisiteResult['status']): number => report.prerequisites.filter((p) => p.status === s).length
  io.out('')
  io.out(
    `${count('pass')} of 6 prerequisites pass, ${count('fail')} fail, ${count('unknown')} unknown: ${report.ok ? 'ok' : 'not ready for per-user connections'}`,
  )
}
