/**
 * The config file format (design.md §2) as one zod schema: the single source of truth for the
 * TypeScript types, for load-time validation and for `config/connections.schema.json`. Every
 * object is strict, so an unknown key is an error. This module only describes shapes; cross
 * checks that need the whole file live in `load.ts`.
 * @module
 */
import * as z from 'zod'
import { STORE_SCHEMES } from '../store/backend.js'
import { redisUrlProblem } from '../store/redis-url.js'

/** A reference to a secret; secrets never appear inline in the file. */
export const SecretRefSchema = z
  .union(
    [
      z.strictObject({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }),
      z.strictObject({ file: z.string().min(1) }),
    ],
    { error: 'must be a secret reference { env: NAME } or { file: PATH }; secrets are never written inline' },
  )
  .describe('a secret reference: { env: NAME } or { file: PATH } (relative to the config file)')
export type SecretRef = z.infer<typeof SecretRefSchema>

export const CONNECTION_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/
export const ConnectionNameSchema = z.string().regex(CONNECTION_NAME_PATTERN, 'must match ^[A-Za-z0-9_-]{1,64}$')

const UserIdSchema = z.string().min(1).max(320)
const GroupNameSchema = z.string().min(1).max(256)

/**
 * A service principal's name: chosen by the admin, printed in audit lines and messages, so it is
 * kept to a readable id (no spaces, quotes or control characters).
 */
export const SERVICE_PRINCIPAL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const ServicePrincipalNameSchema = z.string().regex(SERVICE_PRINCIPAL_NAME_PATTERN, 'must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')

export const PrincipalSchema = z
  .union(
    [z.strictObject({ user: UserIdSchema }), z.strictObject({ group: GroupNameSchema }), z.strictObject({ servicePrincipal: ServicePrincipalNameSchema })],
    { error: 'must be { user: ID }, { group: NAME } or { servicePrincipal: NAME }' },
  )
  .describe('{ user: ID }, { group: NAME } or { servicePrincipal: NAME }')
export type Principal = z.infer<typeof PrincipalSchema>

export const CREDENTIAL_EXCHANGES = ['header_and_body', 'body_only', 'header_only'] as const
export type CredentialExchange = (typeof CREDENTIAL_EXCHANGES)[number]

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' })

const oauthClientFields = {
  issuer: httpUrl.optional().describe('discovery: <issuer>/.well-known/openid-configuration or oauth-authorization-server'),
  authorizationEndpoint: httpUrl.optional(),
  tokenEndpoint: httpUrl.optional(),
  revocationEndpoint: httpUrl.optional(),
  clientId: z.string().min(1),
  clientSecret: SecretRefSchema,
  scopes: z.array(z.string().min(1)).default([]),
  credentialExchange: z
    .enum(CREDENTIAL_EXCHANGES)
    .optional()
    .describe('client authentication at the token endpoint; left out, chosen from the provider metadata'),
  authorizationParams: z.record(z.string(), z.string()).default({}).describe('extra authorization request parameters, e.g. access_type: offline'),
  tokenParams: z.record(z.string(), z.string()).default({}).describe('extra token request parameters, e.g. audience or resource'),
}

/**
 * Which provider account a sign-in must use (README "Consent links and provider accounts"): the
 * provider's email (verified, by default) equal to the Keyway user, or its `sub` as mapped here.
 */
export const AccountMatchSchema = z
  .discriminatedUnion(
    'claim',
    [
      z.strictObject({
        claim: z.literal('email'),
        verified: z.boolean().default(true).describe('require email_verified: true from the provider'),
      }),
      z.strictObject({
        claim: z.literal('sub'),
        map: z.record(UserIdSchema, z.string().min(1)).describe('Keyway user → the provider sub their sign-in must carry'),
      }),
    ],
    { error: 'must be { claim: email, verified?: BOOLEAN } or { claim: sub, map: { USER: PROVIDER_SUB } }' },
  )
  .describe('the provider account a consent must be made with; left out, whoever signs in is bound')
export type AccountMatch = z.infer<typeof AccountMatchSchema>

export const AuthMethodSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('bearer_token'), token: SecretRefSchema }),
  z.strictObject({ type: z.literal('oauth_m2m'), ...oauthClientFields }),
  z.strictObject({ type: z.literal('oauth_u2m_shared'), ...oauthClientFields, accountMatch: AccountMatchSchema.optional() }),
  z.strictObject({ type: z.literal('oauth_u2m_per_user'), ...oauthClientFields, accountMatch: AccountMatchSchema.optional() }),
])
export type AuthMethodConfig = z.infer<typeof AuthMethodSchema>
export type AuthType = AuthMethodConfig['type']
export type OAuthMethodConfig = Extract<AuthMethodConfig, { type: 'oauth_m2m' | 'oauth_u2m_shared' | 'oauth_u2m_per_user' }>

const positiveMs = z.number().int().positive().max(600_000)
const positiveBytes = z
  .number()
  .int()
  .positive()
  .max(64 * 1024 * 1024)
// Far above any sane limit; a typo of a few zeros should not switch the limit off.
const concurrency = z.number().int().positive().max(100_000)

/** What an upstream MCP server's exposed tool names start with: `<prefix>__<tool>` (design.md §12). */
export const MCP_PREFIX_PATTERN = /^[A-Za-z0-9_-]{1,40}$/

/** Whose credential fetches an upstream MCP server's tool list: the owner's, the shared one, or each caller's own. */
export const CATALOG_CREDENTIALS = ['owner', 'shared', 'caller'] as const
export type CatalogCredential = (typeof CATALOG_CREDENTIALS)[number]

// `*` only as the last character (a prefix match); checked in load.ts so the message can name the pattern.
const ToolPatternSchema = z.string().min(1).max(200)

export const McpSettingsSchema = z
  .strictObject({
    prefix: z
      .string()
      .regex(MCP_PREFIX_PATTERN, 'must match ^[A-Za-z0-9_-]{1,40}$')
      .optional()
      .describe('exposed tools are <prefix>__<tool>; default: the connection name'),
    include: z.array(ToolPatternSchema).optional().describe('upstream tool names to expose; NAME exact, PREFIX* a prefix match; left out, all'),
    exclude: z.array(ToolPatternSchema).default([]).describe('upstream tool names never exposed (wins over include)'),
    catalog: z
      .strictObject({
        credential: z
          .enum(CATALOG_CREDENTIALS)
          .optional()
          .describe('whose credential lists the tools; default: owner for oauth_u2m_per_user, shared otherwise; caller: one list per user'),
        refreshSeconds: z.number().int().min(10).max(86_400).default(600).describe('how long a fetched tool list is used before it is fetched again'),
      })
      .prefault({}),
    onUnavailable: z.enum(['omit', 'error']).default('omit').describe('when the upstream cannot list its tools: leave them out of tools/list, or fail it'),
  })
  .describe('upstream MCP server settings (protocol: mcp only)')
export type McpSettingsConfig = z.infer<typeof McpSettingsSchema>

export const ConnectionSchema = z.strictObject({
  host: httpUrl.describe('origin of the external API, e.g. https://api.github.com'),
  basePath: z.string().startsWith('/', 'must start with /').default('/'),
  protocol: z.enum(['http', 'mcp']).default('http').describe('what the upstream speaks: an HTTP API (one tool), or MCP (its tools are exposed)'),
  isMcpConnection: z.boolean().default(false).describe('expose to MCP clients: the connection as a tool, or (protocol: mcp) its upstream tools'),
  owner: PrincipalSchema,
  description: z.string().max(1024).optional(),
  readOnly: z.boolean().default(false).describe('only GET requests; the tool is annotated readOnlyHint'),
  timeoutMs: positiveMs.optional(),
  maxResponseBytes: positiveBytes.optional(),
  maxConcurrentRequests: concurrency.optional().describe('requests in flight on this connection; more fail fast with UPSTREAM_BUSY'),
  maxConcurrentRequestsPerCaller: concurrency.optional().describe('requests in flight per caller on this connection; more fail fast with UPSTREAM_BUSY'),
  auth: AuthMethodSchema,
  mcp: McpSettingsSchema.optional(),
})
export type ConnectionConfig = z.infer<typeof ConnectionSchema>

export const GrantSchema = z.strictObject({
  privilege: z.literal('USE CONNECTION'),
  on: z.string().min(1),
  to: PrincipalSchema,
})
export type GrantConfig = z.infer<typeof GrantSchema>

export const ApiKeySchema = z.strictObject({
  user: UserIdSchema,
  groups: z.array(GroupNameSchema).default([]),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters (keyway hash-key)'),
  description: z.string().optional(),
})

/** Upper bound of `introspection.cacheTtlSeconds`: how late a revocation at the issuer may be noticed. */
export const MAX_INTROSPECTION_CACHE_TTL_S = 300

export const OidcSchema = z.strictObject({
  issuer: httpUrl,
  audience: z.string().min(1).optional().describe('default: server.publicUrl + /mcp'),
  userClaim: z.string().min(1).default('sub'),
  groupsClaim: z.string().min(1).default('groups'),
  requiredScopes: z.array(z.string().min(1)).default([]),
  algorithms: z
    .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
    .default(['RS256', 'PS256', 'ES256', 'EdDSA']),
  introspection: z
    .strictObject({
      clientId: z.string().min(1),
      clientSecret: SecretRefSchema,
      cacheTtlSeconds: z
        .number()
        .int()
        .min(0)
        .max(MAX_INTROSPECTION_CACHE_TTL_S)
        .default(60)
        .describe('how long an introspection answer is remembered; a revoked token keeps working up to this long; 0: ask every time'),
      callsPerMinutePerAddress: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(10)
        .describe('introspection calls one client address may cause per minute for tokens not in the cache'),
    })
    .optional()
    .describe('verify opaque access tokens by RFC 7662 introspection'),
  servicePrincipals: z
    .record(
      z.string().min(1),
      z.strictObject({
        name: ServicePrincipalNameSchema,
        groups: z.array(GroupNameSchema).default([]),
      }),
    )
    .default({})
    .describe('client id → service principal, for tokens that carry no user (client credentials)'),
  maxTokenLifetimeSeconds: z
    .number()
    .int()
    .positive()
    .max(366 * 24 * 3600)
    .optional()
    .describe('refuse tokens whose exp - iat (or exp - now without iat) is longer'),
  groupsClaimSeparator: z.string().min(1).max(8).optional().describe('split a groups claim given as one string on this; unset, such a string is one group'),
  browserClient: z
    .strictObject({
      clientId: z.string().min(1),
      clientSecret: SecretRefSchema,
    })
    .optional()
    .describe("Keyway's own client at the issuer, to sign people in at consent links"),
})

export const ConfigSchema = z.strictObject({
  version: z.literal(1),
  server: z
    .strictObject({
      publicUrl: httpUrl.default('http://127.0.0.1:8787'),
      host: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(8787),
      allowedHosts: z.array(z.string().min(1)).optional().describe('Host header values accepted at /mcp when binding beyond loopback'),
      maxRequestBytes: positiveBytes
        .default(1_048_576)
        .describe("largest /mcp request body, counted as it arrives (413 beyond it); also the cap of one tool call's arguments"),
      maxConnections: z.number().int().positive().max(1_000_000).default(1024).describe('open connections per listener; further ones are closed at once'),
      // 25 s + the 2 s Keyway needs to answer and close fits Kubernetes' default 30 s grace period.
      drainTimeoutMs: z
        .number()
        .int()
        .min(0)
        .max(600_000)
        .default(25_000)
        .describe('on SIGTERM/SIGINT, how long tool calls in flight may take to finish before their upstream requests are aborted'),
    })
    .prefault({}),
  identity: z
    .strictObject({
      oidc: OidcSchema.optional(),
      apiKeys: z.array(ApiKeySchema).default([]),
      stdioUser: UserIdSchema.optional(),
    })
    .prefault({}),
  store: z
    .strictObject({
      url: z
        .string()
        .regex(/^(sqlite:\/\/|memory:\/\/|redis:\/\/|rediss:\/\/|redis\+sentinel:\/\/|redis\+cluster:\/\/)/, `must start with ${STORE_SCHEMES}`)
        .superRefine((url, ctx) => {
          const problem = redisUrlProblem(url)
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
        })
        .default('sqlite://./data/keyway.sqlite')
        .describe('redis+sentinel://host:26379,host:26379/<masterName>[/<db>] or redis+cluster://host:6379,host:6379 for high availability'),
      password: SecretRefSchema.optional().describe('Redis password (AUTH) of the data nodes; keep it out of store.url'),
      sentinelPassword: SecretRefSchema.optional().describe('AUTH password of the Sentinels (redis+sentinel:// only), when they require one'),
      encryptionKey: SecretRefSchema.optional().describe('32 random bytes, base64 (openssl rand -base64 32)'),
      encryptionKeys: z.array(SecretRefSchema).default([]).describe('older keys: records they wrote still decrypt, new writes use encryptionKey'),
      dangerouslyUseEphemeralKey: z.boolean().default(false).describe('development only: a random key per process, so stored tokens do not survive a restart'),
    })
    .prefault({}),
  audit: z
    .strictObject({
      file: z.string().min(1).default('./data/audit.jsonl'),
    })
    .prefault({}),
  egress: z
    .strictObject({
      allowedHosts: z
        .array(z.string().min(1))
        .optional()
        .describe('host, *.domain, IP or [v6], optionally :port; without a port, the default port and the ports the config names on that host'),
      dangerouslyAllowPrivateNetworks: z.boolean().default(false),
      timeoutMs: positiveMs.default(30_000),
      maxResponseBytes: positiveBytes.default(262_144),
      maxConcurrentRequests: concurrency.default(64).describe('default requests in flight per connection'),
      maxConcurrentRequestsPerCaller: concurrency.default(16).describe('default requests in flight per caller per connection'),
    })
    .prefault({}),
  groups: z.record(GroupNameSchema, z.array(UserIdSchema)).default({}),
  connections: z.record(z.string(), ConnectionSchema).default({}),
  grants: z.array(GrantSchema).default([]),
})
export type ConfigFile = z.infer<typeof ConfigSchema>
export type ConfigFileInput = z.input<typeof ConfigSchema>
