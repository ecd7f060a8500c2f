import type { Sql } from './db/connect.ts'
import type { Metrics } from './metrics.ts'
import type { RedisConnection } from './redis.ts'

export interface HealthReport {
  postgres: 'up' | 'down'
  redis: 'up' | 'degraded' | 'disabled'
}

const POSTGRES_CHECK_TIMEOUT_MS = 2000

/** What /readyz and /metrics report about the service's backing stores. */
export function createHealth({
  sql,
  redis,
  metrics,
}: {
  sql: Sql
  redis: RedisConnection | null
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
    const report: HealthReport = { postgres, redis: redis ? redis.state() : 'disabled' }
    metrics.postgresUp.set(postgres === 'up' ? 1 : 0)
    metrics.redisUp.set(report.redis === 'degraded' ? 0 : 1)
    return report
  }
  return { check }
}

export type Health = ReturnType<typeof createHealth>
