/**
 * The service's modules as they ship: the JavaScript `npm run build` writes to dist/, which the image
 * and the package run. The benchmark measures those, not the sources: the loader that runs TypeScript
 * directly adds work of its own to every function that makes closures (a name for each), and memory.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DIST = new URL('../dist/', import.meta.url)

/** Compiles src/ into dist/ (tsc, as `npm run build`); run once by the parent before any child starts. */
export function buildDist(): void {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'inherit',
  })
}

/** A module of dist/ by its path under src/ without the extension ('app', 'sessions/cache'). */
export async function compiled<T>(name: string): Promise<T> {
  const url = new URL(`${name}.js`, DIST)
  if (!existsSync(url)) throw new Error(`dist/${name}.js is missing: run npm run build first`)
  return (await import(url.href)) as T
}
