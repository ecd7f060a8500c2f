import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { connectDatabase, type Database } from '../db/connect.ts'
import { migrate } from '../db/migrate.ts'

declare module 'fastify' {
  interface FastifyInstance {
    db: Database
  }
}

/** Postgres (a server, or the embedded one), migrated when asked, closed with the app. */
export default fp(
  async (app, { config, migrate: runMigrations }: { config: Config; migrate: boolean }) => {
    const db = await connectDatabase(config, app.log)
    app.decorate('db', db)
    app.addHook('onClose', () => db.close())
    if (runMigrations) await migrate(db.sql, config.dbSchema, app.log)
  },
  { name: 'db' },
)
