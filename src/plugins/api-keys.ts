import fp from 'fastify-plugin'
import { type ApiKeyStore, createApiKeyStore } from '../api-keys/api-keys.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'

declare module 'fastify' {
  interface FastifyInstance {
    apiKeys: ApiKeyStore
  }
}

/** The callers' API keys, with ADMIN_API_KEY seeded as the env-admin key. */
export default fp(
  async (app, { config, clock }: { config: Config; clock: Clock }) => {
    const keys = createApiKeyStore({ sql: app.db.sql, clock, cacheTtlMs: config.apiKeyCacheTtlMs })
    if ((await keys.seedEnvAdmin(config.adminApiKey)) === 'revoked') {
      app.log.warn('ADMIN_API_KEY is revoked; unset it or set a new one')
    }
    app.decorate('apiKeys', keys)
  },
  { name: 'api-keys', dependencies: ['db'] },
)
