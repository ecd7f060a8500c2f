import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Log } from '../logger.ts'
import type { Sql } from './connect.ts'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

/** How long a migration may wait for one lock before it gives way (and tries again). */
const LOCK_TIMEOUT_MS = 250
const ATTEMPTS = 480

/**
 * Applies the numbered SQL files of migrations/ that the schema lacks, in order,
 * in one transaction holding an advisory lock: replicas starting together wait
 * for each other instead of racing, and a failed file leaves nothing half-done.
 * A migration that would wait more than LOCK_TIMEOUT_MS for a table (a long
 * transaction elsewhere) rolls back and tries again a moment later, rather than
 * holding the tables it already locked, and every replica still serving from
 * them, behind that transaction. Returns the names applied.
 */
export async function migrate(sql: Sql, schema: string, log: Log, dir = migrationsDir): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await migrateOnce(sql, schema, log, dir)
    } catch (err) {
      if ((err as { code?: string }).code !== '55P03' || attempt >= ATTEMPTS) throw err
      log.warn({ schema, attempt }, 'migration gave way to a lock held elsewhere; trying again')
      await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 1000))
    }
  }
}

async function migrateOnce(sql: Sql, schema: string, log: Log, dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort()
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${`session-authority:migrate:${schema}`}))`
    // After the advisory lock: waiting for another replica's migration is not giving way.
    await tx.unsafe(`set local lock_timeout = ${LOCK_TIMEOUT_MS}`)
    await tx`create schema if not exists ${tx(schema)}`
    await tx`create table if not exists ${tx(schema)}.schema_migrations (
      name text primary key,
      applied_at timestamptz not null default now()
    )`
    const done = new Set(
      (await tx<{ name: string }[]>`select name from ${tx(schema)}.schema_migrations`).map((r) => r.name),
    )
    const applied: string[] = []
    for (const file of files) {
      if (done.has(file)) continue
      await tx.unsafe(await readFile(`${dir}/${file}`, 'utf8'))
      await tx`insert into ${tx(schema)}.schema_migrations (name) values (${file})`
      applied.push(file)
      log.info({ migration: file, schema }, 'migration applied')
    }
    return applied
  })
}
