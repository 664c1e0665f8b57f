import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest'
import { writeFileAtomic } from '../../../src/admin/write-atomic.js'

// The one fault that cannot be provoked from outside: a rename failing after the temporary file
// is complete. Everything else below runs on the real file system.
const fault = vi.hoisted(() => ({ rename: false }))
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>()
  return {
    ...real,
    rename: async (from: string, to: string): Promise<void> => {
      if (fault.rename) throw Object.assign(new Error(`EXDEV: cross-device link not permitted, rename '${from}' -> '${to}'`), { code: 'EXDEV' })
      return real.rename(from, to)
    },
  }
})

const dirs: string[] = []

afterEach(() => {
  fault.rename = false
})

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keyway-write-atomic-'))
  dirs.push(dir)
  return dir
}

describe('writeFileAtomic', () => {
  test('replaces the content and keeps the permission bits; no temporary file stays', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'connections.yaml')
    await writeFile(file, 'old\n')
    await chmod(file, 0o640)
    await expect(writeFileAtomic(file, 'new\n')).resolves.toBe(file)
    expect(await readFile(file, 'utf8')).toBe('new\n')
    expect((await stat(file)).mode & 0o7777).toBe(0o640)
    expect(await readdir(dir)).toEqual(['connections.yaml'])
  })

  test('an unusual mode (no read for others, setgid) survives too', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'c.yaml')
    await writeFile(file, 'x')
    await chmod(file, 0o2600)
    await writeFileAtomic(file, 'y')
    expect((await stat(file)).mode & 0o7777).toBe(0o2600)
  })

  test('a new file gets the requested mode', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'fresh.yaml')
    await writeFileAtomic(file, 'hello', { mode: 0o604 })
    expect(await readFile(file, 'utf8')).toBe('hello')
    expect((await stat(file)).mode & 0o7777).toBe(0o604)
  })

  test('the file is replaced, not rewritten: a reader holding the old inode still sees the old content', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'c.yaml')
    await writeFile(file, 'old')
    const before = (await stat(file)).ino
    await writeFileAtomic(file, 'new')
    expect((await stat(file)).ino).not.toBe(before)
  })

  test('a symlink is written through: the link stays, its target gets the content', async () => {
    const dir = await tempDir()
    // The Kubernetes layout: connections.yaml -> ..data/connections.yaml, ..data -> ..2026_11_28
    await mkdir(path.join(dir, '..2026_11_28'))
    const real = path.join(dir, '..2026_11_28', 'connections.yaml')
    await writeFile(real, 'old')
    await chmod(real, 0o644)
    await symlink('..2026_11_28', path.join(dir, '..data'))
    const link = path.join(dir, 'connections.yaml')
    await symlink('..data/connections.yaml', link)

    await expect(writeFileAtomic(link, 'new')).resolves.toBe(real)
    expect((await lstat(link)).isSymbolicLink()).toBe(true)
    expect(await readlink(link)).toBe('..data/connections.yaml')
    expect(await readFile(link, 'utf8')).toBe('new')
    expect((await stat(real)).mode & 0o7777).toBe(0o644)
    expect((await readdir(dir)).sort()).toEqual(['..2026_11_28', '..data', 'connections.yaml'])
    expect(await readdir(path.join(dir, '..2026_11_28'))).toEqual(['connections.yaml'])
  })

  test('a symlink to nothing is refused and nothing is created', async () => {
    const dir = await tempDir()
    const link = path.join(dir, 'connections.yaml')
    await symlink('missing.yaml', link)
    await expect(writeFileAtomic(link, 'x')).rejects.toMatchObject({ code: 'ENOENT', message: `${link} is a symlink to a file that does not exist` })
    expect(await readdir(dir)).toEqual(['connections.yaml'])
  })

  test('a folder at the target is refused', async () => {
    const dir = await tempDir()
    await mkdir(path.join(dir, 'c.yaml'))
    await expect(writeFileAtomic(path.join(dir, 'c.yaml'), 'x')).rejects.toMatchObject({ code: 'EISDIR' })
    expect(await readdir(dir)).toEqual(['c.yaml'])
  })

  test('a failed rename leaves the target untouched and no temporary file behind', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'connections.yaml')
    await writeFile(file, 'old\n')
    fault.rename = true
    await expect(writeFileAtomic(file, 'new\n')).rejects.toMatchObject({ code: 'EXDEV' })
    expect(await readFile(file, 'utf8')).toBe('old\n')
    expect(await readdir(dir)).toEqual(['connections.yaml'])
  })

  test('a missing folder fails before anything is written', async () => {
    const dir = await tempDir()
    await expect(writeFileAtomic(path.join(dir, 'no', 'such', 'c.yaml'), 'x')).rejects.toMatchObject({ code: 'ENOENT' })
    expect(await readdir(dir)).toEqual([])
  })

  test.runIf(process.getuid?.() === 0)('run as root, the owner of the file is kept', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'c.yaml')
    await writeFile(file, 'old')
    await chown(file, 4242, 4343)
    await writeFileAtomic(file, 'new')
    const s = await stat(file)
    expect([s.uid, s.gid]).toEqual([4242, 4343])
  })
})
