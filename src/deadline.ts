/**
 * A time limit on a promise: the promise's own outcome, or a rejection once the limit has passed.
 * The work itself is not cancelled (the caller owns that); the timer never keeps the process alive.
 * @module
 */

/** `p`, or a rejection with `Error("<what> within <ms> ms")` once `ms` have passed. */
export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)
    timer.unref()
  })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}
