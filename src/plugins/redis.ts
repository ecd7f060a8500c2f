import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import type { Metrics } from '../metrics.ts'
import { connectRedis, type RedisConnection } from '../redis.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Null without REDIS_URL: every user of Redis has a path without it. */
    redis: RedisConnection | null
  }
}

/** The Redis connections (see connectRedis) to one server or a cluster, when REDIS_URL is set; closed with the app. */
export default fp(
  async (app, { config, metrics }: { config: Config; metrics: Metrics }) => {
    const redis = config.redisUrl
      ? connectRedis({
          url: config.redisUrl,
          commandTimeoutMs: config.redisCommandTimeoutMs,
          log: app.log,
          metrics,
        })
      : null
    app.decorate('redis', redis)
    app.addHook('onClose', async () => {
      await redis?.close()
    })
  },
  { name: 'redis' },
)
