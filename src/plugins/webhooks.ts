import fp from 'fastify-plugin'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import type { Metrics } from '../metrics.ts'
import { createDispatcher } from '../webhooks/dispatcher.ts'
import { createWebhookStore, type WebhookStore } from '../webhooks/store.ts'

declare module 'fastify' {
  interface FastifyInstance {
    webhooks: WebhookStore
  }
}

interface Options {
  config: Config
  clock: Clock
  kek: KeyEncryptionKey
  metrics: Metrics
}

/** The webhook subscriptions, and the dispatcher that sends their deliveries until the app closes. */
export default fp(
  async (app, { config, clock, kek, metrics }: Options) => {
    const store = createWebhookStore({ sql: app.db.sql, kek })
    const dispatcher = createDispatcher({ store, kek, clock, config, metrics, log: app.log })
    dispatcher.start()
    app.decorate('webhooks', store)
    app.addHook('onClose', () => dispatcher.close())
  },
  { name: 'webhooks', dependencies: ['db'] },
)
