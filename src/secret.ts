/**
 * A secret value that cannot leak by accident: `String()`, JSON and `util.inspect` all print
 * `[redacted]`; only `reveal()` returns the value. Config loading turns every secret reference
 * into one of these, and nothing else in Keyway holds a raw credential for longer than a call.
 * @module
 */

import { rememberSecret } from './redact.js'

const values = new WeakMap<Secret, string>()

export class Secret {
  constructor(raw: string) {
    values.set(this, raw)
    rememberSecret(raw, 'config')
    Object.freeze(this)
  }

  reveal(): string {
    const v = values.get(this)
    if (v === undefined) throw new TypeError('secret has no value')
    return v
  }

  toString(): string {
    return '[redacted]'
  }

  toJSON(): string {
    return '[redacted]'
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'Secret([redacted])'
  }
}
