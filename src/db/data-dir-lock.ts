import { readFileSync, rmSync } from 'node:fs'
import { open, readFile, rm, stat } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'

/** The file in DATA_DIR that names the process owning it. */
export const LOCK_FILE = 'session-authority.lock'

/** A lock file younger than this may be one a starter has created but not yet written. */
const WRITE_GRACE_MS = 2000
/** The takeover mutex is held for a few file operations; one this old was left by a killed starter. */
const ABANDONED_MS = 5000

/** Another process owns the data folder: the CLI prints this as one line and exits 1. */
export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError'
  readonly code = 'DATA_DIR_IN_USE'

  constructor(dataDir: string, pid: number, host: string) {
    super(
      host === hostname()
        ? `the data folder ${dataDir} is in use by process ${pid} (stop the service first, or set DATABASE_URL to a shared Postgres)`
        : `the data folder ${dataDir} is in use by process ${pid} on host ${host} (stop it first; if it is not running, delete ${join(dataDir, LOCK_FILE)})`,
    )
  }
}

interface Owner {
  pid: number
  host: string
}

/** Lock files this process holds (a second open of the same folder in one process is refused too). */
const held = new Set<string>()

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException).code

/** The lock's raw text and its owner; null when there is no lock file; owner null when it is unreadable. */
async function readLock(path: string): Promise<{ text: string; owner: Owner | null } | null> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null
    throw err
  }
  try {
    const { pid, host } = JSON.parse(text) as Partial<Owner>
    // pid 0 or below would make process.kill signal a whole process group.
    if (Number.isInteger(pid) && (pid as number) > 0 && typeof host === 'string')
      return { text, owner: { pid: pid as number, host } }
  } catch {}
  return { text, owner: null }
}

/**
 * Whether the owner may still have the folder open. A process on another host (another container) cannot
 * be checked, so it counts as running. Our own pid in a lock we do not hold is a previous run with the
 * same pid (pid 1 of a restarted container).
 */
function isRunning(owner: Owner, path: string): boolean {
  if (owner.host !== hostname()) return true
  if (owner.pid === process.pid) return held.has(path)
  try {
    process.kill(owner.pid, 0)
    return true
  } catch (err) {
    return errorCode(err) === 'EPERM'
  }
}

/**
 * Removes a stale lock if it still holds the text judged stale. Two starters may judge the same lock stale:
 * the check and the removal happen under a mutex (an exclusively created file), so the later one re-reads
 * and finds the lock the earlier one has taken since, instead of removing it.
 */
async function removeStale(path: string, staleText: string): Promise<void> {
  const mutex = `${path}.takeover`
  let handle: Awaited<ReturnType<typeof open>>
  try {
    handle = await open(mutex, 'wx')
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw err
    const age = Date.now() - (await stat(mutex).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs
    if (age > ABANDONED_MS) await rm(mutex, { force: true })
    else await new Promise((resolve) => setTimeout(resolve, 20))
    return
  }
  try {
    if ((await readLock(path))?.text === staleText) await rm(path, { force: true })
  } finally {
    await handle.close()
    await rm(mutex, { force: true })
  }
}

/**
 * Makes this process the one owner of the data folder: exclusively creates a lock file naming it, taking
 * over a lock whose process is gone. Throws DataDirInUseError when a running process owns the folder.
 * Returns the release, which is also run when the process exits.
 */
export async function lockDataDir(dataDir: string): Promise<() => void> {
  const path = resolve(dataDir, LOCK_FILE)
  const text = `${JSON.stringify({ pid: process.pid, host: hostname() })}\n`
  for (;;) {
    const file = await open(path, 'wx').catch((err: unknown) => {
      if (errorCode(err) === 'EEXIST') return null
      throw err
    })
    if (file) {
      // Held from the moment it exists, so a second open in this process cannot take it for stale.
      held.add(path)
      try {
        await file.writeFile(text)
        await file.sync()
      } catch (err) {
        held.delete(path)
        await rm(path, { force: true })
        throw err
      } finally {
        await file.close()
      }
      break
    }
    const lock = await readLock(path)
    if (!lock) continue
    const { owner } = lock
    if (owner && isRunning(owner, path)) throw new DataDirInUseError(dataDir, owner.pid, owner.host)
    if (!owner) {
      // Created but not yet written by a starter, or left so by one killed in between.
      const age = Date.now() - (await stat(path).catch(() => ({ mtimeMs: 0 }))).mtimeMs
      if (age < WRITE_GRACE_MS) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        continue
      }
    }
    await removeStale(path, lock.text)
  }
  const release = () => {
    if (!held.delete(path)) return
    process.off('exit', release)
    try {
      // Only our own lock: never one another process has since taken.
      if (readFileSync(path, 'utf8') === text) rmSync(path, { force: true })
    } catch {}
  }
  process.on('exit', release)
  return release
}
