import fp from 'fastify-plugin'
import { createDispatcher } from '../webhooks/dispatcher.ts'
import { createWebhookStore, type WebhookStore } from '../webhooks/store.ts'
import type { DomainOptions } from './sessions.ts'

declare module 'fastify' {
  interface FastifyInstance {
    webhooks: WebhookStore
  }
}

/** The webhook subscriptions, and the dispatcher that sends their deliveries until the app closes. */
export default fp(
  async (app, { config, clock, kek, metrics }: DomainOptions) => {
    const store = createWebhookStore({ sql: app.db.sql, kek })
    const dispatcher = createDispatcher({ store, kek, clock, config, metrics, log: app.log })
    dispatcher.start()
    app.decorate('webhooks', store)
    app.addHook('onClose', () => dispatcher.close())
  },
  { name: 'webhooks', dependencies: ['db'] },
)
