import fp from 'fastify-plugin'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { createAccessTokens } from '../keys/access-tokens.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import type { Metrics } from '../metrics.ts'
import { createSessionRepository } from '../sessions/repository.ts'
import { createSessionService, type SessionService } from '../sessions/service.ts'
import { createWriteBehind } from '../sessions/write-behind.ts'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionService
  }
}

/** What the domain plugins (sessions, webhooks) are built with beside the app's own decorations. */
export interface DomainOptions {
  config: Config
  clock: Clock
  kek: KeyEncryptionKey
  metrics: Metrics
}

/** The sessions domain, with its last-seen writes batched (write-behind) and flushed when the app closes. */
export default fp(
  async (app, { config, clock, kek, metrics }: DomainOptions) => {
    const repo = createSessionRepository(app.db.sql)
    const touches = createWriteBehind({
      repo,
      intervalMs: config.writeBehindIntervalMs,
      metrics,
      log: app.log,
    })
    const sessions = createSessionService({
      repo,
      cache: app.sessionCache,
      touches,
      clock,
      access: createAccessTokens({ keys: app.signingKeys, config }),
      refreshSecret: kek.derive('refresh token chain'),
      policy: app.tenants.policy,
      loginPolicy: app.tenants.loginPolicy,
      // With Redis there may be other replicas whose last-seen writes are still pending.
      config: { ...config, idleGraceMs: app.redis ? config.writeBehindIntervalMs : 0 },
      log: app.log,
    })
    app.decorate('sessions', sessions)
    app.addHook('onClose', () => touches.close())
  },
  { name: 'sessions', dependencies: ['db', 'redis', 'tenants', 'session-cache', 'signing-keys'] },
)
