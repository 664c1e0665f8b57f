/**
 * Which settings a hot reload applies and which need a restart (README "Governing: hot reload and
 * instant REVOKE"): one entry per leaf of the config schema (`schema.ts`), `live` or `restart`.
 * A `live` setting is read from the snapshot of each request or call; a `restart` one was used
 * once at start (the listening socket, the token store, the audit file, the stdio user), and its
 * entry says how to read it from a snapshot so a reload that changes it can be reported by name.
 * `test/unit/config/reload-rules.test.ts` checks that every schema leaf is here and that the
 * README lists the same settings. Pure: no I/O.
 * @module
 */
import type { ConfigSnapshot } from './load.js'

/** How a reload treats one setting. */
export type ReloadRule = { readonly applies: 'live' } | { readonly applies: 'restart'; readonly read: (s: ConfigSnapshot) => unknown }

const live: ReloadRule = { applies: 'live' }
const restart = (read: (s: ConfigSnapshot) => unknown): ReloadRule => ({ applies: 'restart', read })
/** Compared by value, never logged: a secret file or variable may change under the same reference. */
const secret = (v: { reveal(): string } | undefined): string | undefined => v?.reveal()

/**
 * Every setting of the config file by its path (records and arrays as a whole: `connections`,
 * `grants`, `identity.apiKeys`). Identity settings are live because the verifier and the browser
 * sign-in are built per `identity.oidc` object of the snapshot (`runtime.ts`); `server.publicUrl`
 * is live because consent links, metadata, the default audience and the Host allowlist are all
 * read from the live snapshot.
 */
export const RELOAD_RULES = {
  version: live,
  'server.publicUrl': live,
  'server.host': restart((s) => s.server.host),
  'server.port': restart((s) => s.server.port),
  'server.allowedHosts': live,
  'server.maxRequestBytes': live,
  'server.maxConnections': restart((s) => s.server.maxConnections),
  'server.drainTimeoutMs': live,
  'identity.oidc.issuer': live,
  'identity.oidc.audience': live,
  'identity.oidc.userClaim': live,
  'identity.oidc.groupsClaim': live,
  'identity.oidc.requiredScopes': live,
  'identity.oidc.algorithms': live,
  'identity.oidc.introspection.clientId': live,
  'identity.oidc.introspection.clientSecret': live,
  'identity.oidc.introspection.cacheTtlSeconds': live,
  'identity.oidc.introspection.callsPerMinutePerAddress': live,
  'identity.oidc.servicePrincipals': live,
  'identity.oidc.maxTokenLifetimeSeconds': live,
  'identity.oidc.groupsClaimSeparator': live,
  'identity.oidc.browserClient.clientId': live,
  'identity.oidc.browserClient.clientSecret': live,
  'identity.apiKeys': live,
  'identity.stdioUser': restart((s) => s.identity.stdioUser),
  'store.url': restart((s) => s.store.url),
  'store.password': restart((s) => secret(s.store.password)),
  'store.sentinelPassword': restart((s) => secret(s.store.sentinelPassword)),
  'store.encryptionKey': restart((s) => secret(s.store.encryptionKey)),
  'store.encryptionKeys': restart((s) => s.store.encryptionKeys.map((k) => k.reveal()).join('\u0000')),
  'store.dangerouslyUseEphemeralKey': restart((s) => s.store.dangerouslyUseEphemeralKey),
  'audit.file': restart((s) => s.audit.file),
  'egress.allowedHosts': live,
  'egress.dangerouslyAllowPrivateNetworks': live,
  'egress.timeoutMs': live,
  'egress.maxResponseBytes': live,
  'egress.maxConcurrentRequests': live,
  'egress.maxConcurrentRequestsPerCaller': live,
  groups: live,
  // `protocol` and `mcp` too: a connection's upstream tool list is cached under a fingerprint of
  // its settings, so a changed one is refetched at the next ask (`mcp-upstream/catalog.ts`).
  connections: live,
  grants: live,
} as const satisfies Record<string, ReloadRule>

export type SettingPath = keyof typeof RELOAD_RULES

/** The settings that need a restart, in table order. */
export function restartSettings(): SettingPath[] {
  return settingPaths().filter((p) => RELOAD_RULES[p].applies === 'restart')
}

/** The settings a reload applies, in table order. */
export function liveSettings(): SettingPath[] {
  return settingPaths().filter((p) => RELOAD_RULES[p].applies === 'live')
}

/** Restart-only settings whose value differs between two snapshots: what a reload cannot apply. */
export function restartOnlyChanges(previous: ConfigSnapshot, next: ConfigSnapshot): SettingPath[] {
  return settingPaths().filter((p) => {
    const rule: ReloadRule = RELOAD_RULES[p]
    return rule.applies === 'restart' && rule.read(previous) !== rule.read(next)
  })
}

function settingPaths(): SettingPath[] {
  return Object.keys(RELOAD_RULES) as SettingPath[]
}
