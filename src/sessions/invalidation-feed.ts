import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { DedicatedOptions, Sql } from '../db/connect.ts'
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
   * it to be trusted: changes committed before it may never have been heard.
   * Infinity while no such instant is known.
   */
  trustedAfter(): number
  /** The latest Postgres time (ms) this replica has proof of; -Infinity before the first. */
  postgresNow(): number
  /** Copies read before the next proof are not trusted (the cache forgot which sessions changed). */
  distrustUntilNextProof(): void
  subscribe(handlers: FeedHandlers): void
  /** Resolves once the feed is live, or after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>
  /** For /readyz: live or stale (Postgres feed), local (embedded: one process, no shared cache), off (no caching). */
  state(): { feed: 'live' | 'stale' | 'local' | 'off'; lagMs: number | null }
  close(): Promise<void>
}

export interface FeedHandlers {
  /** These sessions changed (committed); their cache keys. */
  invalidate(keys: string[]): void
  /** Every change to these sessions was committed before Postgres time `at` (ms). */
  settle(keys: string[], at: number): void
  /** Changes may have been missed (a new connection, a truncated table). */
  gap(): void
}

/** The channel the sessions trigger (migration 005) notifies for a schema. */
export const feedChannel = (schema: string) => `sa:${schema}`

/** A feed that never proves anything: nothing but a replica's own reads is trusted. */
function unprovenFeed(state: 'local' | 'off'): InvalidationFeed {
  return {
    live: () => false,
    trustedAfter: () => Number.POSITIVE_INFINITY,
    postgresNow: () => Number.NEGATIVE_INFINITY,
    distrustUntilNextProof: () => {},
    subscribe: () => {},
    ready: async () => {},
    state: () => ({ feed: state, lagMs: null }),
    close: async () => {},
  }
}

/** L1_TTL_MS=0 makes the bound 0: every answer comes from Postgres. */
export const offFeed = unprovenFeed('off')

/**
 * The embedded database belongs to this one process (see data-dir-lock), so
 * every change is made here and reaches L1 through its own invalidations; no
 * shared cache is used.
 */
export const localFeed = unprovenFeed('local')

export interface PostgresFeedOptions {
  /** Opens a one-connection client of the feed's own, apart from the pool (a busy pool must not delay the proof). */
  connect: (options?: DedicatedOptions) => Sql
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
 * listening connection. So when this replica hears a heartbeat it sent at
 * time s (through the same queue as the sessions' notifications) on the
 * connection that has listened since before s, it has heard every change
 * committed before s: the feed is live while the latest such s is younger
 * than the bound. A heartbeat carries Postgres' now() of its own transaction,
 * which is later than the commit of every change heard before it was sent:
 * that stamps those changes (settle), and the first heartbeat after a new
 * LISTEN sets the watermark (changes committed before that LISTEN were never
 * delivered to it).
 *
 * Two connections of its own: one listens, one sends heartbeats. A closed
 * listening connection is a gap at once; when nothing is proven for a while,
 * both are replaced, so a hung connection cannot keep the feed stale forever.
 */
export function createPostgresFeed({ connect, channel, boundMs, metrics, log }: PostgresFeedOptions) {
  const me = randomUUID()
  const heartbeatMs = Math.min(1000, Math.max(25, Math.floor(boundMs / 4)))
  // Silence this long (no proof) replaces the connections; at most once per this interval.
  const stallMs = Math.max(2000, 8 * heartbeatMs)
  let handlers: FeedHandlers = { invalidate: () => {}, settle: () => {}, gap: () => {} }
  let listener: Sql | null = null
  let pinger: Sql | null = null
  // Which pair of connections is current: callbacks of replaced ones are ignored.
  let connection = 0
  let listening: 'no' | 'asking' | 'yes' = 'no'
  let seq = 0
  // Heartbeats from this number on were sent while the current LISTEN was in force: they prove the feed.
  let firstOfListen = Number.POSITIVE_INFINITY
  // The heartbeat from this number on that is heard sets the watermark.
  let watermarkFrom = Number.POSITIVE_INFINITY
  let watermark = Number.POSITIVE_INFINITY
  let provenAt = Number.NEGATIVE_INFINITY
  let postgresNow = Number.NEGATIVE_INFINITY
  let lastAttempt = performance.now()
  let inFlight = false
  // When each heartbeat was sent, and the keys heard before it was sent (that it will settle).
  const sent = new Map<number, { at: number; keys: string[] }>()
  let unsettled: string[] = []
  const waiting = new Set<() => void>()

  const live = () => performance.now() - provenAt < boundMs

  function requestWatermark() {
    watermark = Number.POSITIVE_INFINITY
    watermarkFrom = seq + 1
  }

  /** Nothing heard so far proves anything any more; keys waiting for a stamp wait for the next heartbeat. */
  function unproven() {
    firstOfListen = Number.POSITIVE_INFINITY
    provenAt = Number.NEGATIVE_INFINITY
    requestWatermark()
    for (const { keys } of sent.values()) unsettled.push(...keys)
    sent.clear()
  }

  function onMessage(payload: string) {
    if (payload.startsWith('~')) {
      const [id, n, at] = payload.slice(1).split(':')
      if (id === me) heard(Number(n), Number(at))
      return
    }
    if (payload === '*') {
      // The table was truncated: anything cached may be wrong.
      requestWatermark()
      handlers.gap()
      return
    }
    metrics.invalidationsReceived.inc()
    unsettled.push(payload)
    handlers.invalidate([payload])
  }

  function heard(n: number, at: number) {
    const heartbeat = sent.get(n)
    if (!heartbeat) return
    for (const [k, { keys }] of sent) {
      if (k > n) break
      if (keys.length > 0) handlers.settle(keys, at)
      sent.delete(k)
    }
    postgresNow = Math.max(postgresNow, at)
    if (n >= watermarkFrom) {
      watermark = at
      watermarkFrom = Number.POSITIVE_INFINITY
    }
    if (n < firstOfListen) return
    if (heartbeat.at > provenAt) provenAt = heartbeat.at
    for (const resolve of waiting) resolve()
    waiting.clear()
  }

  function listen() {
    const mine = connection
    const sql = listener
    if (!sql) return
    listening = 'asking'
    lastAttempt = performance.now()
    sql`listen ${sql(channel)}`.then(
      () => {
        if (mine !== connection) return
        // Whatever was committed before this LISTEN may not have reached us.
        listening = 'yes'
        unproven()
        firstOfListen = seq + 1
        metrics.feedGaps.inc()
        handlers.gap()
      },
      (err: Error) => {
        if (mine !== connection) return
        listening = 'no'
        log.warn({ err: err.message }, 'invalidation feed: LISTEN failed; will retry')
      },
    )
  }

  function open() {
    const mine = ++connection
    lastAttempt = performance.now()
    listening = 'no'
    unproven()
    listener = connect({
      onnotify: (_channel, payload) => {
        if (mine === connection) onMessage(payload)
      },
      // A new connection is a new backend that listens to nothing: a gap until we LISTEN again.
      onclose: () => {
        if (mine !== connection) return
        listening = 'no'
        unproven()
      },
    })
    pinger = connect()
    inFlight = false
    listen()
  }

  function beat() {
    const now = performance.now()
    if (now - Math.max(provenAt, lastAttempt) > stallMs) {
      log.warn(
        { lagMs: Number.isFinite(provenAt) ? Math.round(now - provenAt) : null },
        'invalidation feed silent: reconnecting',
      )
      const old = [listener, pinger]
      open()
      for (const sql of old) void sql?.end({ timeout: 0 }).catch(() => {})
      return
    }
    if (listening === 'no') listen()
    if (inFlight || !pinger) return
    const n = ++seq
    sent.set(n, { at: now, keys: unsettled })
    unsettled = []
    inFlight = true
    const sql = pinger
    sql`select pg_notify(${channel}, ${`~${me}:${n}:`} || floor(extract(epoch from now()) * 1000)::bigint)`
      .catch(() => {
        const failed = sent.get(n)
        sent.delete(n)
        if (failed) unsettled.push(...failed.keys)
      })
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
    postgresNow: () => postgresNow,
    distrustUntilNextProof: requestWatermark,
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
      clearInterval(timer)
      connection++
      for (const resolve of waiting) resolve()
      await Promise.all(
        [listener?.end({ timeout: 1 }), pinger?.end({ timeout: 1 })].map((p) => p?.catch(() => {})),
      )
    },
  }
  return feed
}
