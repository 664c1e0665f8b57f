/**
 * Replaces a file so that a reader (the server's config reload, another editor) sees either the
 * whole old content or the whole new content, and a crash leaves one of the two on disk: write a
 * temporary file in the same folder, fsync it, rename it over the target, fsync the folder. The
 * target's permission bits (and, where the process may, its owner) are kept.
 *
 * Symlinks are written through: when the target is a symlink (a dotfiles or deployment layout,
 * a Kubernetes-style `..data` link chain), the file it finally points to is replaced in its own
 * folder and the links stay as they are. Renaming over the link instead would silently turn it
 * into a plain file and detach the path from what it was linked to. A read-only mount (a
 * Kubernetes ConfigMap volume) fails with EROFS, which the caller reports; nothing is written.
 * This module knows nothing of YAML or of the config format.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { lstat, open, realpath, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'

export interface WriteAtomicOptions {
  /** Permission bits for a file that does not exist yet (default 0o666 less the umask); an existing file keeps its own. */
  readonly mode?: number
}

/**
 * Writes `data` to `target` atomically (see the module comment); resolves to the path actually
 * replaced (the symlink's final target when `target` is a symlink).
 * @throws the underlying `NodeJS.ErrnoException` (with `code` and `path`) when a step fails; the
 *   temporary file is removed and the target is left untouched.
 */
export async function writeFileAtomic(target: string, data: string | Uint8Array, opts: WriteAtomicOptions = {}): Promise<string> {
  const file = await resolveTarget(path.resolve(target))
  const existing = await stat(file).catch((e: unknown) => {
    if (isErrno(e, 'ENOENT')) return undefined
    throw e
  })
  if (existing && !existing.isFile()) throw errno('EISDIR', `${file} is not a regular file`, file)
  const dir = path.dirname(file)
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  let fh: FileHandle | undefined
  try {
    // O_EXCL: never follow or reuse a file someone else put at the temporary name. The content is
    // written only after the mode is final, so it is never readable more widely than the target.
    fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, existing ? 0o600 : (opts.mode ?? 0o666))
    if (existing) {
      await chownIfPermitted(fh, existing.uid, existing.gid)
      await fh.chmod(existing.mode & 0o7777)
    } else if (opts.mode !== undefined) {
      await fh.chmod(opts.mode)
    }
    await fh.writeFile(data)
    await fh.sync()
    await fh.close()
    fh = undefined
    await rename(tmp, file)
  } catch (e) {
    await fh?.close().catch(() => undefined)
    await unlink(tmp).catch(() => undefined)
    throw e
  }
  await syncDir(dir)
  return file
}

/** The file to replace: `target` itself, or the final target of a symlink chain. */
async function resolveTarget(target: string): Promise<string> {
  const link = await lstat(target).catch((e: unknown) => {
    if (isErrno(e, 'ENOENT')) return undefined
    throw e
  })
  if (!link?.isSymbolicLink()) return target
  try {
    return await realpath(target)
  } catch (e) {
    if (isErrno(e, 'ENOENT')) throw errno('ENOENT', `${target} is a symlink to a file that does not exist`, target)
    throw e
  }
}

/** Keeps the owner when run with the right to (root editing a service's file); others cannot and need not. */
async function chownIfPermitted(fh: FileHandle, uid: number, gid: number): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() === uid && process.getgid?.() === gid) return
  await fh.chown(uid, gid).catch((e: unknown) => {
    if (!isErrno(e, 'EPERM')) throw e
  })
}

/**
 * Makes the rename durable. Best effort: once the rename is done every reader sees the new file,
 * so a folder that cannot be opened or synced (some platforms and file systems) is no failure
 * of the write; it only leaves the usual crash window open.
 */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined
  try {
    fh = await open(dir, constants.O_RDONLY)
    await fh.sync()
  } catch {
    // See above: nothing to undo, nothing the caller could do.
  } finally {
    await fh?.close().catch(() => undefined)
  }
}

function isErrno(e: unknown, code: string): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === code
}

function errno(code: string, message: string, file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code, path: file })
}
