import { createHmac, timingSafeEqual } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import type { RedisConnection } from '../redis.ts'
import type { FeedHandlers, InvalidationFeed } from './invalidation-feed.ts'
import type { SessionRow } from './model.ts'
import { PackedSession } from './packed-session.ts'
import type { CacheRead } from './repository.ts'

/**
 * The seam between the sessions domain and whatever caches introspection
 * answers. Keys are token hashes (hex) or `sid:<id>`, never tokens; `null`
 * means "no such token".
 */
export interface SessionCache {
  /**
   * The L1 answer for a token, synchronously; undefined when L1 does not have
   * one it may use. `counted` false leaves a hit out of the hit counters, for
   * a caller that may hand the request on to one that looks again; it counts
   * the hits it answers from with countHit.
   */
  peek(tokenKey: string, counted?: boolean): SessionRow | null | undefined
  /** Counts an L1 hit on a session that peek(key, false) found. */
  countHit(): void
  /** The cached answer for a token, or what `load` reads from Postgres (then cached). */
  lookup(tokenKey: string, load: () => Promise<CacheRead>, now: number): Promise<SessionRow | null>
  /**
   * Replaces this replica's L1 entry, if it still has one, with a row read
   * from Postgres by a read that began at `readStartedAt` (performance.now()).
   */
  refresh(tokenKey: string, session: SessionRow, readStartedAt: number): void
  /** Drops sessions just changed in Postgres (committed) here, and their Redis copies (not waited for). */
  invalidate(tokenKeys: string[]): Promise<void>
  close(): Promise<void>
}

export interface CacheOptions {
  /**
   * L1 entry lifetime and the staleness bound: no answer comes from a copy of
   * a session older than this unless the invalidation feed proves it current.
   * 0 turns caching off.
   */
  l1TtlMs: number
  l1MaxEntries: number
  /** Upper bound of an L2 entry's lifetime (also never past the session's absolute expiry). */
  l2TtlMs: number
  /** Lifetime of a cached "no such token". */
  negativeTtlMs: number
  keyPrefix: string
  /** Null when the feed can never prove a shared copy fresh (embedded database, or a bound of 0). */
  redis: RedisConnection | null
  feed: InvalidationFeed
  /** The key that authenticates Redis values (derived from the key-encryption key). */
  macKey: Buffer
  metrics: Metrics
  log: Log
}

const NO_SESSION = '-'
const MAC_LENGTH = 22
const DATES = [
  'created_at',
  'last_seen_at',
  'idle_expires_at',
  'absolute_expires_at',
  'ended_at',
  'suspended_at',
] as const

// Writes a value unless Redis holds one read later, so a slow fill never
// replaces a newer read, and a stale copy is replaced by the next read. It
// touches only its one key, so on a Redis Cluster it runs on that key's shard.
const FILL_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local at = tonumber(string.match(current, '^(%d+):'))
  if at and at > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1`

/**
 * Redis values are `<read_at>:<mac>:<body>`: when the row was read (Postgres
 * ms), an HMAC binding the value to its key (a value copied to another
 * token's key, or written by anyone without the key, fails), and the row as
 * JSON or `-` for "no such token".
 */
function sealer(macKey: Buffer) {
  const mac = (redisKey: string, readAt: number, body: string) =>
    createHmac('sha256', macKey)
      .update(`${redisKey}\n${readAt}\n${body}`)
      .digest('base64url')
      .slice(0, MAC_LENGTH)
  return {
    seal(redisKey: string, read: CacheRead): string {
      const body = read.session === null ? NO_SESSION : JSON.stringify(read.session)
      return `${read.readAt}:${mac(redisKey, read.readAt, body)}:${body}`
    },
    /** The value's read, or null when it is not one of ours (forged, damaged, or from an older format). */
    open(redisKey: string, raw: string): CacheRead | null {
      const first = raw.indexOf(':')
      const second = raw.indexOf(':', first + 1)
      if (first <= 0 || second !== first + 1 + MAC_LENGTH) return null
      const readAt = Number(raw.slice(0, first))
      const body = raw.slice(second + 1)
      const given = Buffer.from(raw.slice(first + 1, second))
      const expected = Buffer.from(mac(redisKey, readAt, body))
      if (!Number.isSafeInteger(readAt) || given.length !== expected.length) return null
      if (!timingSafeEqual(given, expected)) return null
      if (body === NO_SESSION) return { session: null, readAt }
      const row = JSON.parse(body)
      // Written by a replica of a version before tenants: its tenant is unknown, so it is not an answer.
      if (typeof row.tenant_id !== 'string') return null
      for (const field of DATES) if (row[field] !== null) row[field] = new Date(row[field])
      return { session: row as SessionRow, readAt }
    },
  }
}

/** The most entries the negative cache and the distrust list hold, whatever L1_MAX_ENTRIES is. */
const AUX_MAX_ENTRIES = 100_000

/**
 * L1 (in-process LRU, short TTL) in front of L2 (Redis) in front of Postgres.
 *
 * What may answer, and why it cannot be wrong about a revoked session by more
 * than the bound (L1_TTL_MS):
 * - a row this replica read from Postgres itself lives in L1 for the bound,
 *   counted from when the read began, whatever else fails;
 * - a copy from Redis is used only while the invalidation feed is live (every
 *   change committed more than the bound ago has been heard), and only if it
 *   was read (Postgres time) after the feed's watermark, after the latest
 *   change heard to its session, and less than L2_TTL_MS ago: its age is
 *   judged from its content, not from Redis' expiry, which a delayed write
 *   would restart;
 * - "no such token" is always safe: tokens are never guessed into existence.
 * Redis may be down, partitioned, back with old data or written by a stranger:
 * at worst its entries are ignored and Postgres answers.
 */
export function createSessionCache(options: CacheOptions): SessionCache {
  const { redis, feed, metrics, log, keyPrefix } = options
  // tok2: values of the format before this one (plain JSON under tok:) are never read.
  const redisKey = (key: string) => `${keyPrefix}tok2:${key}`
  const { seal, open } = sealer(options.macKey)
  const l1 =
    options.l1TtlMs > 0
      ? new LRUCache<string, PackedSession>({ max: options.l1MaxEntries, ttl: options.l1TtlMs })
      : null
  // The two LRUs beside L1 hold at most AUX_MAX_ENTRIES: an LRU allocates room for all its entries
  // up front, about 100 bytes each, and neither needs to grow with L1 (unknown tokens are not worth
  // a million entries; changes heard within the distrust time are far fewer).
  const auxMax = Math.min(options.l1MaxEntries, AUX_MAX_ENTRIES)
  // Unknown tokens get an LRU of their own: a flood of garbage cannot evict
  // live sessions, and "unknown" never goes stale (tokens are never guessed into existence).
  const unknown = new LRUCache<string, true>({ max: auxMax, ttl: options.negativeTtlMs })
  // Sessions heard changed: copies read (Postgres time) before `after` are stale; Infinity until the
  // feed stamps the change. Kept until the age rule alone rejects such copies (L2_TTL_MS, plus the
  // bound by which the feed's clock may lag).
  const distrustMs = options.l2TtlMs + options.l1TtlMs + 1000
  const distrusted = new LRUCache<string, { after: number; until: number }>({
    max: auxMax,
    ttl: distrustMs,
    // Forgetting a change early would trust its stale copy: trust no copy read before the next proof instead.
    dispose: (value, _key, reason) => {
      if (reason === 'evict' && performance.now() < value.until) {
        metrics.l2Rejected.inc({ reason: 'distrust_overflow' })
        feed.distrustUntilNextProof()
      }
    },
  })
  // Counters bound once: looking labels up costs more than the L1 hit itself.
  const l1Positive = metrics.tally(metrics.cacheHits, 'l1', 'positive')
  const l1Negative = metrics.tally(metrics.cacheHits, 'l1', 'negative')
  const l1Miss = metrics.tally(metrics.cacheMisses, 'l1')
  // One Redis/Postgres read per token at a time; concurrent misses share it,
  // but never across an invalidation: a read begun before a change could
  // return the row as it was.
  const inflight = new Map<
    string,
    { generation: number; startedAt: number; read: Promise<SessionRow | null> }
  >()
  // Bumped whenever an entry may have been invalidated; a lookup that saw it
  // change while it read does not keep what it read.
  let generation = 0
  if (redis) redis.client.defineCommand('fillNewer', { numberOfKeys: 1, lua: FILL_NEWER })

  function forget(keys: Iterable<string>) {
    generation++
    const until = performance.now() + distrustMs
    for (const key of keys) {
      l1?.delete(key)
      distrusted.set(key, { after: Number.POSITIVE_INFINITY, until })
    }
  }

  const handlers: FeedHandlers = {
    invalidate: forget,
    settle(keys, at) {
      const until = performance.now() + distrustMs
      for (const key of keys) {
        const entry = distrusted.get(key)
        if (entry && entry.after === Number.POSITIVE_INFINITY) distrusted.set(key, { after: at, until })
      }
    },
    gap() {
      generation++
      if (l1 && l1.size > 0) {
        l1.clear()
        metrics.l1Clears.inc()
        log.warn('invalidation feed had a gap: L1 session cache cleared')
      }
    },
  }
  feed.subscribe(handlers)

  /** May a Redis copy of this session be used right now? */
  function sharedUsable(key: string, read: CacheRead): boolean {
    if (read.session === null) return true
    return (
      feed.live() &&
      read.readAt > feed.trustedAfter() &&
      read.readAt > feed.postgresNow() - options.l2TtlMs &&
      read.readAt > (distrusted.get(key)?.after ?? Number.NEGATIVE_INFINITY)
    )
  }

  /**
   * Keeps an answer in L1: a copy from Redis (`readStartedAt` null) for the L1
   * lifetime, trusted only while the feed is live; a row this replica read
   * from Postgres for the bound counted from when its read began.
   */
  function keepLocal(key: string, session: SessionRow | null, readStartedAt: number | null) {
    if (session === null) {
      unknown.set(key, true)
      return
    }
    if (!l1) return
    if (readStartedAt === null) {
      l1.set(key, new PackedSession(session, true))
      return
    }
    const ttl = Math.floor(options.l1TtlMs - (performance.now() - readStartedAt))
    if (ttl > 0) l1.set(key, new PackedSession(session, false), { ttl })
  }

  function fill(key: string, read: CacheRead, startedAt: number, now: number, seen: number) {
    if (seen !== generation) return
    keepLocal(key, read.session, startedAt)
    if (!redis) return
    const age = performance.now() - startedAt
    const ttl = Math.floor(
      read.session === null
        ? options.negativeTtlMs
        : Math.min(options.l2TtlMs - age, read.session.absolute_expires_at.getTime() - now),
    )
    if (ttl <= 0) return
    const k = redisKey(key)
    void redis.run('fill', (r) =>
      (r as unknown as FillNewer).fillNewer(k, seal(k, read), String(read.readAt), String(ttl)),
    )
  }

  function peek(key: string, counted = true): SessionRow | null | undefined {
    const hit = l1?.get(key)
    if (hit) {
      if (!hit.shared || feed.live()) {
        if (counted) l1Positive.inc()
        return hit.unpack()
      }
      l1?.delete(key)
    }
    if (unknown.get(key)) {
      if (counted) l1Negative.inc()
      return null
    }
    return undefined
  }

  async function fromRedis(key: string, seen: number): Promise<CacheRead | undefined> {
    if (!redis || !feed.live()) return undefined
    const raw = await redis.run('get', (r) => r.get(redisKey(key)))
    if (!raw) {
      if (raw !== undefined) metrics.cacheMisses.inc({ level: 'l2' })
      return undefined
    }
    const read = open(redisKey(key), raw)
    if (read === null) {
      metrics.l2Rejected.inc({ reason: 'forged' })
      return undefined
    }
    // Judged when the answer is given, not when the read was sent.
    if (!sharedUsable(key, read)) {
      metrics.l2Rejected.inc({ reason: 'stale' })
      return undefined
    }
    metrics.cacheHits.inc({ level: 'l2', kind: read.session ? 'positive' : 'negative' })
    if (seen === generation) keepLocal(key, read.session, null)
    return read
  }

  async function read(key: string, load: () => Promise<CacheRead>, now: number) {
    const seen = generation
    const shared = await fromRedis(key, seen)
    if (shared) return shared.session
    const startedAt = performance.now()
    const loaded = await load()
    fill(key, loaded, startedAt, now, seen)
    return loaded.session
  }

  return {
    peek,
    countHit: () => l1Positive.inc(),

    async lookup(key, load, now) {
      const hit = peek(key)
      if (hit !== undefined) return hit
      l1Miss.inc()
      // Joined only while young: a read older than the bound may hold a snapshot from before a change
      // this replica has not heard of (its feed may be down).
      const shared = inflight.get(key)
      if (
        shared &&
        shared.generation === generation &&
        performance.now() - shared.startedAt < options.l1TtlMs
      )
        return shared.read
      const entry = { generation, startedAt: performance.now(), read: read(key, load, now) }
      inflight.set(key, entry)
      const done = () => {
        if (inflight.get(key) === entry) inflight.delete(key)
      }
      entry.read.then(done, done)
      return entry.read
    },

    refresh(key, session, readStartedAt) {
      // Only over an entry that is still there: if an invalidation dropped it
      // while the row was being read, the row may be older than the invalidation.
      if (l1?.has(key)) keepLocal(key, session, readStartedAt)
    },

    async invalidate(keys) {
      if (keys.length === 0) return
      forget(keys)
      metrics.invalidationsSent.inc(keys.length)
      // Not needed for correctness (every replica hears the change from
      // Postgres and ignores older copies), so a slow Redis does not hold up
      // the acknowledgement; it spares the other replicas a stale read.
      if (!redis) return
      // Replicas of the previous version (no feed) learn of changes only by this broadcast, and cache
      // under tok:. Until every replica runs this version, keep telling them; drop in the next release.
      // That version never ran on a Redis Cluster, so a cluster gets neither.
      const legacy = redis.cluster ? [] : keys.map((key) => `${keyPrefix}tok:${key}`)
      void redis.write('invalidate', (r) =>
        Promise.all([
          // One DEL per key, not one DEL of all: on a cluster the keys live in different slots (a
          // multi-key command would be refused, CROSSSLOT). The writer pipelines them, a write per node.
          ...[...keys.map(redisKey), ...legacy].map((key) => r.del(key)),
          ...(redis.cluster ? [] : [r.publish(`${keyPrefix}invalidate`, keys.join(','))]),
        ]),
      )
    },

    async close() {
      l1?.clear()
      unknown.clear()
      distrusted.clear()
    },
  }
}

interface FillNewer {
  fillNewer(key: string, value: string, readAt: string, ttlMs: string): Promise<number>
}
