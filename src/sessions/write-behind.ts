import { LRUCache } from 'lru-cache'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import type { SessionRepository } from './repository.ts'

/** A Postgres data exception (SQLSTATE class 22: a value it cannot take), as opposed to Postgres being away. */
function refusedValue(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code)
}

export interface Touch {
  id: string
  at: Date
  ip: string | null
}

/**
 * The most uses one statement writes. Each statement holds the row locks of its
 * chunk until it ends: a revoke, suspend or refresh of one of those sessions
 * waits for it. A use changes no indexed column (touchMany), so where its page
 * has room a row's new version is written there and no index changes. When the
 * idle expiry was still written (an indexed column), 1,000 rows took 733 ms
 * (p50) at 10M sessions on a busy 2-core VM; at 3M, quiet, 100 rows took 7 ms
 * and wrote only 10-20% fewer rows a second than chunks of 1,000.
 */
export const CHUNK = 100

/**
 * Introspection's bookkeeping (last seen, which slides the idle expiry, and last IP), kept
 * in memory and written once per interval, in short statements of up to CHUNK
 * sessions each, in id order (two replicas writing the same sessions lock them
 * in one order): the hot path never waits on a database write, and each
 * session is written at most once per interval however often it is used. A
 * crash loses at most one interval of last-seen times, never a session.
 */
export function createWriteBehind({
  repo,
  intervalMs,
  metrics,
  log,
}: {
  repo: Pick<SessionRepository, 'touchMany'>
  intervalMs: number
  metrics: Metrics
  log: Log
}) {
  let pending = new Map<string, Touch>()
  // The latest use this replica saw of each session, written or not, for idle decisions.
  const lastUse = new LRUCache<string, Touch>({ max: 100_000 })
  let flushing: Promise<void> | null = null

  async function write(batch: Map<string, Touch>): Promise<void> {
    const end = metrics.writeBehindFlush.startTimer()
    const touches = [...batch.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    let written = 0
    try {
      for (; written < touches.length; written += CHUNK) {
        metrics.writeBehindRows.inc(await writeRows(touches.slice(written, written + CHUNK)))
      }
    } catch (err) {
      // Put back what was not written unless a newer use replaced it, and try again next interval.
      for (const touch of touches.slice(written)) if (!pending.has(touch.id)) pending.set(touch.id, touch)
      log.warn({ err, sessions: touches.length - written }, 'write-behind flush failed; will retry')
    } finally {
      end()
    }
  }

  /**
   * Writes one chunk of uses in one statement. Should Postgres refuse a value
   * in it, the chunk is halved until the refused use is found: that one is
   * written without its address, or dropped, with a warning; one bad row never
   * holds back the others. Any other failure (Postgres away) is thrown, to
   * retry the rest of the batch (rows written already are not written twice:
   * a use never moves last_seen_at back).
   */
  async function writeRows(touches: Touch[]): Promise<number> {
    try {
      return await repo.touchMany(touches)
    } catch (err) {
      if (!refusedValue(err)) throw err
      const [only] = touches
      if (touches.length === 1 && only) {
        if (only.ip !== null) {
          log.warn(
            { err, sessionId: only.id },
            'write-behind: Postgres refused a use; writing it again without its address',
          )
          return writeRows([{ ...only, ip: null }])
        }
        log.warn({ err, sessionId: only.id }, 'write-behind: Postgres refused a use; dropped')
        return 0
      }
      const half = Math.ceil(touches.length / 2)
      return (await writeRows(touches.slice(0, half))) + (await writeRows(touches.slice(half)))
    }
  }

  /** Writes what is pending now (in chunks); waits for a flush already under way first. */
  async function flush(): Promise<void> {
    if (flushing) await flushing
    if (pending.size === 0) return
    const batch = pending
    pending = new Map()
    flushing = write(batch).finally(() => {
      flushing = null
    })
    await flushing
  }

  metrics.watchWriteBehindQueue(() => pending.size)
  const timer = setInterval(() => void flush(), intervalMs)
  timer.unref()

  return {
    record(id: string, at: Date, ip: string | null) {
      const touch = { id, at, ip: ip ?? lastUse.get(id)?.ip ?? null }
      pending.set(id, touch)
      lastUse.set(id, touch)
    },
    /** The latest use of a session this replica knows of, written or not. */
    lastUse: (id: string): Touch | undefined => lastUse.get(id),
    /** Forgets a session that ended (nothing more to write for it). */
    forget(id: string) {
      pending.delete(id)
      lastUse.delete(id)
    },
    flush,
    async close() {
      clearInterval(timer)
      await flush()
    },
  }
}

export type WriteBehind = ReturnType<typeof createWriteBehind>
