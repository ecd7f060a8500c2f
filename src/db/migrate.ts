import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Log } from '../logger.ts'
import type { Sql } from './connect.ts'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

/**
 * Applies the numbered SQL files of migrations/ that the schema lacks, in order,
 * in one transaction holding an advisory lock: replicas starting together wait
 * for each other instead of racing, and a failed file leaves nothing half-done.
 * Returns the names applied.
 */
export async function migrate(sql: Sql, schema: string, log: Log, dir = migrationsDir): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort()
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${`session-authority:migrate:${schema}`}))`
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
