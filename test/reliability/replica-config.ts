/**
 * What the fault drills share: the config of a `keyway serve` replica on a private Redis (API keys
 * of the test users, one `oauth_m2m` or `oauth_u2m_shared` connection per drill, each with its own
 * token endpoint), a replica spawned from the built bin on a free port, and a token store opened
 * on the same Redis with the same key, to seed and read records the way a replica would.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { Secret } from '../../src/secret.js'
import { openTokenStore, type TokenStore } from '../../src/store/index.js'
import { apiKeyLines, writeTempConfig } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { spawnKeyway, type SpawnedKeyway } from '../helpers/spawn-keyway.js'

export interface DrillConnection {
  readonly name: string
  readonly type: 'oauth_m2m' | 'oauth_u2m_shared'
  readonly tokenUrl: string
  readonly upstream: string
}

/** The environment every replica of one drill file gets: the store key and the client secret. */
export function drillEnv(): Record<string, string> {
  return { KW_DRILL_STORE_KEY: randomBytes(32).toString('base64'), KW_DRILL_CLIENT_SECRET: `drill-secret-${randomBytes(8).toString('hex')}` }
}

export function replicaConfig(port: number, redisUrl: string, connections: readonly DrillConnection[]): string {
  return `version: 1
server: { publicUrl: http://127.0.0.1:${port}, host: 127.0.0.1, port: ${port} }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "${redisUrl}", encryptionKey: { env: KW_DRILL_STORE_KEY } }
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
${connections
  .map(
    (c) => `  ${c.name}:
    host: ${c.upstream}
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: ${c.type}, tokenEndpoint: "${c.tokenUrl}", authorizationEndpoint: "${c.tokenUrl.replace(/\/token$/, '/authorize')}", clientId: drill, clientSecret: { env: KW_DRILL_CLIENT_SECRET }, scopes: [api:read] }`,
  )
  .join('\n')}
grants:
${connections.map((c) => `  - { privilege: USE CONNECTION, on: ${c.name}, to: { user: bob@example.com } }`).join('\n')}
`
}

export interface Replica {
  readonly keyway: SpawnedKeyway
  /** The `tool.call` audit lines written so far (`./data/audit.jsonl` next to its config). */
  toolCalls(): Promise<Record<string, unknown>[]>
}

/** A `keyway serve` replica from the built bin (run `npm run build` first). */
export async function startReplica(redisUrl: string, connections: readonly DrillConnection[], env: Readonly<Record<string, string>>): Promise<Replica> {
  const port = await freePort()
  const { dir, file } = await writeTempConfig(replicaConfig(port, redisUrl, connections))
  const keyway = await spawnKeyway(['serve', '--config', file], { cwd: dir, env })
  return {
    keyway,
    toolCalls: async () =>
      (await readFile(path.join(dir, 'data', 'audit.jsonl'), 'utf8').catch(() => ''))
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((e) => e.type === 'tool.call'),
  }
}

/** The store the replicas share, opened from the test with their key and namespace. */
export function openDrillStore(redisUrl: string, env: Readonly<Record<string, string>>): Promise<TokenStore> {
  return openTokenStore(
    { url: redisUrl, encryptionKey: new Secret(env.KW_DRILL_STORE_KEY ?? ''), encryptionKeys: [], dangerouslyUseEphemeralKey: false },
    { warn: () => {} },
  )
}

/** Milliseconds a promise took, with its value. */
export async function timed<T>(p: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now()
  const value = await p()
  return { value, ms: performance.now() - started }
}
