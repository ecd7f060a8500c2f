import { mkdir } from 'node:fs/promises'
import postgres from 'postgres'
import type { Config } from '../config.ts'
import type { Log } from '../logger.ts'
import { lockDataDir } from './data-dir-lock.ts'

export type Sql = postgres.Sql

export interface DedicatedOptions {
  /**
   * Called with each notification of a channel the connection LISTENs to.
   * postgres.js reads this option (its own listen() is built on it) though its
   * types do not declare it; we use it to see the connection close as well.
   */
  onnotify?: (channel: string, payload: string) => void
  /** Called when the connection closes (a new one listens to nothing). */
  onclose?: () => void
}

export interface Database {
  sql: Sql
  /** True when the database is the embedded PGlite in DATA_DIR. */
  embedded: boolean
  /**
   * Opens a one-connection client of its own to the same server (the
   * invalidation feed's), closed by whoever opened it; null when embedded.
   */
  dedicated: ((options?: DedicatedOptions) => Sql) | null
  close(): Promise<void>
}

/**
 * Connects to DATABASE_URL, or starts the embedded Postgres (PGlite behind a
 * local Postgres-protocol socket) so the rest of the code uses postgres.js the
 * same way in both cases. Nothing connects before this is called.
 */
export async function connectDatabase(config: Config, log: Log): Promise<Database> {
  const options = {
    max: config.dbPoolMax,
    connect_timeout: 5,
    // Retry a lost server quickly (the default backoff grows to 20 s, during
    // which every query waits before failing): 503s stay fast and recovery prompt.
    backoff: (attempt: number) => Math.min(0.05 * 2 ** attempt, 0.5),
    idle_timeout: 60,
    onnotice: () => {},
    connection: { search_path: config.dbSchema, application_name: 'session-authority' },
    transform: { undefined: null },
  }
  if (config.databaseUrl) {
    const url = config.databaseUrl
    const sql = postgres(url, options)
    const dedicated = (extra: DedicatedOptions = {}) =>
      postgres(url, { ...options, ...(extra as object), max: 1, idle_timeout: 0, fetch_types: false })
    return { sql, embedded: false, dedicated, close: () => sql.end({ timeout: 5 }) }
  }
  const { PGlite } = await import('@electric-sql/pglite')
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket')
  await mkdir(config.dataDir, { recursive: true })
  // Two PGlite instances on one folder corrupt it, and each loses the other's writes.
  // A failed start keeps the lock until the process exits (the folder may be half open).
  const unlock = await lockDataDir(config.dataDir)
  const db = await PGlite.create(config.dataDir)
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 1 })
  await server.start()
  const [host, port] = server.getServerConn().split(':')
  log.info({ dataDir: config.dataDir }, 'embedded Postgres started (set DATABASE_URL to use a server)')
  // PGlite is one session: one pooled connection keeps transactions from interleaving.
  const sql = postgres({
    ...options,
    host,
    port: Number(port),
    username: 'postgres',
    database: 'postgres',
    max: 1,
  })
  return {
    sql,
    embedded: true,
    dedicated: null,
    async close() {
      await sql.end({ timeout: 5 })
      await server.stop()
      await db.close()
      // Not on a failed close: the folder stays locked until this process exits.
      unlock()
    },
  }
}
