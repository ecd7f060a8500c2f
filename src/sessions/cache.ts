import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import type { RedisConnection } from '../redis.ts'
import type { SessionRow } from './repository.ts'

/**
 * The seam between the sessions domain and whatever caches introspection
 * answers. Keys are token hashes (hex), never tokens; `null` means "no such token".
 */
export interface SessionCache {
  /** The L1 answer for a token, synchronously; undefined when L1 does not have it. */
  peek(tokenKey: string): SessionRow | null | undefined
  /** The cached answer for a token, or what `load` reads from Postgres (then cached). */
  lookup(tokenKey: string, load: () => Promise<SessionRow | null>, now: number): Promise<SessionRow | null>
  /** Replaces this replica's L1 entry, if it still has one, with a row just read from Postgres. */
  refresh(tokenKey: string, session: SessionRow): void
  /** Resolves once invalidations are being received (or after `timeoutMs`, if Redis is away). */
  ready(timeoutMs: number): Promise<void>
  /** Drops tokens everywhere (this replica, Redis, the other replicas) before the change is acknowledged. */
  invalidate(tokenKeys: string[]): Promise<void>
  close(): Promise<void>
}

/** No cache at all: every introspection reads Postgres. */
export const noCache: SessionCache = {
  peek: () => undefined,
  lookup: (_key, load) => load(),
  ready: async () => {},
  refresh: () => {},
  invalidate: async () => {},
  close: async () => {},
}

export interface CacheOptions {
  /** L1 entry lifetime; 0 turns L1 off. Bounds how stale a replica can be when an invalidation is lost. */
  l1TtlMs: number
  l1MaxEntries: number
  /** Upper bound of an L2 entry's lifetime (also never past the session's absolute expiry). */
  l2TtlMs: number
  /** Lifetime of a cached "no such token". */
  negativeTtlMs: number
  keyPrefix: string
  redis: RedisConnection | null
  metrics: Metrics
  log: Log
}

// Redis values besides a session's JSON.
const NO_SESSION = '0'
const TOMBSTONE = 'x'
// A tombstone outlives any read-then-fill race (a Postgres read and a SET), so a
// replica that read a row just before a revocation cannot put it back into Redis.
const TOMBSTONE_TTL_MS = 10_000
const HEARTBEAT_MS = 1000

const DATES = ['created_at', 'last_seen_at', 'idle_expires_at', 'absolute_expires_at', 'ended_at'] as const

function decode(raw: string): SessionRow {
  const row = JSON.parse(raw)
  for (const field of DATES) if (row[field] !== null) row[field] = new Date(row[field])
  return row as SessionRow
}

/**
 * L1 (in-process LRU, short TTL) in front of L2 (Redis) in front of Postgres.
 * Invalidation: L1 delete → Redis tombstone + publish in one round trip → every
 * replica drops its L1 entry. If the invalidation channel drops, L1 is cleared,
 * because pub/sub delivers at most once.
 */
export function createSessionCache(options: CacheOptions): SessionCache {
  const { redis, metrics, log, keyPrefix } = options
  const channel = `${keyPrefix}invalidate`
  const redisKey = (key: string) => `${keyPrefix}tok:${key}`
  const l1 =
    options.l1TtlMs > 0
      ? new LRUCache<string, SessionRow>({ max: options.l1MaxEntries, ttl: options.l1TtlMs })
      : null
  // Unknown tokens get an LRU of their own: a flood of garbage cannot evict
  // live sessions, and "unknown" never goes stale (tokens are never guessed into existence).
  const unknown = new LRUCache<string, true>({ max: options.l1MaxEntries, ttl: options.negativeTtlMs })
  // Counters bound once: looking labels up costs more than the L1 hit itself.
  const l1Positive = metrics.cacheHits.labels('l1', 'positive')
  const l1Negative = metrics.cacheHits.labels('l1', 'negative')
  const l1Miss = metrics.cacheMisses.labels('l1')
  // One Redis/Postgres read per token at a time; concurrent misses share it,
  // but never across an invalidation: a read begun before a revocation could
  // return the row as it was.
  const inflight = new Map<string, { generation: number; read: Promise<SessionRow | null> }>()
  // Bumped whenever an entry may have been invalidated; a lookup that saw it
  // change while it read Postgres does not cache what it read.
  let generation = 0
  // Invalidations Redis did not take (it was away); sent again when it returns.
  const undelivered = new Set<string>()
  let stopHeartbeat = () => {}
  let subscribed: Promise<unknown> = Promise.resolve()

  function dropLocal(keys: Iterable<string>) {
    generation++
    if (l1) for (const key of keys) l1.delete(key)
  }

  function clearLocal(why: string) {
    generation++
    if (l1 && l1.size > 0) {
      l1.clear()
      metrics.l1Clears.inc()
      log.warn({ why }, 'L1 session cache cleared')
    }
  }

  async function sendInvalidations(keys: string[]): Promise<boolean> {
    if (!redis) return true
    const done = await redis.write('invalidate', (r) => {
      const tx = r.multi()
      for (const key of keys) tx.set(redisKey(key), TOMBSTONE, 'PX', TOMBSTONE_TTL_MS)
      return tx.publish(channel, keys.join(',')).exec()
    })
    return done !== undefined
  }

  function resendUndelivered() {
    if (undelivered.size === 0) return
    const keys = [...undelivered]
    undelivered.clear()
    sendInvalidations(keys).then((ok) => {
      if (!ok) for (const key of keys) undelivered.add(key)
    })
  }

  if (redis) {
    const { writer, subscriber } = redis
    // Each replica hears its own heartbeat on the channel; silence while Redis
    // answers means the subscription is broken, and invalidations are being lost.
    const me = `~${randomUUID()}`
    let heardAt = Date.now()
    subscriber.on('message', (_channel: string, message: string) => {
      if (message.startsWith('~')) {
        if (message === me) heardAt = Date.now()
        return
      }
      const keys = message.split(',')
      metrics.invalidationsReceived.inc(keys.length)
      dropLocal(keys)
    })
    subscriber.on('close', () => clearLocal('invalidation channel closed'))
    let onSubscribed = () => {}
    subscribed = new Promise<void>((resolve) => {
      onSubscribed = resolve
    })
    const listen = () => {
      heardAt = Date.now()
      clearLocal('invalidation channel connected')
      subscriber
        .subscribe(channel)
        .then(onSubscribed)
        .catch((err: Error) => log.warn({ err: err.message }, 'redis subscribe failed'))
    }
    subscriber.on('ready', listen)
    // The connection may have come up before this listener was attached.
    if (subscriber.status === 'ready') listen()
    const heartbeat = setInterval(() => {
      if (undelivered.size > 0 && writer.status === 'ready') resendUndelivered()
      if (writer.status !== 'ready' || subscriber.status !== 'ready') return
      if (Date.now() - heardAt > 3 * HEARTBEAT_MS) {
        clearLocal('invalidation channel silent')
        heardAt = Date.now()
        subscriber.disconnect(true)
        return
      }
      void redis.write('heartbeat', (r) => r.publish(channel, me))
    }, HEARTBEAT_MS)
    heartbeat.unref()
    stopHeartbeat = () => clearInterval(heartbeat)
    writer.on('ready', resendUndelivered)
  }

  function keepLocal(key: string, session: SessionRow | null) {
    if (session === null) unknown.set(key, true)
    else l1?.set(key, session)
  }

  function fill(key: string, session: SessionRow | null, now: number, seen: number) {
    if (seen !== generation) return
    keepLocal(key, session)
    if (!redis) return
    const l2Ttl =
      session === null
        ? options.negativeTtlMs
        : Math.min(options.l2TtlMs, session.absolute_expires_at.getTime() - now)
    if (l2Ttl <= 0) return
    const value = session === null ? NO_SESSION : JSON.stringify(session)
    // NX: never overwrite a tombstone (or a newer fill).
    void redis.run('fill', (r) => r.set(redisKey(key), value, 'PX', l2Ttl, 'NX'))
  }

  function peek(key: string): SessionRow | null | undefined {
    const hit = l1?.get(key)
    if (hit) {
      l1Positive.inc()
      return hit
    }
    if (unknown.get(key)) {
      l1Negative.inc()
      return null
    }
    return undefined
  }

  async function read(key: string, load: () => Promise<SessionRow | null>, now: number) {
    const seen = generation
    // A token whose invalidation Redis has not taken yet may still sit there, active.
    if (redis && !undelivered.has(key)) {
      const raw = await redis.run('get', (r) => r.get(redisKey(key)))
      if (raw && raw !== TOMBSTONE) {
        const session = raw === NO_SESSION ? null : decode(raw)
        metrics.cacheHits.inc({ level: 'l2', kind: session ? 'positive' : 'negative' })
        if (seen === generation) keepLocal(key, session)
        return session
      }
      metrics.cacheMisses.inc({ level: 'l2' })
    }
    const session = await load()
    fill(key, session, now, seen)
    return session
  }

  return {
    peek,

    async lookup(key, load, now) {
      const hit = peek(key)
      if (hit !== undefined) return hit
      l1Miss.inc()
      const shared = inflight.get(key)
      if (shared && shared.generation === generation) return shared.read
      const entry = { generation, read: read(key, load, now) }
      inflight.set(key, entry)
      const done = () => {
        if (inflight.get(key) === entry) inflight.delete(key)
      }
      entry.read.then(done, done)
      return entry.read
    },

    async ready(timeoutMs) {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs)
      })
      await Promise.race([subscribed, timeout])
      clearTimeout(timer)
    },

    refresh(key, session) {
      // Only over an entry that is still there: if an invalidation dropped it
      // while the row was being read, the row may be older than the invalidation.
      if (l1?.has(key)) l1.set(key, session)
    },

    async invalidate(keys) {
      if (keys.length === 0) return
      dropLocal(keys)
      metrics.invalidationsSent.inc(keys.length)
      if (!(await sendInvalidations(keys))) {
        for (const key of keys) undelivered.add(key)
        log.warn(
          { count: keys.length },
          'redis unavailable: invalidation queued; other replicas rely on their L1 TTL',
        )
      }
    },

    async close() {
      stopHeartbeat()
      l1?.clear()
      unknown.clear()
    },
  }
}
