/**
 * Waiting on a condition instead of sleeping through a fixed time: poll every 10 ms until the
 * check holds (or the probe gives a value), failing with what was awaited once the time is up.
 * @module
 */

const POLL_MS = 10

/** Resolves once `check()` is true; rejects with "timed out waiting for <what>" after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  await waitFor(what, async () => ((await check()) ? true : undefined), timeoutMs)
}

/** The first value `probe()` gives that is not undefined; rejects with "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (${timeoutMs} ms)`)
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}
