/**
 * Redaction of the secrets a call used, before anything reaches the model, the log or the
 * audit (README "Security model", docs/architecture.md "Redaction"). An upstream that echoes
 * its request (a `/headers` debug route, an error page quoting the token, a token endpoint
 * quoting its form) must not hand the credential back to the caller in any shape, so each
 * secret is matched in every form a server is likely to write it in:
 *
 * - raw, URL-encoded (upper- and lowercase hex), `application/x-www-form-urlencoded`, and the
 *   stricter encoding some clients put in `Basic` credentials (RFC 6749 §2.3.1);
 * - JSON-escaped (`\/` as PHP writes it, `\u` escapes are caught after parsing by {@link redactJsonValue});
 * - base64 and base64url at each of the three byte alignments, so the secret is found inside a
 *   longer encoded value too: `Basic base64(client_id:secret)`, a base64-encoded header dump.
 *
 * Matching is on bytes of the whole body before it is decoded, so a secret split across
 * network chunks is one match; at the edge of a truncated body a partial secret is cut as well.
 * This module knows nothing of HTTP or MCP; it must not log or keep what it redacts beyond the
 * bounded caches below.
 * @module
 */

export const REDACTED = '[REDACTED]'
const REDACTED_BYTES = Buffer.from(REDACTED)

/** Shorter values are not treated as secrets: they would match ordinary text. */
export const MIN_SECRET_CHARS = 4
/** A base64 fragment shorter than this is too likely to occur by chance in encoded data. */
const MIN_ENCODED_CHARS = 6
/** At the edge of a truncated body, a prefix of a secret at least this long is cut. */
const MIN_EDGE_CHARS = 4
/** Bound on cached secret forms; tokens change rarely, so this is a safety net for churn. */
const FORMS_CACHE_MAX = 1024

export interface Forms {
  readonly text: readonly string[]
  readonly bytes: readonly Buffer[]
}

const EMPTY_FORMS: Forms = { text: [], bytes: [] }
// Keyed by the secret, or by the secrets of a credential joined with NUL: a call's forms are
// looked up, not rebuilt, on the hot path.
const formsCache = new Map<string, Forms>()

function cached(key: string, compute: () => Forms): Forms {
  const hit = formsCache.get(key)
  if (hit !== undefined) return hit
  const forms = compute()
  if (formsCache.size >= FORMS_CACHE_MAX) formsCache.clear()
  formsCache.set(key, forms)
  return forms
}

/** Every form of one secret that is matched, longest first. */
export function secretForms(secret: string): Forms {
  return cached(secret, () => computeForms(secret))
}

function computeForms(secret: string): Forms {
  if (secret.length < MIN_SECRET_CHARS) return EMPTY_FORMS
  const set = new Set<string>([secret])
  const uri = encodeURIComponent(secret)
  set.add(uri)
  set.add(uri.replace(/%[0-9A-F]{2}/g, (t) => t.toLowerCase()))
  const form = new URLSearchParams({ v: secret }).toString().slice(2)
  set.add(form)
  // RFC 6749 Appendix B as some clients read it (openid-client's Basic header among them): every
  // character but letters and digits escaped.
  const strict = uri.replace(/[-_.!~*'()]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  set.add(strict)
  const json = JSON.stringify(secret).slice(1, -1)
  set.add(json)
  set.add(json.replaceAll('/', '\\/'))
  for (const variant of new Set([secret, form, strict])) for (const core of base64Cores(Buffer.from(variant))) set.add(core)
  const text = [...set].filter((s) => s.length >= MIN_SECRET_CHARS).sort((a, b) => b.length - a.length)
  return { text, bytes: text.map((s) => Buffer.from(s)) }
}

/**
 * The characters of base64(secret) that do not depend on the bytes around it, for the secret
 * starting at each byte offset modulo 3 within a longer encoded value, in both alphabets.
 */
function base64Cores(bytes: Buffer): string[] {
  const out: string[] = []
  for (let k = 0; k < 3; k++) {
    const encoded = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64')
    const core = encoded.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6))
    if (core.length < MIN_ENCODED_CHARS) continue
    out.push(core, core.replaceAll('+', '-').replaceAll('/', '_'))
  }
  return out
}

/** The forms of several secrets together, longest first (a longer form may contain a shorter one). */
export function formsOf(secrets: readonly string[]): Forms {
  if (secrets.length === 0) return EMPTY_FORMS
  if (secrets.length === 1) return secretForms(secrets[0] as string)
  return cached(secrets.join('\u0000'), () => {
    const text = [...new Set(secrets.flatMap((s) => secretForms(s).text))].sort((a, b) => b.length - a.length)
    return { text, bytes: text.map((s) => Buffer.from(s)) }
  })
}

export interface Redacted<T> {
  readonly value: T
  /** How many occurrences were replaced. */
  readonly count: number
}

/**
 * Replaces every form in `body` with `[REDACTED]`. With `truncated`, a tail that is the start
 * of a form (the cap cut a secret in two) is replaced as well. Returns `body` itself when
 * nothing matched, so the common case allocates nothing.
 */
export function redactBytes(body: Buffer, forms: Forms, truncated = false): Redacted<Buffer> {
  let out = body
  let count = 0
  for (const form of forms.bytes) {
    let at = out.indexOf(form)
    if (at === -1) continue
    const parts: Buffer[] = []
    let from = 0
    while (at !== -1) {
      parts.push(out.subarray(from, at), REDACTED_BYTES)
      count++
      from = at + form.length
      at = out.indexOf(form, from)
    }
    parts.push(out.subarray(from))
    out = Buffer.concat(parts)
  }
  if (truncated) {
    const cut = partialTail(out, forms.bytes)
    if (cut > 0) {
      out = Buffer.concat([out.subarray(0, out.length - cut), REDACTED_BYTES])
      count++
    }
  }
  return { value: out, count }
}

/** Length of the longest tail of `body` that is a proper prefix of a form (0 if none). */
function partialTail(body: Buffer, forms: readonly Buffer[]): number {
  let longest = 0
  for (const form of forms) {
    for (let len = Math.min(form.length - 1, body.length); len >= MIN_EDGE_CHARS && len > longest; len--) {
      if (body.subarray(body.length - len).equals(form.subarray(0, len))) {
        longest = len
        break
      }
    }
  }
  return longest
}

/** Replaces every form in `text` with `[REDACTED]`. */
export function redactText(text: string, forms: Forms): Redacted<string> {
  let out = text
  let count = 0
  for (const form of forms.text) {
    if (!out.includes(form)) continue
    const pieces = out.split(form)
    count += pieces.length - 1
    out = pieces.join(REDACTED)
  }
  return { value: out, count }
}

/**
 * Redacts every string (and key) of a parsed JSON value. Needed only when the raw body held
 * `\u` escapes, which can spell a secret that the byte scan cannot see.
 */
export function redactJsonValue(value: unknown, forms: Forms): Redacted<unknown> {
  let count = 0
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      const r = redactText(v, forms)
      count += r.count
      return r.value
    }
    if (Array.isArray(v)) return v.map(walk)
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = {}
      for (const [k, inner] of Object.entries(v)) out[walk(k) as string] = walk(inner)
      return out
    }
    return v
  }
  const redacted = walk(value)
  return { value: redacted, count }
}

// --- Process-wide registry, for the operational log and command output ------------------

/**
 * Bounds on remembered secrets. Every line is checked against each one's forms, so the bounds
 * keep a log line cheap: the config's secrets (a handful, kept across reloads up to the bound)
 * and the tokens of the most recent calls.
 */
const REMEMBERED_CONFIG_MAX = 256
const REMEMBERED_TOKENS_MAX = 64
const rememberedConfig = new Set<string>()
const rememberedTokens = new Set<string>()

/**
 * Remembers a secret this process holds, so that no log line or command output prints it,
 * whatever an error message quoted: `config` for the config's secrets (`Secret`), `token` for
 * tokens a call used. The oldest of a kind is forgotten first.
 */
export function rememberSecret(value: string, kind: 'config' | 'token' = 'token'): void {
  const set = kind === 'config' ? rememberedConfig : rememberedTokens
  if (value.length < MIN_SECRET_CHARS || set.has(value)) return
  if (set.size >= (kind === 'config' ? REMEMBERED_CONFIG_MAX : REMEMBERED_TOKENS_MAX)) {
    const oldest = set.values().next().value
    if (oldest !== undefined) set.delete(oldest)
  }
  set.add(value)
}

/** `text` with every remembered secret redacted. */
export function redactRemembered(text: string): string {
  let out = text
  for (const set of [rememberedConfig, rememberedTokens]) for (const secret of set) out = redactText(out, secretForms(secret)).value
  return out
}
