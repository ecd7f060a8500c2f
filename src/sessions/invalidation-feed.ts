import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { Sql } from '../db/connect.ts'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'

/**
 * How a replica learns, from Postgres and independently of Redis, that cached
 * sessions changed, and whether it can prove it has heard of every change
 * committed up to a recent instant. The cache trusts copies it did not read
 * from Postgres itself (Redis entries, and L1 entries filled from them) only
 * while the feed is live.
 */
export interface InvalidationFeed {
  /** True when every change committed more than the bound ago has reached this replica. */
  live(): boolean
  /**
   * Postgres time (ms) after which a read must have begun for a cached copy of
   * it to be trusted: changes committed before it may never have been heard
   * (the replica started, or its listening connection was lost, after them).
   */
  trustedAfter(): number
  /** Where changed cache keys, and gaps in the feed (changes may have been missed), are reported. */
  subscribe(handlers: FeedHandlers): void
  /** Resolves once the feed is live, or after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>
  /** For /readyz: live or stale (Postgres feed), local (embedded: this process makes every change), off (no caching). */
  state(): { feed: 'live' | 'stale' | 'local' | 'off'; lagMs: number | null }
  close(): Promise<void>
}

export interface FeedHandlers {
  invalidate(keys: string[]): void
  gap(): void
}

/** The channel the sessions trigger (migration 005) notifies for a schema. */
export const feedChannel = (schema: string) => `sa:${schema}`

/**
 * No shared cache can be trusted (L1_TTL_MS=0 makes the bound 0): every answer
 * comes from Postgres.
 */
export const offFeed: InvalidationFeed = {
  live: () => false,
  trustedAfter: () => Number.POSITIVE_INFINITY,
  subscribe: () => {},
  ready: async () => {},
  state: () => ({ feed: 'off', lagMs: null }),
  close: async () => {},
}

/**
 * The embedded database belongs to this one process (see data-dir-lock), so
 * every change is made here and reaches the cache through its own
 * invalidations. Copies read before this process started are not trusted: a
 * previous run may have changed sessions while Redis was away.
 */
export async function createLocalFeed(sql: Sql): Promise<InvalidationFeed> {
  const [row] = await sql<{ at: number }[]>`select floor(extract(epoch from now()) * 1000)::float8 as at`
  const startedAt = row?.at ?? Number.POSITIVE_INFINITY
  return {
    live: () => true,
    trustedAfter: () => startedAt,
    subscribe: () => {},
    ready: async () => {},
    state: () => ({ feed: 'local', lagMs: null }),
    close: async () => {},
  }
}

export interface PostgresFeedOptions {
  /** Opens a connection of the feed's own, apart from the pool (a busy pool must not delay the proof). */
  connect: () => Sql
  channel: string
  /** The staleness bound (L1_TTL_MS): the feed is live while its latest proof is younger than this. */
  boundMs: number
  metrics: Metrics
  log: Log
}

/**
 * LISTEN/NOTIFY on the sessions channel, proven by heartbeats.
 *
 * Postgres delivers notifications at commit, in commit order, to every
 * listener. So when this replica hears a heartbeat it sent at time s (through
 * the same queue as the sessions' notifications), it has heard every change
 * committed before s; the feed is live while the latest such s is younger than
 * the bound. A heartbeat carries Postgres' now() of its own transaction: the
 * first one heard on a new LISTEN marks the instant after which reads are
 * trusted (changes committed before the LISTEN were never delivered to it).
 *
 * Two connections of its own: one listens (postgres.js re-listens after a
 * reconnect; each re-listen is a gap), one sends heartbeats. When nothing is
 * proven for a while both are replaced, so a connection that hangs or a
 * listener that was dropped cannot keep the feed stale forever.
 */
export function createPostgresFeed({ connect, channel, boundMs, metrics, log }: PostgresFeedOptions) {
  const me = randomUUID()
  const heartbeatMs = Math.min(1000, Math.max(25, Math.floor(boundMs / 4)))
  // Silence this long (no proof) replaces the connections; at most once per this interval.
  const stallMs = Math.max(2000, 8 * heartbeatMs)
  let handlers: FeedHandlers = { invalidate: () => {}, gap: () => {} }
  let listener: Sql | null = null
  let pinger: Sql | null = null
  let connection = 0
  let seq = 0
  // Heartbeats numbered below this were sent before the current LISTEN took effect: they prove nothing.
  let firstOfListen = Number.POSITIVE_INFINITY
  const sentAt = new Map<number, number>()
  let provenAt = Number.NEGATIVE_INFINITY
  let watermark = Number.POSITIVE_INFINITY
  let watermarkPending = true
  let lastAttempt = performance.now()
  let inFlight = false
  let closed = false
  const waiting = new Set<() => void>()

  const live = () => performance.now() - provenAt < boundMs

  function onMessage(payload: string) {
    if (payload.startsWith('~')) {
      const [id, n, at] = payload.slice(1).split(':')
      if (id === me) heard(Number(n), Number(at))
      return
    }
    metrics.invalidationsReceived.inc()
    handlers.invalidate([payload])
  }

  function heard(n: number, pgAt: number) {
    const at = sentAt.get(n)
    for (const k of sentAt.keys()) if (k <= n) sentAt.delete(k)
    if (at === undefined || n < firstOfListen) return
    if (watermarkPending) {
      watermark = pgAt
      watermarkPending = false
    }
    if (at > provenAt) provenAt = at
    for (const resolve of waiting) resolve()
    waiting.clear()
  }

  function onListen() {
    // Whatever was committed before this LISTEN may not have reached us.
    firstOfListen = seq + 1
    provenAt = Number.NEGATIVE_INFINITY
    watermarkPending = true
    metrics.feedGaps.inc()
    handlers.gap()
  }

  function open() {
    const mine = ++connection
    lastAttempt = performance.now()
    listener = connect()
    pinger = connect()
    listener
      .listen(
        channel,
        (payload) => {
          if (mine === connection) onMessage(payload)
        },
        () => {
          if (mine === connection) onListen()
        },
      )
      .catch((err: Error) => log.warn({ err: err.message }, 'invalidation feed: LISTEN failed'))
  }

  function replace() {
    const old = [listener, pinger]
    inFlight = false
    if (!closed) open()
    for (const sql of old) void sql?.end({ timeout: 0 }).catch(() => {})
  }

  function beat() {
    const now = performance.now()
    if (now - Math.max(provenAt, lastAttempt) > stallMs) {
      log.warn(
        { lagMs: Number.isFinite(provenAt) ? Math.round(now - provenAt) : null },
        'invalidation feed silent: reconnecting',
      )
      replace()
      return
    }
    if (inFlight || !pinger) return
    const n = ++seq
    sentAt.set(n, now)
    inFlight = true
    const sql = pinger
    sql`select pg_notify(${channel}, ${`~${me}:${n}:`} || floor(extract(epoch from now()) * 1000)::bigint)`
      .catch(() => sentAt.delete(n))
      .finally(() => {
        if (sql === pinger) inFlight = false
      })
  }

  open()
  const timer = setInterval(beat, heartbeatMs)
  timer.unref()

  const feed: InvalidationFeed = {
    live,
    trustedAfter: () => watermark,
    subscribe(next) {
      handlers = next
    },
    async ready(timeoutMs) {
      if (live()) return
      let timeout: NodeJS.Timeout | undefined
      let done = () => {}
      await new Promise<void>((resolve) => {
        done = resolve
        waiting.add(resolve)
        timeout = setTimeout(resolve, timeoutMs)
      })
      waiting.delete(done)
      clearTimeout(timeout)
    },
    state: () => ({
      feed: live() ? 'live' : 'stale',
      lagMs: Number.isFinite(provenAt) ? Math.round(performance.now() - provenAt) : null,
    }),
    async close() {
      closed = true
      clearInterval(timer)
      for (const resolve of waiting) resolve()
      await Promise.all(
        [listener?.end({ timeout: 1 }), pinger?.end({ timeout: 1 })].map((p) => p?.catch(() => {})),
      )
    },
  }
  return feed
}
