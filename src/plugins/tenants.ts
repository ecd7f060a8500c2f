import fp from 'fastify-plugin'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { createTenantStore, type TenantStore } from '../tenants/store.ts'

declare module 'fastify' {
  interface FastifyInstance {
    tenants: TenantStore
  }
}

/** The tenants and their policies, loaded at start and reread until the app closes. */
export default fp(
  async (app, { config, clock }: { config: Config; clock: Clock }) => {
    const tenants = createTenantStore({ sql: app.db.sql, clock, config, log: app.log })
    await tenants.start()
    app.decorate('tenants', tenants)
    app.addHook('onClose', () => tenants.close())
  },
  { name: 'tenants', dependencies: ['db'] },
)
