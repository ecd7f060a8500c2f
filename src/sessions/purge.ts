import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { ChangedSession } from './model.ts'
import { DEVICE_MEMORY_DAYS } from './new-device.ts'
import type { OverduePosition, SessionRepository } from './repository.ts'

/** Rows per delete statement: about 20 ms of row locks at 1M sessions on a busy 2-core machine. */
const BATCH = 1000
/**
 * Sessions per expire statement: each writes its row (four index entries) and an event, about
 * 0.1 ms a session there, so a statement holds its row locks for about 50 ms.
 */
const EXPIRE_BATCH = 500
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
    const sessionsBefore = new Date(nowMs - config.purgeRetentionDays * DAY_MS)
    for (let n = BATCH, from: Date | null = null; n === BATCH; ) {
      const batch = await locked.deleteEnded(sessionsBefore, BATCH, from)
      counts.sessions_deleted += batch.deleted
      n = batch.deleted
      from = batch.last
    }
    const eventsBefore = new Date(nowMs - config.eventRetentionDays * DAY_MS)
    for (let n = BATCH, from: Date | null = null; n === BATCH; ) {
      const batch = await locked.deleteEvents(eventsBefore, BATCH, from)
      counts.events_deleted += batch.deleted
      n = batch.deleted
      from = batch.last
    }
    const devicesBefore = new Date(nowMs - DEVICE_MEMORY_DAYS * DAY_MS)
    for (let n = BATCH; n === BATCH; ) {
      n = await locked.deleteDevicesUnseenSince(devicesBefore, BATCH)
      counts.devices_forgotten += n
    }
    return counts
  })
}
