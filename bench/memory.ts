/**
 * What a cached session costs in L1: fills the service's own cache (createSessionCache, L1 only) with
 * N distinct sessions and reports the heap and RSS it grew by, per entry. Run in a child of its own
 * (with --expose-gc, so each figure is taken after a full collection) by `npm run bench`, or alone:
 *
 *   npm run build && node --expose-gc --import tsx bench/memory.ts [entries]     (default 100000)
 *
 * The sessions are shaped as a Redis hit delivers them (parsed from the JSON Redis holds, so every
 * string and object is the session's own, not a constant shared by the fill), with typical metadata
 * (two short keys), one of a few User-Agents, and an address each.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import pino from 'pino'
import type { SessionRow } from '../src/sessions/model.ts'
import { compiled } from './compiled.ts'

// As it ships (compiled; see bench/compiled.ts).
const { createMetrics } = await compiled<typeof import('../src/metrics.ts')>('metrics')
const { createSessionCache } = await compiled<typeof import('../src/sessions/cache.ts')>('sessions/cache')
const { localFeed } = await compiled<typeof import('../src/sessions/invalidation-feed.ts')>(
  'sessions/invalidation-feed',
)

export interface MemoryResult {
  entries: number
  heapBytesPerEntry: number
  rssBytesPerEntry: number
  rssMb: number
}

const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
]
const DATES = ['created_at', 'last_seen_at', 'idle_expires_at', 'absolute_expires_at'] as const

function session(i: number, now: number): SessionRow {
  const ip = `198.51.${(i >> 8) & 255}.${i & 255}`
  const json = JSON.stringify({
    tenant_id: 'default',
    id: randomUUID(),
    user_id: `user-${i}`,
    status: 'active',
    token_type: 'opaque',
    ip,
    bound_ip: ip,
    user_agent: USER_AGENTS[i % USER_AGENTS.length],
    device: {
      browser: 'Chrome',
      browser_version: '131.0.0.0',
      os: 'Windows',
      os_version: '10',
      type: 'desktop',
    },
    metadata: { plan: 'pro', org: `org-${i % 1000}` },
    access_claims: [],
    client_id: 'key_0bba1f4d0a342f6b',
    binding: {},
    suspended_at: null,
    suspension_reason: null,
    idle_timeout_seconds: 1800,
    absolute_lifetime_seconds: 86_400,
    created_at: new Date(now),
    last_seen_at: new Date(now),
    idle_expires_at: new Date(now + 1_800_000),
    absolute_expires_at: new Date(now + 86_400_000),
    ended_at: null,
    end_reason: null,
  })
  const row = JSON.parse(json)
  for (const field of DATES) row[field] = new Date(row[field])
  return row as SessionRow
}

function collect() {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage()
}

export async function measureMemory(entries: number): Promise<MemoryResult> {
  // Before the cache is made: its LRUs set aside their per-entry bookkeeping when made, and that is
  // part of what an entry costs.
  const before = collect()
  const cache = createSessionCache({
    l1TtlMs: 3_600_000,
    l1MaxEntries: entries,
    l2TtlMs: 0,
    negativeTtlMs: 1000,
    keyPrefix: 'bench:',
    redis: null,
    feed: localFeed,
    macKey: randomBytes(32),
    metrics: createMetrics(),
    log: pino({ level: 'silent' }),
  })
  const now = Date.now()
  for (let i = 0; i < entries; i++) {
    // Keys are token hashes, as the service makes them.
    const key = randomBytes(32).toString('hex')
    const row = session(i, now)
    await cache.lookup(key, async () => ({ session: row, readAt: now }), now)
  }
  const after = collect()
  // Still holding every entry when measured (and this keeps the cache reachable until then).
  if (cache.peek('absent') !== undefined) throw new Error('unexpected entry')
  await cache.close()
  return {
    entries,
    heapBytesPerEntry: (after.heapUsed - before.heapUsed) / entries,
    rssBytesPerEntry: (after.rss - before.rss) / entries,
    rssMb: after.rss / 2 ** 20,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const entries = Number(process.argv[2] ?? 100_000)
  measureMemory(entries).then((result) => console.log(JSON.stringify(result)))
}
