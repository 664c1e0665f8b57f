/**
 * Maps and sets that cannot change after they are made: the `ReadonlyMap` / `ReadonlySet`
 * interfaces over a private copy, with no `set`, `add`, `delete` or `clear` to call (and
 * `Map.prototype.set.call` on them throws, as they are not Maps). `Object.freeze` cannot do this
 * for a real Map or Set: it freezes the object, not its entries. Used for what a config snapshot
 * holds (config/load.ts) and a caller's groups (identity/caller.ts), so neither can change once
 * built. Pure; no policy.
 * @module
 */

/** A map nobody can change after construction. */
export class FrozenMap<K, V> implements ReadonlyMap<K, V> {
  readonly #entries: Map<K, V>

  constructor(entries: Iterable<readonly [K, V]> = []) {
    this.#entries = new Map(entries)
    Object.freeze(this)
  }

  get size(): number {
    return this.#entries.size
  }

  get(key: K): V | undefined {
    return this.#entries.get(key)
  }

  has(key: K): boolean {
    return this.#entries.has(key)
  }

  forEach(callback: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    this.#entries.forEach((value, key) => callback.call(thisArg, value, key, this))
  }

  keys(): MapIterator<K> {
    return this.#entries.keys()
  }

  values(): MapIterator<V> {
    return this.#entries.values()
  }

  entries(): MapIterator<[K, V]> {
    return this.#entries.entries()
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.#entries[Symbol.iterator]()
  }

  get [Symbol.toStringTag](): string {
    return 'FrozenMap'
  }
}

/** A set nobody can change after construction. */
export class FrozenSet<T> implements ReadonlySet<T> {
  readonly #values: Set<T>

  constructor(values: Iterable<T> = []) {
    this.#values = new Set(values)
    Object.freeze(this)
  }

  get size(): number {
    return this.#values.size
  }

  has(value: T): boolean {
    return this.#values.has(value)
  }

  forEach(callback: (value: T, value2: T, set: ReadonlySet<T>) => void, thisArg?: unknown): void {
    this.#values.forEach((value) => callback.call(thisArg, value, value, this))
  }

  keys(): SetIterator<T> {
    return this.#values.keys()
  }

  values(): SetIterator<T> {
    return this.#values.values()
  }

  entries(): SetIterator<[T, T]> {
    return this.#values.entries()
  }

  [Symbol.iterator](): SetIterator<T> {
    return this.#values[Symbol.iterator]()
  }

  get [Symbol.toStringTag](): string {
    return 'FrozenSet'
  }
}

/**
 * Freezes a freshly built value all the way down, in place, and returns it: plain objects and
 * arrays are frozen, every Map becomes a `FrozenMap` and every Set a `FrozenSet` (their entries
 * frozen too). Objects of other classes that `keep` names (a `Secret`, say) are left as they are.
 * The same object met twice becomes the same frozen value both times.
 */
export function deepFreeze<T>(value: T, keep: (v: object) => boolean = () => false): T {
  const done = new Map<object, unknown>()
  const visit = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null || keep(v)) return v
    const seen = done.get(v)
    if (seen !== undefined) return seen
    if (v instanceof Map) {
      const frozen = new FrozenMap([...v].map(([k, x]) => [visit(k), visit(x)] as const))
      done.set(v, frozen)
      return frozen
    }
    if (v instanceof Set) {
      const frozen = new FrozenSet([...v].map(visit))
      done.set(v, frozen)
      return frozen
    }
    done.set(v, v)
    if (Object.isFrozen(v)) return v
    const record = v as Record<string, unknown>
    for (const key of Object.keys(record)) record[key] = visit(record[key])
    return Object.freeze(v)
  }
  return visit(value) as T
}
