/**
 * Loads the config file into an immutable `ConfigSnapshot`: YAML parse with line positions,
 * schema validation, cross checks over the whole file, secret resolution. Every problem is
 * collected and reported at once as `file:line path: problem`; nothing is half-loaded. This
 * module reads files and the environment but never opens a network connection.
 * @module
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml'
import type * as z from 'zod'
import { Secret } from '../secret.js'
import { deepFreeze } from '../readonly-collections.js'
import {
  CONNECTION_NAME_PATTERN,
  ConfigSchema,
  type AccountMatch,
  type AuthMethodConfig,
  type CatalogCredential,
  type ConfigFile,
  type CredentialExchange,
  type Principal,
  type SecretRef,
} from './schema.js'
import {
  checkAllowedTarget,
  compileAllowedHosts,
  configuredPortsOf,
  effectivePort,
  isLoopbackHostname,
  parseAllowedHost,
  type ConfiguredPorts,
} from './hosts.js'

/** The built-in group every authenticated caller belongs to (design.md §2). */
export const ACCOUNT_USERS_GROUP = 'account users'

/** Said of a per-user connection whose consent links nothing ties to a person or an account. */
export const FORWARDED_LINK_WARNING = 'a forwarded consent link binds whoever signs in; set auth.accountMatch or identity.oidc.browserClient'

/** `mcp.catalog.refreshSeconds` when the connection has no `mcp` block (the schema's default). */
const DEFAULT_CATALOG_REFRESH_S = 600

export type Env = Readonly<Record<string, string | undefined>>

export interface OAuthSettings {
  readonly issuer: string | undefined
  readonly authorizationEndpoint: string | undefined
  readonly tokenEndpoint: string | undefined
  readonly revocationEndpoint: string | undefined
  readonly clientId: string
  readonly clientSecret: Secret
  readonly scopes: readonly string[]
  readonly credentialExchange: CredentialExchange | undefined
  readonly authorizationParams: Readonly<Record<string, string>>
  readonly tokenParams: Readonly<Record<string, string>>
  /** Which provider account a consent must use (u2m methods only; always undefined for `oauth_m2m`). */
  readonly accountMatch: AccountMatch | undefined
}

export type AuthMethod =
  { readonly type: 'bearer_token'; readonly token: Secret } | ({ readonly type: 'oauth_m2m' | 'oauth_u2m_shared' | 'oauth_u2m_per_user' } & OAuthSettings)

/**
 * The settings of a `protocol: mcp` connection with every default resolved (README "Upstream MCP
 * servers"): which upstream tools are exposed under which prefix, and how their list is fetched.
 */
export interface McpSettings {
  /** Exposed names are `<prefix>__<upstream name>` (`mcp-upstream/names.ts`). */
  readonly prefix: string
  /** `NAME` exact or `PREFIX*`; undefined: every tool. */
  readonly include: readonly string[] | undefined
  /** Same patterns; wins over `include`. */
  readonly exclude: readonly string[]
  readonly catalogCredential: CatalogCredential
  readonly refreshSeconds: number
  /** An upstream that cannot list its tools: left out of `tools/list`, or `tools/list` fails. */
  readonly onUnavailable: 'omit' | 'error'
}

export interface Connection {
  readonly name: string
  /** Origin only, e.g. `https://api.github.com` (no path, no trailing slash). */
  readonly origin: string
  /** Always starts and ends with `/`. */
  readonly basePath: string
  /** What the upstream speaks: an HTTP API (the connection is one tool) or MCP (its tools are exposed). */
  readonly protocol: 'http' | 'mcp'
  readonly isMcpConnection: boolean
  readonly owner: Principal
  readonly description: string | undefined
  readonly readOnly: boolean
  readonly timeoutMs: number
  readonly maxResponseBytes: number
  /** Requests in flight on this connection, and per caller on it (README "Config reference"). */
  readonly maxConcurrentRequests: number
  readonly maxConcurrentRequestsPerCaller: number
  readonly auth: AuthMethod
  /** Set iff `protocol` is `mcp`. */
  readonly mcp: McpSettings | undefined
}

export interface Grant {
  readonly on: string
  readonly to: Principal
}

export interface ApiKeyEntry {
  readonly user: string
  readonly groups: readonly string[]
}

/** A service principal as `identity.oidc.servicePrincipals` maps a client to it. */
export interface ServicePrincipalEntry {
  readonly name: string
  readonly groups: readonly string[]
}

export interface IntrospectionSettings {
  readonly clientId: string
  readonly clientSecret: Secret
  /** Seconds an answer (active or not) is remembered; 0 asks the issuer every time. */
  readonly cacheTtlSeconds: number
  /** Introspection calls one client address may cause per minute for tokens not in the cache. */
  readonly callsPerMinutePerAddress: number
}

export interface OidcSettings {
  readonly issuer: string
  readonly audience: string
  readonly userClaim: string
  readonly groupsClaim: string
  readonly requiredScopes: readonly string[]
  readonly algorithms: readonly string[]
  readonly introspection: IntrospectionSettings | undefined
  readonly browserClient: { readonly clientId: string; readonly clientSecret: Secret } | undefined
  /** Client id → the service principal its user-less (client credentials) tokens act as. */
  readonly servicePrincipals: ReadonlyMap<string, ServicePrincipalEntry>
  /** Longest accepted `exp - iat` (or `exp - now` without `iat`), seconds; undefined: no limit. */
  readonly maxTokenLifetimeSeconds: number | undefined
  /** Separator of a groups claim given as one string; undefined: such a string is one group. */
  readonly groupsClaimSeparator: string | undefined
}

export interface EgressPolicy {
  readonly allowedHosts: readonly string[] | undefined
  readonly dangerouslyAllowPrivateNetworks: boolean
  /**
   * Ports the config names per host (connection hosts, issuers, OAuth endpoints): an
   * `allowedHosts` entry without a port allows these and the scheme's default port only.
   */
  readonly configuredPorts?: ConfiguredPorts | undefined
}

export interface ConfigSnapshot {
  /** Absolute path of the file this snapshot came from. */
  readonly file: string
  readonly server: {
    readonly publicUrl: string
    readonly host: string
    readonly port: number
    readonly allowedHosts: readonly string[] | undefined
    /** Largest `/mcp` request body in bytes (README "Config reference"). */
    readonly maxRequestBytes: number
    /** Open connections per listener. */
    readonly maxConnections: number
    /** On shutdown, how long calls in flight may run before they are aborted (README "Shutdown and readiness"). */
    readonly drainTimeoutMs: number
  }
  readonly identity: {
    readonly oidc: OidcSettings | undefined
    /** SHA-256 hex of the key → who presents it. */
    readonly apiKeys: ReadonlyMap<string, ApiKeyEntry>
    readonly stdioUser: string | undefined
    /** Service principal name → its configured groups (from `identity.oidc.servicePrincipals`). */
    readonly servicePrincipals: ReadonlyMap<string, readonly string[]>
  }
  readonly store: {
    /** `memory://`, `redis://…`, or `sqlite://<absolute path>`. */
    readonly url: string
    /** Redis AUTH password, kept out of `url` so the URL can be logged. */
    readonly password: Secret | undefined
    /** Sentinel AUTH (`redis+sentinel://` only). */
    readonly sentinelPassword: Secret | undefined
    readonly encryptionKey: Secret | undefined
    readonly encryptionKeys: readonly Secret[]
    readonly dangerouslyUseEphemeralKey: boolean
  }
  readonly audit: { readonly file: string }
  readonly egress: EgressPolicy & {
    readonly configuredPorts: ConfiguredPorts
    readonly timeoutMs: number
    readonly maxResponseBytes: number
    readonly maxConcurrentRequests: number
    readonly maxConcurrentRequestsPerCaller: number
  }
  /** user → the config groups it belongs to. */
  readonly groupsOf: ReadonlyMap<string, readonly string[]>
  readonly groups: Readonly<Record<string, readonly string[]>>
  readonly connections: ReadonlyMap<string, Connection>
  readonly grants: readonly Grant[]
  /** HTTP connections served as tools (`protocol: http`, `isMcpConnection`), sorted by name (deterministic `tools/list`). */
  readonly tools: readonly Connection[]
  /** `protocol: mcp` connections whose upstream tools are served (`isMcpConnection`), sorted by name. */
  readonly mcpConnections: readonly Connection[]
}

export type LoadResult =
  { readonly ok: true; readonly snapshot: ConfigSnapshot; readonly warnings: readonly string[] } | { readonly ok: false; readonly problems: readonly string[] }

export interface LoadOptions {
  readonly env?: Env
  /**
   * Check the file without resolving secrets: every reference becomes an empty placeholder
   * `Secret` and no environment variable or secret file is read. For commands that edit or show
   * the file but never use a credential (`keyway sql`), run where the secrets are not set.
   */
  readonly skipSecrets?: boolean
}

/** Reads and loads a config file. A missing or unreadable file is one problem, not a throw. */
export async function loadConfigFile(file: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const abs = path.resolve(file)
  let text: string
  try {
    text = await readFile(abs, 'utf8')
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `cannot read file (${(e as Error).message})`
    return { ok: false, problems: [`${abs}:1 (file): ${reason}`] }
  }
  return loadConfigText(text, abs, opts)
}

/** Loads config text as if read from `file` (relative paths resolve against its folder). */
export async function loadConfigText(text: string, file: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  const at = (offset: number | undefined): number => (offset === undefined ? 1 : lines.linePos(offset).line)
  const problems: string[] = []
  const report = (pathParts: readonly PropertyKey[], message: string, keyName?: string): void => {
    problems.push(`${file}:${lineOf(doc, pathParts, at, keyName)} ${formatPath(pathParts, keyName)}: ${message}`)
  }

  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push(`${file}:${at(e.pos[0])} (yaml): ${firstLine(e.message)}`)
    return { ok: false, problems }
  }
  const parsed = ConfigSchema.safeParse(doc.toJS() ?? {})
  if (!parsed.success) {
    for (const issue of parsed.error.issues) reportIssue(issue, report)
    return { ok: false, problems }
  }
  const cfg = parsed.data
  const warnings: string[] = []
  crossCheck(cfg, report, warnings)
  const dir = path.dirname(file)
  const secrets: SecretResolver = opts.skipSecrets ? () => new Secret('') : createSecretResolver(dir, opts.env ?? process.env)
  const snapshot = buildSnapshot(cfg, file, dir, (ref, where) => {
    const r = secrets(ref)
    if (typeof r === 'string') {
      report(where, r)
      return new Secret('')
    }
    return r
  })
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, snapshot: deepFreeze(snapshot, (v) => v instanceof Secret), warnings }
}

function reportIssue(issue: z.core.$ZodIssue, report: (p: readonly PropertyKey[], m: string, k?: string) => void): void {
  if (issue.code === 'unrecognized_keys') {
    for (const key of issue.keys) report(issue.path, 'unknown key', key)
    return
  }
  report(issue.path, issue.message)
}

function crossCheck(cfg: ConfigFile, report: (p: readonly PropertyKey[], m: string, k?: string) => void, warnings: string[]): void {
  const allowPrivate = cfg.egress.dangerouslyAllowPrivateNetworks
  const allowed = cfg.egress.allowedHosts && compileAllowedHosts(cfg.egress.allowedHosts)
  const configuredPorts = configuredPortsOf(configuredUrls(cfg))
  cfg.egress.allowedHosts?.forEach((entry, i) => {
    const parsed = parseAllowedHost(entry)
    if (typeof parsed === 'string') report(['egress', 'allowedHosts', i], parsed)
  })
  if (allowPrivate)
    warnings.push(
      'egress.dangerouslyAllowPrivateNetworks is true: connections may reach loopback and private addresses; use only for local development and tests',
    )
  if (cfg.store.dangerouslyUseEphemeralKey)
    warnings.push('store.dangerouslyUseEphemeralKey is true: tokens are encrypted with a key that dies with the process')

  /** `egress`: Keyway itself calls this URL, so the allowlist applies; browser-only URLs skip it. */
  const checkUrl = (url: string, where: readonly PropertyKey[], what: string, egress = true): void => {
    const u = new URL(url)
    if (u.protocol === 'http:' && !allowPrivate)
      report(where, `${what} uses http://; only https:// is allowed unless egress.dangerouslyAllowPrivateNetworks is true`)
    const verdict = egress && allowed ? checkAllowedTarget(u, allowed, configuredPorts) : 'allowed'
    if (verdict === 'host-not-allowed') report(where, `host "${u.hostname}" is not in egress.allowedHosts`)
    else if (verdict === 'port-not-allowed')
      report(where, `port ${effectivePort(u)} of host "${u.hostname}" is not in egress.allowedHosts, which names that host only with other ports`)
    if (!allowPrivate && isLoopbackHostname(u.hostname))
      report(where, `${what} points at a loopback address; allowed only with egress.dangerouslyAllowPrivateNetworks`)
  }

  for (const [name, c] of Object.entries(cfg.connections)) {
    const where = ['connections', name]
    if (!CONNECTION_NAME_PATTERN.test(name)) report(where, 'connection name must match ^[A-Za-z0-9_-]{1,64}$ (it is the tool name)')
    const host = new URL(c.host)
    if (host.pathname !== '/' || host.search || host.hash || host.username || host.password)
      report([...where, 'host'], 'host must be an origin only (scheme://host[:port]); put the path in basePath')
    checkUrl(c.host, [...where, 'host'], 'host')
    if (/[?#\\]|(^|\/)\.\.?(\/|$)|%2e|%2f|%5c/i.test(c.basePath))
      report([...where, 'basePath'], 'basePath must be a plain path without dot segments, encoded separators, query or fragment')
    if (c.auth.type !== 'bearer_token') checkOAuth(c.auth, [...where, 'auth'], report, checkUrl)
    checkMcp(c, where, report)
  }
  mcpWarnings(cfg, warnings)
  if (cfg.identity.oidc) checkUrl(cfg.identity.oidc.issuer, ['identity', 'oidc', 'issuer'], 'issuer', false)

  const names = new Set(Object.keys(cfg.connections))
  cfg.grants.forEach((g, i) => {
    if (!names.has(g.on)) report(['grants', i, 'on'], `grant names unknown connection "${g.on}"`)
  })
  checkServicePrincipals(cfg, report, warnings)
  if (ACCOUNT_USERS_GROUP in cfg.groups)
    report(['groups', ACCOUNT_USERS_GROUP], `"${ACCOUNT_USERS_GROUP}" is built in (every authenticated caller) and cannot be defined`)
  const seen = new Map<string, number>()
  cfg.identity.apiKeys.forEach((k, i) => {
    const first = seen.get(k.sha256)
    if (first !== undefined) report(['identity', 'apiKeys', i, 'sha256'], `same key hash as identity.apiKeys[${first}]`)
    else seen.set(k.sha256, i)
  })
  const publicUrl = new URL(cfg.server.publicUrl)
  if (publicUrl.pathname !== '/' || publicUrl.search || publicUrl.hash)
    report(['server', 'publicUrl'], 'publicUrl must be an origin (scheme://host[:port]) with no path')
}

/**
 * Service principals act without a person: they cannot sign in at a browser, so they cannot own a
 * connection whose token comes from a person's sign-in, nor use a per-user one (README "Service
 * principals"). A principal no mapping defines is only a warning: the mapping may come later.
 */
function checkServicePrincipals(cfg: ConfigFile, report: (p: readonly PropertyKey[], m: string) => void, warnings: string[]): void {
  const defined = new Set(Object.values(cfg.identity.oidc?.servicePrincipals ?? {}).map((e) => e.name))
  const undefinedNamed = new Set<string>()
  const note = (p: Principal): void => {
    if ('servicePrincipal' in p && !defined.has(p.servicePrincipal)) undefinedNamed.add(p.servicePrincipal)
  }
  for (const [name, c] of Object.entries(cfg.connections)) {
    note(c.owner)
    if ('servicePrincipal' in c.owner && (c.auth.type === 'oauth_u2m_shared' || c.auth.type === 'oauth_u2m_per_user'))
      report(['connections', name, 'owner'], `a service principal cannot own an ${c.auth.type} connection: its token comes from a person signing in`)
  }
  cfg.grants.forEach((g, i) => {
    note(g.to)
    const auth = Object.hasOwn(cfg.connections, g.on) ? cfg.connections[g.on]?.auth.type : undefined
    if ('servicePrincipal' in g.to && auth === 'oauth_u2m_per_user')
      report(['grants', i, 'to'], `a service principal cannot use the oauth_u2m_per_user connection "${g.on}": each caller's own account is a person's`)
  })
  for (const sp of undefinedNamed)
    warnings.push(`service principal "${sp}" is named in owners or grants, but no identity.oidc.servicePrincipals entry maps a client to it`)
}

/** The catalog credential a connection uses: the configured one, else owner for per-user auth, shared otherwise. */
function catalogCredentialOf(c: ConfigFile['connections'][string]): CatalogCredential {
  return c.mcp?.catalog.credential ?? (c.auth.type === 'oauth_u2m_per_user' ? 'owner' : 'shared')
}

/** The `mcp` block belongs to `protocol: mcp` connections, and its catalog credential must exist for the auth method. */
function checkMcp(c: ConfigFile['connections'][string], where: readonly PropertyKey[], report: (p: readonly PropertyKey[], m: string) => void): void {
  if (c.protocol !== 'mcp') {
    if (c.mcp) report([...where, 'mcp'], 'mcp settings apply only to connections with protocol: mcp')
    return
  }
  if (c.readOnly) report([...where, 'readOnly'], 'readOnly applies to HTTP connections (protocol: http); an MCP upstream decides what its tools do')
  const credential = catalogCredentialOf(c)
  const at = [...where, 'mcp', 'catalog', 'credential']
  if (c.auth.type === 'oauth_u2m_per_user' && credential === 'shared')
    report(at, "an oauth_u2m_per_user connection has no shared credential; use owner (the owner user's token) or caller (each caller's own)")
  if (c.auth.type === 'oauth_u2m_per_user' && credential === 'owner' && !('user' in c.owner))
    report(at, 'catalog credential owner needs an owner { user: ID } with their own token on this per-user connection; set owner to a user or use caller')
  for (const key of ['include', 'exclude'] as const)
    c.mcp?.[key]?.forEach((pattern, i) => {
      if (pattern.indexOf('*') !== -1 && pattern.indexOf('*') !== pattern.length - 1)
        report([...where, 'mcp', key, i], `"${pattern}": * is allowed only at the end (a prefix match)`)
    })
}

/** Exposed names that may clash: two MCP upstreams under one prefix, an HTTP tool named like an upstream's tools. */
function mcpWarnings(cfg: ConfigFile, warnings: string[]): void {
  const exposed = Object.entries(cfg.connections).filter(([, c]) => c.isMcpConnection)
  const prefixes = new Map<string, string[]>()
  for (const [name, c] of exposed)
    if (c.protocol === 'mcp') {
      const prefix = c.mcp?.prefix ?? name
      prefixes.set(prefix, [...(prefixes.get(prefix) ?? []), name])
    }
  for (const [prefix, names] of prefixes)
    if (names.length > 1)
      warnings.push(
        `connections ${names.map((n) => `"${n}"`).join(', ')} share the mcp prefix "${prefix}": of tools with the same name, only the first connection's is exposed`,
      )
  for (const [name, c] of exposed)
    if (c.protocol === 'http')
      for (const [prefix, owners] of prefixes)
        if (name.startsWith(`${prefix}__`))
          warnings.push(
            `the HTTP tool "${name}" starts with "${prefix}__", the prefix of "${owners[0] ?? prefix}": an upstream tool of that name would be left out`,
          )
}

function checkOAuth(
  auth: Exclude<AuthMethodConfig, { type: 'bearer_token' }>,
  where: readonly PropertyKey[],
  report: (p: readonly PropertyKey[], m: string) => void,
  checkUrl: (url: string, where: readonly PropertyKey[], what: string, egress?: boolean) => void,
): void {
  if (!auth.issuer && !auth.tokenEndpoint) report(where, 'give either issuer (discovery) or tokenEndpoint')
  if (auth.type !== 'oauth_m2m' && !auth.issuer && !auth.authorizationEndpoint) report(where, `${auth.type} needs issuer (discovery) or authorizationEndpoint`)
  for (const key of ['issuer', 'authorizationEndpoint', 'tokenEndpoint', 'revocationEndpoint'] as const) {
    const v = auth[key]
    // The browser, not Keyway, visits the authorization endpoint.
    if (v) checkUrl(v, [...where, key], key, key !== 'authorizationEndpoint')
  }
}

/**
 * Advice `keyway validate` gives about consent links (not load warnings: every command that
 * loads the file would repeat them). API-key mode cannot tell who opens a per-user link, so
 * without `auth.accountMatch` whoever signs in at the provider is bound (README "Consent links
 * and provider accounts").
 */
export function consentWarnings(snapshot: ConfigSnapshot): string[] {
  if (snapshot.identity.oidc?.browserClient) return []
  return [...snapshot.connections.values()]
    .filter((c) => c.auth.type === 'oauth_u2m_per_user' && c.auth.accountMatch === undefined)
    .map((c) => `connections.${c.name}.auth: ${FORWARDED_LINK_WARNING}`)
}

/** Every URL the config names that Keyway itself may dial or send a browser to (their ports are allowed). */
function configuredUrls(cfg: ConfigFile): string[] {
  const urls: string[] = []
  for (const c of Object.values(cfg.connections)) {
    urls.push(c.host)
    if (c.auth.type === 'bearer_token') continue
    for (const v of [c.auth.issuer, c.auth.authorizationEndpoint, c.auth.tokenEndpoint, c.auth.revocationEndpoint]) if (v) urls.push(v)
  }
  return urls
}

type SecretResolver = (ref: SecretRef) => Secret | string

function createSecretResolver(dir: string, env: Env): SecretResolver {
  // Each file is read once per load, even when several references name it.
  const files = new Map<string, string | Error>()
  return (ref) => {
    if ('env' in ref) {
      const v = env[ref.env]
      return v === undefined || v === '' ? `environment variable ${ref.env} is not set` : new Secret(v)
    }
    const abs = path.resolve(dir, ref.file)
    let v = files.get(abs)
    if (v === undefined) {
      try {
        v = readFileSyncTrimmed(abs)
      } catch (e) {
        v = e as Error
      }
      files.set(abs, v)
    }
    if (v instanceof Error) return `cannot read secret file ${abs} (${(v as NodeJS.ErrnoException).code ?? v.message})`
    return v === '' ? `secret file ${abs} is empty` : new Secret(v)
  }
}

function readFileSyncTrimmed(file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
}

function buildSnapshot(cfg: ConfigFile, file: string, dir: string, secret: (ref: SecretRef, where: readonly PropertyKey[]) => Secret): ConfigSnapshot {
  const connections = new Map<string, Connection>()
  for (const [name, c] of Object.entries(cfg.connections)) {
    const base = c.basePath.endsWith('/') ? c.basePath : `${c.basePath}/`
    const where = ['connections', name, 'auth']
    const auth: AuthMethod =
      c.auth.type === 'bearer_token'
        ? { type: 'bearer_token', token: secret(c.auth.token, [...where, 'token']) }
        : {
            type: c.auth.type,
            issuer: c.auth.issuer,
            authorizationEndpoint: c.auth.authorizationEndpoint,
            tokenEndpoint: c.auth.tokenEndpoint,
            revocationEndpoint: c.auth.revocationEndpoint,
            clientId: c.auth.clientId,
            clientSecret: secret(c.auth.clientSecret, [...where, 'clientSecret']),
            scopes: c.auth.scopes,
            credentialExchange: c.auth.credentialExchange,
            authorizationParams: c.auth.authorizationParams,
            tokenParams: c.auth.tokenParams,
            accountMatch: c.auth.type === 'oauth_m2m' ? undefined : c.auth.accountMatch,
          }
    connections.set(name, {
      name,
      origin: safeOrigin(c.host),
      basePath: base,
      protocol: c.protocol,
      isMcpConnection: c.isMcpConnection,
      owner: c.owner,
      description: c.description,
      readOnly: c.readOnly,
      timeoutMs: c.timeoutMs ?? cfg.egress.timeoutMs,
      maxResponseBytes: c.maxResponseBytes ?? cfg.egress.maxResponseBytes,
      maxConcurrentRequests: c.maxConcurrentRequests ?? cfg.egress.maxConcurrentRequests,
      maxConcurrentRequestsPerCaller: c.maxConcurrentRequestsPerCaller ?? cfg.egress.maxConcurrentRequestsPerCaller,
      auth,
      mcp:
        c.protocol === 'mcp'
          ? {
              prefix: c.mcp?.prefix ?? name,
              include: c.mcp?.include,
              exclude: c.mcp?.exclude ?? [],
              catalogCredential: catalogCredentialOf(c),
              refreshSeconds: c.mcp?.catalog.refreshSeconds ?? DEFAULT_CATALOG_REFRESH_S,
              onUnavailable: c.mcp?.onUnavailable ?? 'omit',
            }
          : undefined,
    })
  }
  const groupsOf = new Map<string, string[]>()
  for (const [group, users] of Object.entries(cfg.groups)) {
    for (const u of users) groupsOf.set(u, [...(groupsOf.get(u) ?? []), group])
  }
  const oidc = cfg.identity.oidc
  const publicUrl = cfg.server.publicUrl.replace(/\/+$/, '')
  const storeUrl = cfg.store.url.startsWith('sqlite://') ? `sqlite://${path.resolve(dir, cfg.store.url.slice('sqlite://'.length))}` : cfg.store.url
  return {
    file,
    server: {
      publicUrl,
      host: cfg.server.host,
      port: cfg.server.port,
      allowedHosts: cfg.server.allowedHosts,
      maxRequestBytes: cfg.server.maxRequestBytes,
      maxConnections: cfg.server.maxConnections,
      drainTimeoutMs: cfg.server.drainTimeoutMs,
    },
    identity: {
      oidc: oidc && {
        issuer: oidc.issuer,
        audience: oidc.audience ?? `${publicUrl}/mcp`,
        userClaim: oidc.userClaim,
        groupsClaim: oidc.groupsClaim,
        requiredScopes: oidc.requiredScopes,
        algorithms: oidc.algorithms,
        introspection: oidc.introspection && {
          clientId: oidc.introspection.clientId,
          clientSecret: secret(oidc.introspection.clientSecret, ['identity', 'oidc', 'introspection', 'clientSecret']),
          cacheTtlSeconds: oidc.introspection.cacheTtlSeconds,
          callsPerMinutePerAddress: oidc.introspection.callsPerMinutePerAddress,
        },
        browserClient: oidc.browserClient && {
          clientId: oidc.browserClient.clientId,
          clientSecret: secret(oidc.browserClient.clientSecret, ['identity', 'oidc', 'browserClient', 'clientSecret']),
        },
        servicePrincipals: new Map(Object.entries(oidc.servicePrincipals).map(([clientId, e]) => [clientId, { name: e.name, groups: e.groups }])),
        maxTokenLifetimeSeconds: oidc.maxTokenLifetimeSeconds,
        groupsClaimSeparator: oidc.groupsClaimSeparator,
      },
      apiKeys: new Map(cfg.identity.apiKeys.map((k) => [k.sha256, { user: k.user, groups: k.groups }])),
      stdioUser: cfg.identity.stdioUser,
      servicePrincipals: servicePrincipalGroups(oidc?.servicePrincipals ?? {}),
    },
    store: {
      url: storeUrl,
      password: cfg.store.password && secret(cfg.store.password, ['store', 'password']),
      sentinelPassword: cfg.store.sentinelPassword && secret(cfg.store.sentinelPassword, ['store', 'sentinelPassword']),
      encryptionKey: cfg.store.encryptionKey && secret(cfg.store.encryptionKey, ['store', 'encryptionKey']),
      encryptionKeys: cfg.store.encryptionKeys.map((ref, i) => secret(ref, ['store', 'encryptionKeys', i])),
      dangerouslyUseEphemeralKey: cfg.store.dangerouslyUseEphemeralKey,
    },
    audit: { file: path.resolve(dir, cfg.audit.file) },
    egress: {
      allowedHosts: cfg.egress.allowedHosts,
      dangerouslyAllowPrivateNetworks: cfg.egress.dangerouslyAllowPrivateNetworks,
      configuredPorts: configuredPortsOf(configuredUrls(cfg)),
      timeoutMs: cfg.egress.timeoutMs,
      maxResponseBytes: cfg.egress.maxResponseBytes,
      maxConcurrentRequests: cfg.egress.maxConcurrentRequests,
      maxConcurrentRequestsPerCaller: cfg.egress.maxConcurrentRequestsPerCaller,
    },
    groupsOf,
    groups: cfg.groups,
    connections,
    grants: cfg.grants.map((g) => ({ on: g.on, to: g.to })),
    tools: [...connections.values()].filter((c) => c.isMcpConnection && c.protocol === 'http').sort(byName),
    mcpConnections: [...connections.values()].filter((c) => c.isMcpConnection && c.protocol === 'mcp').sort(byName),
  }
}

function byName(a: Connection, b: Connection): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0
}

/** Name → groups; several clients may map to one service principal, which then holds all their groups. */
function servicePrincipalGroups(mapping: Readonly<Record<string, { readonly name: string; readonly groups: readonly string[] }>>): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const e of Object.values(mapping)) out.set(e.name, [...new Set([...(out.get(e.name) ?? []), ...e.groups])])
  return out
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin
  } catch {
    return url
  }
}

/** Finds the line of the deepest node of `pathParts` present in the document. */
function lineOf(doc: Document, pathParts: readonly PropertyKey[], at: (o: number | undefined) => number, keyName?: string): number {
  const parts = pathParts.map<string | number>((p) => (typeof p === 'symbol' ? String(p) : p))
  for (let n = parts.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(parts.slice(0, n), true)
    if (node === undefined || node === null) continue
    if (n === parts.length && keyName !== undefined && isMap(node)) {
      const pair = node.items.find((it) => isScalar(it.key) && it.key.value === keyName)
      if (pair && isScalar(pair.key)) return at(pair.key.range?.[0])
    }
    if (n === parts.length && typeof parts[n - 1] === 'string') {
      // Point at the key of a mapping entry rather than its value.
      const parent = n === 1 ? doc.contents : doc.getIn(parts.slice(0, n - 1), true)
      if (isMap(parent)) {
        const pair = parent.items.find((it) => isScalar(it.key) && it.key.value === parts[n - 1])
        if (pair && isScalar(pair.key)) return at(pair.key.range?.[0])
      }
    }
    const range = (node as { range?: [number, number, number] }).range
    return at(range?.[0])
  }
  return 1
}

function formatPath(pathParts: readonly PropertyKey[], keyName?: string): string {
  const parts = keyName === undefined ? pathParts : [...pathParts, keyName]
  if (parts.length === 0) return '(root)'
  let out = ''
  for (const p of parts) {
    if (typeof p === 'number') out += `[${p}]`
    else {
      const s = String(p)
      out += /^[A-Za-z0-9_-]+$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`
    }
  }
  return out
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s
}
