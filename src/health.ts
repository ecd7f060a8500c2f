import type { Sql } from './db/connect.ts'
import type { Metrics } from './metrics.ts'
import type { RedisConnection } from './redis.ts'
import type { InvalidationFeed } from './sessions/invalidation-feed.ts'

export interface HealthReport {
  postgres: 'up' | 'down'
  redis: 'up' | 'degraded' | 'disabled'
  invalidation_feed: ReturnType<InvalidationFeed['state']>['feed']
  invalidation_feed_lag_ms: number | null
}

const POSTGRES_CHECK_TIMEOUT_MS = 2000

/** What /readyz and /metrics report about the service's backing stores. */
export function createHealth({
  sql,
  redis,
  feed,
  metrics,
}: {
  sql: Sql
  redis: RedisConnection | null
  feed: InvalidationFeed
  metrics: Metrics
}) {
  async function check(): Promise<HealthReport> {
    const postgres = await Promise.race([
      sql`select 1`.then(
        () => 'up' as const,
        () => 'down' as const,
      ),
      new Promise<'down'>((resolve) => setTimeout(resolve, POSTGRES_CHECK_TIMEOUT_MS, 'down').unref()),
    ])
    const { feed: state, lagMs } = feed.state()
    const report: HealthReport = {
      postgres,
      redis: redis ? redis.state() : 'disabled',
      invalidation_feed: state,
      invalidation_feed_lag_ms: lagMs,
    }
    metrics.postgresUp.set(postgres === 'up' ? 1 : 0)
    metrics.redisUp.set(report.redis === 'degraded' ? 0 : 1)
    return report
  }
  return { check }
}

export type Health = ReturnType<typeof createHealth>
