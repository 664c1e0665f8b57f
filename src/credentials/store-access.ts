/**
 * Opening the token store to look, from commands that only inspect it (`keyway validate`, `keyway
 * sql` SHOW/DESCRIBE), where the store may legitimately be out of reach: the shell may lack the
 * encryption key, the store may be `memory://` (inside the server process only), Redis may be
 * down. Those are answers with a reason, not failures of the command. A SQLite file that does
 * not exist yet is an empty store, and is not created by looking. Only the `store` settings'
 * secrets are resolved (`storeSettingsFromText`), so a shell without the connections' secrets
 * can still look. This module reads; it never writes a token.
 * @module
 */
import { access } from 'node:fs/promises'
import { parseDocument, stringify } from 'yaml'
import { loadConfigText, type Env } from '../config/load.js'
import { errorMessage } from '../log.js'
import { openTokenStore, type StoreSettings, type TokenStore } from '../store/index.js'

/**
 * Redis timeouts while inspecting: long enough for a healthy server, short enough that an
 * unreachable one does not hold `keyway validate` up (the server's defaults are similar).
 */
export const INSPECT_REDIS_TIMEOUT_MS = 2_000

/** What opening the store to look came to. */
export type StoreInspection =
  | { readonly kind: 'open'; readonly store: TokenStore }
  /** Nothing can be stored there yet (a SQLite file that does not exist). */
  | { readonly kind: 'empty' }
  /** The store cannot be looked at from here; `reason` says why, without a secret. */
  | { readonly kind: 'unavailable'; readonly reason: string }

/**
 * Opens the store the settings describe, for listing. The caller closes an `open` store.
 * Never throws for an unreachable, unopenable or keyless store: that is `unavailable`.
 */
export async function openStoreToInspect(settings: StoreSettings): Promise<StoreInspection> {
  if (settings.url.startsWith('memory://')) return { kind: 'unavailable', reason: 'store.url is memory://, which keeps tokens only inside the server process' }
  if (settings.encryptionKey === undefined && settings.dangerouslyUseEphemeralKey)
    return {
      kind: 'unavailable',
      reason: 'store.dangerouslyUseEphemeralKey without store.encryptionKey: records are sealed with a key only the server process knows',
    }
  if (settings.url.startsWith('sqlite://')) {
    try {
      await access(settings.url.slice('sqlite://'.length))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'empty' }
      // Anything else (permissions) is reported by the open below.
    }
  }
  try {
    const store = await openTokenStore(settings, {
      warn: () => {},
      backend: { connectTimeoutMs: INSPECT_REDIS_TIMEOUT_MS, commandTimeoutMs: INSPECT_REDIS_TIMEOUT_MS },
    })
    return { kind: 'open', store }
  } catch (e) {
    return { kind: 'unavailable', reason: errorMessage(e) }
  }
}

/**
 * The `store` settings of a config text with only their secrets resolved: for commands that
 * load the file with `skipSecrets` (`keyway sql`) but want to read the store. The store section
 * is loaded on its own through the config loader, so references resolve exactly as
 * `keyway serve` resolves them (relative to the file's folder). `text` must already load.
 */
export async function storeSettingsFromText(
  text: string,
  file: string,
  env: Env,
): Promise<{ readonly ok: true; readonly settings: StoreSettings } | { readonly ok: false; readonly reason: string }> {
  const data: unknown = parseDocument(text).toJS()
  const store = typeof data === 'object' && data !== null && 'store' in data ? data.store : undefined
  const r = await loadConfigText(stringify({ version: 1, ...(store === undefined ? {} : { store }) }), file, { env })
  if (r.ok) return { ok: true, settings: r.snapshot.store }
  // Problems read `file:line path: message`; the line is of the text made here, so only the rest is kept.
  return { ok: false, reason: r.problems.map((p) => withoutLocation(p, file)).join('; ') }
}

function withoutLocation(problem: string, file: string): string {
  if (!problem.startsWith(`${file}:`)) return problem
  const rest = problem.slice(file.length + 1)
  return rest.slice(rest.indexOf(' ') + 1)
}
