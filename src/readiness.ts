/**
 * What `/readyz` and the start-up banner say (README "Shutdown and readiness"), as pure
 * functions of facts the runtime gathers: each check by name, and the one rule of which failing
 * checks stop service (503) and which are only reported. It probes nothing itself and never puts
 * an address, a problem line or an error text in the public answer (those go to the log); it only
 * names which check failed.
 * @module
 */
import type { BackendKind } from './store/index.js'

/** The last outcome of reading the config file on disk. */
export type ReloadState = { readonly kind: 'ok' } | { readonly kind: 'rejected'; readonly problems: readonly string[]; readonly sinceMs: number }

/** The outcome of one probe of a dependency; `error` is for the log, never for the wire. */
export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly error: string }

export interface ReadinessFacts {
  readonly draining: boolean
  readonly connections: number
  /** Whether some connection keeps its credentials in the token store (every OAuth method does). */
  readonly storeNeeded: boolean
  readonly storeBackend: BackendKind
  readonly store: ProbeResult
  /** The issuer's metadata and signing keys; undefined without `identity.oidc`. */
  readonly oidc: ProbeResult | undefined
  /** Whether callers can also get in without OIDC (`identity.apiKeys`). */
  readonly apiKeys: boolean
  /** The config file watcher's state; undefined when nothing watches a file (in-process use). */
  readonly reload: ReloadState | undefined
}

export interface ReadinessCheck {
  readonly ok: boolean
  /** Present on a failing check: true when this failure alone makes `/readyz` answer 503. */
  readonly blocking?: boolean
  readonly [detail: string]: unknown
}

export type ReadinessStatus = 'ready' | 'not_ready' | 'draining'

export interface ReadinessReport {
  readonly status: ReadinessStatus
  readonly connections: number
  readonly checks: Readonly<Record<string, ReadinessCheck>>
}

/**
 * The checks and the verdict. 503 (`not_ready` or `draining`) only for what stops service:
 * - `draining`: the process is shutting down (new tool calls are refused);
 * - `store`: the token store does not answer and some connection keeps credentials in it;
 * - `oidc`: the issuer's keys are unavailable and OIDC is the only way in (no API keys).
 * Reported without 503: a config file on disk that was rejected (the last good config serves),
 * a store that no connection needs, OIDC keys while API keys still let callers in.
 */
export function assessReadiness(f: ReadinessFacts): { readonly httpStatus: 200 | 503; readonly report: ReadinessReport } {
  const checks: Record<string, ReadinessCheck> = {}
  checks.config = { ok: true, connections: f.connections }
  if (f.reload)
    checks.reload =
      f.reload.kind === 'ok'
        ? { ok: true }
        : {
            ok: false,
            blocking: false,
            state: 'rejected',
            problems: f.reload.problems.length,
            since: new Date(f.reload.sinceMs).toISOString(),
            message: 'the config file on disk was rejected; the last good config stays live (see the server log or run keyway validate)',
          }
  checks.store = f.store.ok
    ? { ok: true, backend: f.storeBackend }
    : { ok: false, blocking: f.storeNeeded, backend: f.storeBackend, message: 'token store not reachable' }
  if (f.oidc) checks.oidc = f.oidc.ok ? { ok: true } : { ok: false, blocking: !f.apiKeys, message: 'oidc issuer keys unavailable' }
  checks.draining = f.draining ? { ok: false, blocking: true, message: 'server shutting down' } : { ok: true }
  const blocked = Object.values(checks).some((c) => !c.ok && c.blocking === true)
  const status: ReadinessStatus = f.draining ? 'draining' : blocked ? 'not_ready' : 'ready'
  return { httpStatus: status === 'ready' ? 200 : 503, report: { status, connections: f.connections, checks } }
}
