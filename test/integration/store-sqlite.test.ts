/**
 * The token-store contract against the SQLite backend on a real file, plus what only a file can
 * show: created 0600 (and tightened if it was looser), no token bytes anywhere in the file or its
 * WAL, and atomic take / compare-and-swap / lock across separate OS processes sharing the file.
 * @module
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, describe, expect, test } from 'vitest'
import { Secret } from '../../src/secret.js'
import { createBackend } from '../../src/store/backend.js'
import { createKeyring } from '../../src/store/crypto.js'
import { createTokenStore } from '../../src/store/token-store.js'
import { describeTokenStoreContract } from '../contract/token-store.contract.js'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const dirs: string[] = []
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-sqlite-'))
  dirs.push(dir)
  return dir
}
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

describeTokenStoreContract('sqlite', async () => {
  const url = `sqlite://${path.join(await tempDir(), 'store.sqlite')}`
  return { backend: await createBackend(url), openPeer: () => createBackend(url) }
})

describe('sqlite file', () => {
  test('is created 0600 in a new 0700 directory [store:file-0600]', async () => {
    const dir = path.join(await tempDir(), 'nested', 'data')
    const file = path.join(dir, 'keyway.sqlite')
    const backend = await createBackend(`sqlite://${file}`)
    await backend.set('k', 'v')
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(dir)).mode & 0o777).toBe(0o700)
    for (const name of await readdir(dir)) expect((await stat(path.join(dir, name))).mode & 0o077).toBe(0) // -wal, -shm too
    await backend.close()
  })

  test('an existing world-readable file is tightened to 0600', async () => {
    const file = path.join(await tempDir(), 'loose.sqlite')
    await writeFile(file, '')
    await chmod(file, 0o644)
    const backend = await createBackend(`sqlite://${file}`)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    await backend.close()
  })

  test('holds no token, user id or flow secret in its bytes [store:sealed-at-rest]', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'canary.sqlite')
    const canary = `canary${randomBytes(8).toString('hex')}`
    const backend = await createBackend(`sqlite://${file}`)
    const keyring = createKeyring({ current: new Secret(randomBytes(32).toString('base64')), previous: [], dangerouslyUseEphemeralKey: false, warn: () => {} })
    const store = createTokenStore(backend, keyring)
    const user = `${canary}user@example.com`
    await store.putToken(
      { connection: 'gh', user },
      {
        method: 'oauth_u2m_per_user',
        accessToken: `${canary}access`,
        refreshToken: `${canary}refresh`,
        tokenType: 'Bearer',
        obtainedAt: 1,
        subject: `${canary}subject`,
      },
    )
    await store.putTicket('A'.repeat(43), { verifier: `${canary}verifier` }, 60_000)
    const bytes = Buffer.concat(await Promise.all((await readdir(dir)).map((n) => readFile(path.join(dir, n)))))
    expect(bytes.length).toBeGreaterThan(0)
    expect(bytes.includes(canary)).toBe(false)
    expect(bytes.includes('A'.repeat(43))).toBe(false)
    expect(await store.getToken({ connection: 'gh', user })).toMatchObject({ accessToken: `${canary}access` })
    await store.close()
    const after = Buffer.concat(await Promise.all((await readdir(dir)).map((n) => readFile(path.join(dir, n)))))
    expect(after.includes(canary)).toBe(false)
  })

  test('a file that is not a database is STORE_UNAVAILABLE at open', async () => {
    const file = path.join(await tempDir(), 'garbage.sqlite')
    await writeFile(file, randomBytes(4096))
    await expect(createBackend(`sqlite://${file}`)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
  })

  test('calls after close are STORE_UNAVAILABLE', async () => {
    const backend = await createBackend(`sqlite://${path.join(await tempDir(), 'closed.sqlite')}`)
    await backend.close()
    await backend.close()
    await expect(backend.get('k')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' })
  })
})

describe('sqlite across processes', () => {
  const WORKERS = 4
  const TAKES = 100
  const INCREMENTS = 15

  // Runs in a child process under tsx: opens the same file, waits for "go", then races.
  const worker = (backendModule: string): string => `
import { existsSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
const { createSqliteBackend } = await import(${JSON.stringify(backendModule)})
const [file, go, takes, increments] = process.argv.slice(2)
const b = await createSqliteBackend(file)
process.stdout.write('ready\\n')
while (!existsSync(go)) await sleep(2)
// Everyone starts at the same instant and takes the keys one by one in its own random order.
await sleep(Math.max(0, Number(readFileSync(go, 'utf8')) - Date.now()))
const order = Array.from({ length: Number(takes) }, (_, i) => i).sort(() => Math.random() - 0.5)
const won = []
const started = Date.now()
for (const i of order) {
  if ((await b.takeOnce('race:take:' + i)) !== undefined) won.push(i)
  await sleep(Math.random() * 3)
}
const ended = Date.now()
let cas = 0
while (cas < Number(increments)) {
  const cur = await b.get('race:cas')
  if (await b.compareAndSwap('race:cas', cur, String(Number(cur) + 1))) cas++
}
for (let i = 0; i < Number(increments); i++) {
  let h
  while ((h = await b.acquireLock('race:lock', 10000)) === undefined) await sleep(Math.random() * 4)
  const v = await b.get('race:locked')
  await sleep(Math.random() * 2)
  await b.set('race:locked', String(Number(v) + 1))
  if (!(await h.release())) throw new Error('lost the lock')
}
process.stdout.write(JSON.stringify({ won, started, ended }) + '\\n')
await b.close()
`

  test('take-once, compare-and-swap and the lock hold between OS processes', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'shared.sqlite')
    const go = path.join(dir, 'go')
    const script = path.join(dir, 'worker.mts')
    await writeFile(script, worker(pathToFileURL(path.join(repoRoot, 'src/store/sqlite-backend.ts')).href))
    const backend = await createBackend(`sqlite://${file}`)
    for (let i = 0; i < TAKES; i++) await backend.set(`race:take:${i}`, `v${i}`)
    await backend.set('race:cas', '0')
    await backend.set('race:locked', '0')

    let ready = 0
    const children = Array.from({ length: WORKERS }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', script, file, go, String(TAKES), String(INCREMENTS)], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if (d.toString().includes('ready') && ++ready === WORKERS) void writeFile(go, String(Date.now() + 200))
      })
      child.stderr.on('data', (d: Buffer) => void (err += d.toString()))
      return new Promise<{ won: number[]; started: number; ended: number }>((resolve, reject) =>
        child.on('close', (code) => {
          if (code !== 0) return reject(new Error(`worker exited ${code}: ${err}`))
          const last = out.trim().split('\n').at(-1) ?? ''
          resolve(JSON.parse(last) as { won: number[]; started: number; ended: number })
        }),
      )
    })
    const results = await Promise.all(children)
    // Workers tried every key at the same time (at least two overlapped): a real race. Not all
    // four need to overlap; on a loaded two-core machine one may be descheduled throughout.
    const overlapping = results.some((a, i) => results.some((b, j) => i !== j && a.started < b.ended && b.started < a.ended))
    expect(overlapping).toBe(true)
    const wins = results.flatMap((r) => r.won)
    expect(wins.sort((a, b) => a - b)).toEqual(Array.from({ length: TAKES }, (_, i) => i)) // each key taken exactly once
    expect(await backend.get('race:cas')).toBe(String(WORKERS * INCREMENTS))
    expect(await backend.get('race:locked')).toBe(String(WORKERS * INCREMENTS))
    await backend.close()
  }, 60_000)
})
