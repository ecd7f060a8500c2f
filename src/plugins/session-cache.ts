import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import type { Metrics } from '../metrics.ts'
import { createSessionCache, type SessionCache } from '../sessions/cache.ts'
import {
  createPostgresFeed,
  feedChannel,
  type InvalidationFeed,
  localFeed,
  offFeed,
} from '../sessions/invalidation-feed.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Tells this replica which cached sessions changed elsewhere, and whether it can still tell. */
    invalidationFeed: InvalidationFeed
    sessionCache: SessionCache
  }
}

/** The session cache (L1, and Redis when the feed can prove a copy fresh) and its invalidation feed. */
export default fp(
  async (app, { config, kek, metrics }: { config: Config; kek: KeyEncryptionKey; metrics: Metrics }) => {
    // Only a Postgres feed can prove a shared copy fresh: without one (embedded database, or a bound of
    // 0) sessions are not cached in Redis, which would be written and never read.
    const dedicated = config.l1TtlMs > 0 ? app.db.dedicated : null
    const feed = dedicated
      ? createPostgresFeed({
          connect: dedicated,
          channel: feedChannel(config.dbSchema),
          boundMs: config.l1TtlMs,
          metrics,
          log: app.log,
        })
      : config.l1TtlMs === 0
        ? offFeed
        : localFeed
    metrics.watchFeed(feed.state)
    if (app.redis && !dedicated) {
      app.log.warn('REDIS_URL is set but sessions are not cached there (embedded database, or L1_TTL_MS=0)')
    }
    const cache = createSessionCache({
      ...config,
      keyPrefix: config.redisKeyPrefix,
      redis: dedicated ? app.redis : null,
      feed,
      macKey: kek.derive('session cache values'),
      metrics,
      log: app.log,
    })
    app.decorate('invalidationFeed', feed)
    app.decorate('sessionCache', cache)
    app.addHook('onClose', async () => {
      await cache.close()
      await feed.close()
    })
    // Not needed for correctness (until it is live, Redis is not trusted), but a
    // replica that starts with its feed live starts with a useful cache.
    await feed.ready(2000)
  },
  { name: 'session-cache', dependencies: ['db', 'redis'] },
)
