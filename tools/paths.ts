/**
 * Where the package lives on disk, found the same way whether a command runs from `tools/`
 * (tsx) or from `dist/tools/` (the built bin).
 * @module
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error('cannot find the keyway package root')
    dir = up
  }
  return dir
}
