/**
 * Shared fixture of the inventory unit tests: a config with one connection per auth method, a
 * memory token store with a fresh key, and token records with canary values that no output may
 * contain.
 * @module
 */
import { randomBytes } from 'node:crypto'
import type { ConfigSnapshot } from '../../../src/config/load.js'
import { Secret } from '../../../src/secret.js'
import { openTokenStore, type TokenMethod, type TokenRecord, type TokenStore } from '../../../src/store/index.js'
import { loadTestConfig } from '../../helpers/config.js'

export const NOW = Date.parse('2026-11-28T10:00:00.000Z')
export const MIN = 60_000

/** Every token and secret value of the fixture: none may appear in any output. */
export const CANARIES = ['ghp_CANARY_bearer', 'CANARY_client_secret'] as const

const OAUTH = `authorizationEndpoint: https://idp.example.com/authorize
      tokenEndpoint: https://idp.example.com/token
      clientId: keyway
      clientSecret: { env: CLIENT_SECRET }`

/** gh (bearer), svc (m2m), crm (shared), drive (per-user); `extra` adds connections. */
export function configYaml(extra = ''): string {
  return `version: 1
store: { url: "memory://", encryptionKey: { env: KEY } }
connections:
  gh:
    host: https://api.github.com
    owner: { user: admin@example.com }
    auth: { type: bearer_token, token: { env: GH_TOKEN } }
  svc:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: oauth_m2m
      ${OAUTH}
  crm:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_shared
      ${OAUTH}
  drive:
    host: https://api.example.com
    owner: { user: admin@example.com }
    auth:
      type: oauth_u2m_per_user
      ${OAUTH}
${extra}`
}

export const ENV = { KEY: randomBytes(32).toString('base64'), GH_TOKEN: 'ghp_CANARY_bearer', CLIENT_SECRET: 'CANARY_client_secret' }

export async function snapshotOf(yaml = configYaml()): Promise<ConfigSnapshot> {
  return (await loadTestConfig(yaml, ENV)).snapshot
}

export function openMemoryStore(): Promise<TokenStore> {
  return openTokenStore({ url: 'memory://', encryptionKey: new Secret(ENV.KEY), encryptionKeys: [], dangerouslyUseEphemeralKey: false }, { warn: () => {} })
}

let serial = 0

/** A record whose token values are unique canaries (`CANARY_at_…`, `CANARY_rt_…`). */
export function record(method: TokenMethod, over: Partial<TokenRecord> = {}): TokenRecord {
  const n = ++serial
  return {
    method,
    accessToken: `CANARY_at_${n}`,
    ...(method === 'oauth_m2m' ? {} : { refreshToken: `CANARY_rt_${n}` }),
    tokenType: 'bearer',
    obtainedAt: NOW - 60 * MIN,
    expiresAt: NOW + 42 * MIN,
    ...over,
  }
}
