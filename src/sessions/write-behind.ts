import { LRUCache } from 'lru-cache'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import type { SessionRepository } from './repository.ts'

export interface Touch {
  id: string
  at: Date
  ip: string | null
}

/**
 * Introspection's bookkeeping (last seen, sliding idle expiry, last IP), kept
 * in memory and written in one statement per interval: the hot path never
 * waits on a database write, and each session is written at most once per
 * interval however often it is used. A crash loses at most one interval of
 * last-seen times, never a session.
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
    try {
      const rows = await repo.touchMany([...batch.values()])
      metrics.writeBehindRows.inc(rows)
    } catch (err) {
      // Put the batch back unless a newer use replaced it, and try again next interval.
      for (const [id, touch] of batch) if (!pending.has(id)) pending.set(id, touch)
      log.warn({ err, sessions: batch.size }, 'write-behind flush failed; will retry')
    } finally {
      end()
    }
  }

  /** Writes what is pending now (one statement); waits for a flush already under way first. */
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
