/**
 * The readiness verdict (`src/readiness.ts`): each check by name, 503 only for what stops service
 * (draining; the store when a connection needs it; OIDC keys when OIDC is the only way in), a
 * rejected file reported without its problem text, and store URLs printed without passwords.
 */
import { describe, expect, test } from 'vitest'
import { assessReadiness, type ReadinessFacts } from '../../src/readiness.js'

const HEALTHY: ReadinessFacts = {
  draining: false,
  connections: 3,
  storeNeeded: true,
  storeBackend: 'redis',
  store: { ok: true },
  oidc: undefined,
  apiKeys: true,
  reload: { kind: 'ok' },
}

describe('assessReadiness', () => {
  test('healthy: 200 ready with every check named', () => {
    const { httpStatus, report } = assessReadiness(HEALTHY)
    expect(httpStatus).toBe(200)
    expect(report).toEqual({
      status: 'ready',
      connections: 3,
      checks: { config: { ok: true, connections: 3 }, reload: { ok: true }, store: { ok: true, backend: 'redis' }, draining: { ok: true } },
    })
  })

  test.each([
    ['draining', { draining: true }, 503, 'draining', 'draining', true],
    ['store down, needed', { store: { ok: false, error: 'connect ECONNREFUSED 10.0.0.5:6379' } }, 503, 'not_ready', 'store', true],
    ['store down, not needed', { store: { ok: false, error: 'x' }, storeNeeded: false }, 200, 'ready', 'store', false],
    ['oidc down, only way in', { oidc: { ok: false, error: 'x' }, apiKeys: false }, 503, 'not_ready', 'oidc', true],
    ['oidc down, api keys too', { oidc: { ok: false, error: 'x' } }, 200, 'ready', 'oidc', false],
    ['file rejected', { reload: { kind: 'rejected', problems: ['/etc/keyway.yaml:3 bogus: unknown key'], sinceMs: 0 } }, 200, 'ready', 'reload', false],
  ] as const)('%s', (_name, change, http, status, check, blocking) => {
    const { httpStatus, report } = assessReadiness({ ...HEALTHY, ...change })
    expect(httpStatus).toBe(http)
    expect(report.status).toBe(status)
    expect(report.checks[check]).toMatchObject({ ok: false, blocking })
    // Nothing of the probes' errors or the problem lines reaches the public answer.
    const text = JSON.stringify(report)
    expect(text).not.toContain('10.0.0.5')
    expect(text).not.toContain('bogus')
  })

  test('a rejected file is counted and dated; oidc appears only when configured; no watcher, no reload check', () => {
    const { report } = assessReadiness({ ...HEALTHY, reload: { kind: 'rejected', problems: ['a', 'b'], sinceMs: Date.UTC(2026, 0, 2) }, oidc: { ok: true } })
    expect(report.checks.reload).toMatchObject({ ok: false, state: 'rejected', problems: 2, since: '2026-01-02T00:00:00.000Z' })
    expect(report.checks.oidc).toEqual({ ok: true })
    expect(assessReadiness({ ...HEALTHY, reload: undefined }).report.checks.reload).toBeUndefined()
    expect(assessReadiness(HEALTHY).report.checks.oidc).toBeUndefined()
  })
})
