/**
 * `/readyz` and the start-up banner tell the truth (README "Shutdown and readiness"), against a
 * spawned `keyway serve` (the built bin) whose config is hot-reloaded between the checks: a token
 * store on a closed Redis port (banner warning without the password, 503 while an OAuth
 * connection needs the store, reported but 200 once none does), an OIDC issuer that is down
 * (banner warning, reported but 200 while API keys still let callers in, 503 once OIDC is the
 * only way in), and a rejected file on disk (reported by name and count, never its problem text,
 * and warned about again every interval until a good file loads).
 */
import { describe, expect, test } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { apiKeyLines, writeTempConfig } from '../helpers/config.js'
import { freePort } from '../helpers/free-port.js'
import { spawnKeyway, type SpawnedKeyway } from '../helpers/spawn-keyway.js'

const REDIS_PASSWORD = 'sk-CANARY-redis-password-7f3a'
const REMINDER_MS = 100

interface Report {
  status: string
  connections: number
  checks: Record<string, { ok: boolean; blocking?: boolean; [k: string]: unknown }>
}

async function readyz(k: SpawnedKeyway): Promise<{ status: number; report: Report; text: string }> {
  const res = await fetch(`${(k.mcpUrl as string).replace(/\/mcp$/, '')}/readyz`)
  const text = await res.text()
  return { status: res.status, report: JSON.parse(text) as Report, text }
}

const bearer = (name: string): string => `  ${name}:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: bearer_token, token: { env: KW_TEST_TOKEN } }
`

describe('readiness and start-up', () => {
  test('store unreachable: banner warning (no password), 503 while an OAuth connection needs the store, 200 once none does [serve:readiness]', async () => {
    const closed = await freePort()
    const text = (withOAuth: boolean): string => `version: 1
server: { port: 0 }
identity:
  apiKeys:
${apiKeyLines()}
store: { url: "redis://:${REDIS_PASSWORD}@127.0.0.1:${closed}", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
connections:
${bearer('docs')}${
      withOAuth
        ? `  crm:
    host: https://api.example.com
    isMcpConnection: true
    owner: { user: alice@example.com }
    auth: { type: oauth_m2m, tokenEndpoint: "https://login.example.com/token", clientId: keyway, clientSecret: { env: KW_TEST_TOKEN } }
`
        : ''
    }`
    const { file } = await writeTempConfig(text(true))
    await using k = await spawnKeyway(['serve', '--config', file], { env: { KW_TEST_TOKEN: 'sk-test' } })
    const banner = (await k.waitForStderr(/keyway: listening on .*\n/))[0]
    expect(banner).toContain(`; WARNING token store redis 127.0.0.1:${closed} (db 0, password ***) is not reachable: `)
    expect(banner).toContain('ECONNREFUSED')
    expect(k.stderr()).not.toContain(REDIS_PASSWORD)

    const down = await readyz(k)
    expect(down.status).toBe(503)
    expect(down.report.status).toBe('not_ready')
    expect(down.report.checks.store).toMatchObject({ ok: false, blocking: true, backend: 'redis' })
    expect(down.report.checks.config).toEqual({ ok: true, connections: 2 })
    expect(down.report.checks.draining).toEqual({ ok: true })
    // The public answer names the check, not the address or the error.
    expect(down.text).not.toContain(String(closed))
    expect(down.text).not.toContain('ECONNREFUSED')
    await k.waitForLog((l) => l.msg === 'readiness checks failing' && String(l.storeError).includes('ECONNREFUSED'))

    // No connection keeps credentials in the store any more: reported, not blocking.
    await writeFile(file, text(false))
    await k.waitForLog((l) => l.msg === 'config reloaded')
    const bearerOnly = await readyz(k)
    expect(bearerOnly.status).toBe(200)
    expect(bearerOnly.report.status).toBe('ready')
    expect(bearerOnly.report.checks.store).toMatchObject({ ok: false, blocking: false })
    expect(k.stderr()).not.toContain(REDIS_PASSWORD)
  })

  test('OIDC issuer down: banner warning, 200 while API keys let callers in; a rejected file is reported and warned about every interval; 503 once OIDC is the only way in [serve:readiness]', async () => {
    const closed = await freePort()
    const issuer = `http://127.0.0.1:${closed}`
    const text = (apiKeys: boolean): string => `version: 1
server: { port: 0 }
identity:
  oidc: { issuer: "${issuer}" }
${apiKeys ? `  apiKeys:\n${apiKeyLines()}\n` : ''}store: { url: "memory://", dangerouslyUseEphemeralKey: true }
audit: { file: ./audit.jsonl }
egress: { dangerouslyAllowPrivateNetworks: true }
connections:
${bearer('docs')}`
    const { file } = await writeTempConfig(text(true))
    await using k = await spawnKeyway(['serve', '--config', file], { env: { KW_TEST_TOKEN: 'sk-test', KEYWAY_REJECTED_CONFIG_LOG_MS: String(REMINDER_MS) } })
    const banner = (await k.waitForStderr(/keyway: listening on .*\n/))[0]
    expect(banner).toContain(`; WARNING OIDC issuer ${issuer} keys are not available: issuer metadata`)
    expect(banner).not.toContain('token store')

    const withKeys = await readyz(k)
    expect(withKeys.status).toBe(200)
    expect(withKeys.report.status).toBe('ready')
    expect(withKeys.report.checks.oidc).toMatchObject({ ok: false, blocking: false, message: 'oidc issuer keys unavailable' })
    expect(withKeys.report.checks.store).toEqual({ ok: true, backend: 'memory' })
    expect(withKeys.report.checks.reload).toEqual({ ok: true })

    // A bad edit: the last good config stays live, /readyz says the file was rejected, the log repeats it.
    await writeFile(file, text(true).replace('version: 1', 'version: 1\nbogusKey: true'))
    await k.waitForLog((l) => l.msg === 'config rejected; the last good config stays live')
    const rejected = await readyz(k)
    expect(rejected.status).toBe(200)
    expect(rejected.report.checks.reload).toMatchObject({ ok: false, blocking: false, state: 'rejected', problems: 1 })
    expect(Date.parse(String(rejected.report.checks.reload?.since))).toBeGreaterThan(0)
    expect(rejected.text).not.toContain('bogusKey')
    const reminders = (): Record<string, unknown>[] =>
      k.logs().filter((l) => l.msg === 'config file on disk is still rejected; the last good config stays live')
    await k.waitForLog(() => reminders().length >= 2)
    expect(reminders()[0]).toMatchObject({ problemCount: 1 })

    // A good file without API keys: reload ok, and OIDC, now the only way in, stops service.
    await writeFile(file, text(false))
    await k.waitForLog((l) => l.msg === 'config reloaded')
    const oidcOnly = await readyz(k)
    expect(oidcOnly.status).toBe(503)
    expect(oidcOnly.report.status).toBe('not_ready')
    expect(oidcOnly.report.checks.reload).toEqual({ ok: true })
    expect(oidcOnly.report.checks.oidc).toMatchObject({ ok: false, blocking: true })
  })
})
