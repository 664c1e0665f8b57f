/**
 * Finding planted secrets ("canaries") in anything Keyway produced, in whatever form a careless
 * server or a bug could have written them: raw, percent- or form-encoded, JSON-escaped, or inside
 * base64/base64url at any alignment (a Basic header, an encoded dump). Deliberately independent of
 * `src/redact.ts`: it decodes what it finds instead of encoding the secret the same way.
 * @module
 */

/** The names of the canaries found in `text` (empty when clean). */
export function findCanaries(text: string, canaries: Readonly<Record<string, string>>): string[] {
  const views = decodedViews(text)
  return Object.entries(canaries)
    .filter(([, secret]) => views.some((v) => v.includes(secret)))
    .map(([name]) => name)
}

function decodedViews(text: string): string[] {
  const views = new Set<string>([text])
  const unescaped = text.replace(/\\u([0-9a-fA-F]{4})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))).replaceAll('\\/', '/')
  views.add(unescaped)
  for (const v of [text, unescaped]) {
    views.add(percentDecode(v))
    views.add(percentDecode(v.replaceAll('+', ' ')))
  }
  for (const v of [...views]) for (const run of v.match(/[A-Za-z0-9+/_-]{8,}={0,2}/g) ?? []) for (const d of base64Decodings(run)) views.add(d)
  return [...views]
}

function percentDecode(v: string): string {
  return v.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
}

/** `run` decoded as base64 and base64url from each of its first four positions, as latin1 and form-decoded. */
function base64Decodings(run: string): string[] {
  const out: string[] = []
  const std = run.replaceAll('-', '+').replaceAll('_', '/').replace(/=+$/, '')
  for (let skip = 0; skip < 4; skip++) {
    const part = std.slice(skip)
    const usable = part.slice(0, part.length - (part.length % 4 === 1 ? 1 : 0))
    const decoded = Buffer.from(usable, 'base64').toString('latin1')
    out.push(decoded, percentDecode(decoded.replaceAll('+', ' ')))
  }
  return out
}
