import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { ChangedSession } from './model.ts'
import { DEVICE_MEMORY_DAYS } from './new-device.ts'
import type { OverduePosition, SessionRepository } from './repository.ts'

/** Rows per delete statement: at 10M sessions on a 2-core VM 14 ms a statement (sessions), 2 ms (events). */
export const DELETE_BATCH = 1000
/**
 * Sessions per expire statement: each writes its row (four index entries), an event (five) and a
 * notification, about 0.08 ms a session at 10M on a 2-core VM (39 ms for 500), so a statement
 * holds its row locks for about 40-100 ms; under full introspection load, up to about twice that.
 */
export const EXPIRE_BATCH = 500
const DAY_MS = 86_400_000

export interface PurgeCounts {
  expired: number
  sessions_deleted: number
  events_deleted: number
  devices_forgotten: number
}

interface Deps {
  clock: Clock
  config: Pick<Config, 'writeBehindIntervalMs' | 'purgeRetentionDays' | 'eventRetentionDays'>
  /** Drops sessions that were just marked expired from the caches. */
  invalidate(ended: ChangedSession[]): Promise<unknown>
}

/**
 * Marks sessions that ran out unseen as expired (with their events), deletes
 * sessions that ended longer ago than PURGE_RETENTION_DAYS, and events older
 * than EVENT_RETENTION_DAYS: in batches of short statements that hold no long
 * locks, one replica at a time (an advisory lock). With `wait` false it gives
 * up at once (null) when another replica is purging.
 */
export function purgeSessions(repo: SessionRepository, { clock, config, invalidate }: Deps, wait: boolean) {
  return repo.withPurgeLock(wait, async (locked): Promise<PurgeCounts> => {
    const nowMs = clock.now()
    const now = new Date(nowMs)
    // A use another replica has not written yet may have kept a session alive.
    const idleBefore = new Date(nowMs - config.writeBehindIntervalMs)
    const counts = { expired: 0, sessions_deleted: 0, events_deleted: 0, devices_forgotten: 0 }
    // Each step reads its index from where its previous batch left off, until a batch comes back short.
    let overdue: OverduePosition | null = null
    for (let more = true; more; ) {
      const batch = await locked.expireOverdue(now, idleBefore, EXPIRE_BATCH, overdue)
      await invalidate(batch.ended)
      counts.expired += batch.ended.length
      overdue = batch.next
      more = batch.more
    }
    // Batch after batch, each from where the last one stopped, until one comes back short; how many in all.
    const deleteAll = async (
      batchFrom: (from: Date | null) => Promise<{ deleted: number; last: Date | null }>,
    ): Promise<number> => {
      let total = 0
      for (let n = DELETE_BATCH, from: Date | null = null; n >= DELETE_BATCH; ) {
        const batch = await batchFrom(from)
        total += batch.deleted
        n = batch.deleted
        from = batch.last
      }
      return total
    }
    const sessionsBefore = new Date(nowMs - config.purgeRetentionDays * DAY_MS)
    counts.sessions_deleted = await deleteAll((from) =>
      locked.deleteEnded(sessionsBefore, DELETE_BATCH, from),
    )
    const eventsBefore = new Date(nowMs - config.eventRetentionDays * DAY_MS)
    counts.events_deleted = await deleteAll((from) => locked.deleteEvents(eventsBefore, DELETE_BATCH, from))
    const devicesBefore = new Date(nowMs - DEVICE_MEMORY_DAYS * DAY_MS)
    for (let n = DELETE_BATCH; n === DELETE_BATCH; ) {
      n = await locked.deleteDevicesUnseenSince(devicesBefore, DELETE_BATCH)
      counts.devices_forgotten += n
    }
    return counts
  })
}
