/**
 * Reads a Redis `store.url` into the topology it names, and describes any `store.url` without its
 * password (for `keyway validate` and the start-up banner). Three forms:
 * `redis://…` / `rediss://…` (one server, parsed by node-redis itself),
 * `redis+sentinel://[[user]:password@]host:port,host:port/<masterName>[/<db>]` (Sentinel; the
 * port defaults to 26379) and `redis+cluster://[[user]:password@]host:port,host:port` (Cluster; the
 * port defaults to 6379). A password in the URL authenticates at the data nodes, as `store.password`
 * does (which wins when both are set); Sentinels use `store.sentinelPassword`. Pure: no I/O, and
 * no message ever contains the URL's password.
 * @module
 */
import { AppError } from '../errors.js'

/** A host and port of a Sentinel or a Cluster node. */
export interface RedisNodeAddress {
  readonly host: string
  readonly port: number
}

/** What a Redis `store.url` names. */
export type RedisTopology =
  | { readonly kind: 'single'; readonly url: string }
  | {
      readonly kind: 'sentinel'
      readonly sentinels: readonly RedisNodeAddress[]
      readonly masterName: string
      readonly db: number
      readonly username?: string
      readonly password?: string
    }
  | { readonly kind: 'cluster'; readonly nodes: readonly RedisNodeAddress[]; readonly username?: string; readonly password?: string }

export const SENTINEL_SCHEME = 'redis+sentinel://'
export const CLUSTER_SCHEME = 'redis+cluster://'
const DEFAULT_SENTINEL_PORT = 26379
const DEFAULT_REDIS_PORT = 6379
/** Sentinel master names: what sentinel.conf accepts in practice, and nothing that needs escaping. */
const MASTER_NAME = /^[A-Za-z0-9._-]{1,128}$/
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/

/** Whether `url` uses one of the Redis schemes (single, Sentinel or Cluster). */
export function isRedisUrl(url: string): boolean {
  return /^(?:rediss?|redis\+sentinel|redis\+cluster):\/\//.test(url)
}

function parseNodes(list: string, defaultPort: number, what: string): RedisNodeAddress[] | string {
  const nodes: RedisNodeAddress[] = []
  for (const entry of list.split(',')) {
    const m = /^(.*?)(?::(\d{1,5}))?$/.exec(entry.trim())
    const host = m?.[1] ?? ''
    const port = m?.[2] === undefined ? defaultPort : Number(m[2])
    if (!HOST.test(host)) return `${what} "${entry.trim()}" is not host:port`
    if (port < 1 || port > 65535) return `${what} "${entry.trim()}" has port ${port}, outside 1-65535`
    nodes.push({ host: host.startsWith('[') ? host.slice(1, -1) : host, port })
  }
  return nodes
}

/** Splits `[user[:password]@]rest`; the credentials are percent-decoded. */
function splitCredentials(afterScheme: string): { readonly rest: string; readonly username?: string; readonly password?: string } | string {
  const at = afterScheme.lastIndexOf('@')
  if (at < 0) return { rest: afterScheme }
  const userinfo = afterScheme.slice(0, at)
  const colon = userinfo.indexOf(':')
  try {
    const username = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon))
    const password = colon < 0 ? undefined : decodeURIComponent(userinfo.slice(colon + 1))
    return { rest: afterScheme.slice(at + 1), ...(username === '' ? {} : { username }), ...(password === undefined || password === '' ? {} : { password }) }
  } catch {
    return 'its user or password part is not valid percent-encoding'
  }
}

/**
 * The problem with a Sentinel or Cluster `store.url`, or `undefined` when it is well formed (or is
 * not one of those two forms). Never quotes the password.
 */
export function redisUrlProblem(url: string): string | undefined {
  const r = readTopology(url)
  return typeof r === 'string' ? r : undefined
}

function readTopology(url: string): RedisTopology | string {
  const sentinel = url.startsWith(SENTINEL_SCHEME)
  if (!sentinel && !url.startsWith(CLUSTER_SCHEME)) return { kind: 'single', url }
  const creds = splitCredentials(url.slice((sentinel ? SENTINEL_SCHEME : CLUSTER_SCHEME).length))
  if (typeof creds === 'string') return creds
  if (/[?#]/.test(creds.rest)) return 'query strings and fragments are not supported here'
  const [hostList = '', ...path] = creds.rest.split('/')
  const auth = { ...(creds.username === undefined ? {} : { username: creds.username }), ...(creds.password === undefined ? {} : { password: creds.password }) }
  if (sentinel) {
    const sentinels = parseNodes(hostList, DEFAULT_SENTINEL_PORT, 'Sentinel')
    if (typeof sentinels === 'string') return sentinels
    const [masterName = '', db = '0', ...extra] = path
    if (masterName === '') return 'a Sentinel URL needs the master name: redis+sentinel://host:26379,host:26379/<masterName>'
    if (!MASTER_NAME.test(masterName)) return `master name "${masterName}" may hold only letters, digits, ".", "_" and "-"`
    if (!/^\d{1,2}$/.test(db) || extra.length > 0) return 'after the master name only a database number may follow (/<masterName>/<db>)'
    return { kind: 'sentinel', sentinels, masterName, db: Number(db), ...auth }
  }
  const nodes = parseNodes(hostList, DEFAULT_REDIS_PORT, 'Cluster node')
  if (typeof nodes === 'string') return nodes
  if (path.some((p) => p !== '')) return 'a Cluster URL has no path: Redis Cluster has only database 0'
  return { kind: 'cluster', nodes, ...auth }
}

/**
 * The topology a Redis `store.url` names.
 * @throws AppError `CONFIG_INVALID` naming `store.url` and the problem (never the password)
 */
export function parseRedisUrl(url: string): RedisTopology {
  const r = readTopology(url)
  if (typeof r === 'string') throw new AppError('CONFIG_INVALID', `store.url: ${r}`, { detail: { setting: 'store.url' } })
  return r
}

/**
 * `store.url` for people: the backend and where it is, with any password replaced by `***`, e.g.
 * `redis sentinel "mymaster" via 127.0.0.1:26379, 127.0.0.1:26380 (db 0)`. A URL that does not
 * parse is described by its scheme only.
 */
export function describeStoreUrl(url: string): string {
  if (url.startsWith('memory://')) return 'memory (this process only)'
  if (url.startsWith('sqlite://')) return `sqlite ${url.slice('sqlite://'.length)}`
  const r = readTopology(url)
  if (typeof r === 'string') return `${url.slice(0, url.indexOf('://'))} (invalid)`
  const list = (nodes: readonly RedisNodeAddress[]): string =>
    nodes.map((n) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(', ')
  const withAuth = (text: string, password: string | undefined): string => (password === undefined ? text : `${text}, password ***`)
  switch (r.kind) {
    case 'sentinel':
      return withAuth(`redis sentinel "${r.masterName}" via ${list(r.sentinels)} (db ${r.db}`, r.password) + ')'
    case 'cluster':
      return withAuth(`redis cluster via ${list(r.nodes)}`, r.password)
    case 'single': {
      const parsed = URL.parse(url)
      if (parsed === null) return 'redis (invalid)'
      const db = parsed.pathname.replace(/^\//, '') || '0'
      return withAuth(`redis ${parsed.protocol === 'rediss:' ? '(TLS) ' : ''}${parsed.host} (db ${db}`, parsed.password === '' ? undefined : '***') + ')'
    }
    default: {
      const never: never = r
      return never
    }
  }
}
