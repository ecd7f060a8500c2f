import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { LatencyHistogram } from './latency-histogram.ts'

/**
 * The service's Prometheus metrics, on a registry of its own (several apps can
 * live in one process, as in the tests).
 */
export function createMetrics() {
  const registry = new Registry()
  const registers = [registry]
  // Read when scraped, not pushed per request (the queue changes on every introspection).
  let queueSize = () => 0
  let feed = (): { feed: string; lagMs: number | null } => ({ feed: 'off', lagMs: null })
  // Counts bumped on every introspection are kept as plain numbers and handed to their counters when
  // the registry is read: prom-client hashes the labels of every inc(), even through a bound child.
  const tallies: Array<{ child: { inc(by: number): void }; pending: number }> = []
  function flushTallies() {
    for (const t of tallies) {
      if (t.pending === 0) continue
      t.child.inc(t.pending)
      t.pending = 0
    }
  }
  /** A counter series counted here and reported when scraped (exact, only later). Its counter must flushTallies. */
  function tally(counter: Counter<string>, ...labels: string[]): { inc(): void } {
    const t = { child: counter.labels(...labels), pending: 0 }
    tallies.push(t)
    return {
      inc() {
        t.pending++
      },
    }
  }
  return {
    /** Where the invalidation feed gauges read their values. */
    watchFeed(state: typeof feed) {
      feed = state
    },
    /** Where write_behind_queue_size reads its value. */
    watchWriteBehindQueue(size: () => number) {
      queueSize = size
    },
    registry,
    /** Tallies, for counters bumped on every request. */
    tally,
    httpDuration: new LatencyHistogram(
      'http_request_duration_seconds',
      'Request latency by route',
      ['method', 'route', 'status'],
      [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    ),
    cacheHits: new Counter({
      name: 'session_cache_hits_total',
      help: 'Introspection cache hits by level (l1, l2) and kind (positive, negative)',
      labelNames: ['level', 'kind'],
      registers,
      collect: flushTallies,
    }),
    cacheMisses: new Counter({
      name: 'session_cache_misses_total',
      help: 'Introspection cache misses by level',
      labelNames: ['level'],
      registers,
      collect: flushTallies,
    }),
    invalidationsSent: new Counter({
      name: 'session_cache_invalidations_sent_total',
      help: 'Token keys this replica invalidated',
      registers,
    }),
    invalidationsReceived: new Counter({
      name: 'session_cache_invalidations_received_total',
      help: 'Changed sessions heard on the Postgres invalidation feed (from any replica, this one included)',
      registers,
    }),
    l1Clears: new Counter({
      name: 'session_cache_l1_clears_total',
      help: 'Whole-L1 clears because the invalidation feed had a gap (changes may have been missed)',
      registers,
    }),
    l2Rejected: new Counter({
      name: 'session_cache_l2_rejected_total',
      help: 'Redis entries not used: forged (MAC check failed) or stale (read before a change this replica heard of, or before its feed was proven)',
      labelNames: ['reason'],
      registers,
    }),
    feedGaps: new Counter({
      name: 'invalidation_feed_gaps_total',
      help: 'Times the invalidation feed (re)started listening; changes committed before each may have been missed',
      registers,
    }),
    feedLive: new Gauge({
      name: 'invalidation_feed_live',
      help: '1 when this replica has proven, within L1_TTL_MS, that it hears every session change',
      registers,
      collect() {
        const { feed: state } = feed()
        this.set(state === 'live' || state === 'local' ? 1 : 0)
      },
    }),
    feedLag: new Gauge({
      name: 'invalidation_feed_lag_seconds',
      help: 'Age of the latest proof that the invalidation feed is complete (-1: never proven)',
      registers,
      collect() {
        const { lagMs } = feed()
        this.set(lagMs === null ? -1 : lagMs / 1000)
      },
    }),
    redisErrors: new Counter({
      name: 'redis_errors_total',
      help: 'Redis commands that failed or were skipped by the open circuit',
      labelNames: ['op'],
      registers,
    }),
    redisUp: new Gauge({ name: 'redis_up', help: '1 when Redis answers (or is not configured)', registers }),
    postgresUp: new Gauge({
      name: 'postgres_up',
      help: '1 when the last Postgres check succeeded',
      registers,
    }),
    writeBehindQueue: new Gauge({
      name: 'write_behind_queue_size',
      help: 'Sessions with last-seen bookkeeping waiting to be written',
      registers,
      collect() {
        this.set(queueSize())
      },
    }),
    writeBehindFlush: new Histogram({
      name: 'write_behind_flush_seconds',
      help: 'Time to write one batch of last-seen bookkeeping',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
    webhookDeliveries: new Counter({
      name: 'webhook_deliveries_total',
      help: 'Webhook delivery attempts by outcome: delivered, failed (will be retried), dead (given up)',
      labelNames: ['outcome'],
      registers,
    }),
    webhookLatency: new Histogram({
      name: 'webhook_delivery_seconds',
      help: 'From an event to its successful delivery',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
      registers,
    }),
    webhooksPending: new Gauge({
      name: 'webhook_deliveries_pending',
      help: "Webhook deliveries waiting to be sent (as of the dispatcher's last round)",
      registers,
    }),
    webhooksDead: new Gauge({
      name: 'webhook_deliveries_dead',
      help: "Webhook deliveries given up on (as of the dispatcher's last round); retry them through the API",
      registers,
    }),
    writeBehindRows: new Counter({
      name: 'write_behind_rows_total',
      help: 'Session rows updated by write-behind flushes',
      registers,
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
