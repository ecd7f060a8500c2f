import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Log } from '../logger.ts'
import type { Sql } from './connect.ts'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

/** How long a migration may wait for one lock before it gives way (and tries again). */
const LOCK_TIMEOUT_MS = 250
const ATTEMPTS = 480

/** The first line of a file applied outside a transaction (it builds indexes CONCURRENTLY). */
const NO_TRANSACTION = /^-- no-transaction\s*$/m

/**
 * A schema whose tables hold less than this is indexed in a moment: a file marked
 * no-transaction is applied in the transaction there, without CONCURRENTLY.
 */
const SMALL_SCHEMA_BYTES = 32 * 1024 * 1024

const lockKey = (schema: string) => `session-authority:migrate:${schema}`

/**
 * Applies the numbered SQL files of migrations/ that the schema lacks, in order,
 * in one transaction holding an advisory lock: replicas starting together wait
 * for each other instead of racing, and a failed file leaves nothing half-done.
 * A migration that would wait more than LOCK_TIMEOUT_MS for a table (a long
 * transaction elsewhere) rolls back and tries again a moment later, rather than
 * holding the tables it already locked, and every replica still serving from
 * them, behind that transaction. Returns the names applied.
 *
 * A file whose first line is `-- no-transaction` builds indexes with CREATE
 * INDEX CONCURRENTLY (writes go on during the build), which cannot run in a
 * transaction: the files before it commit, then it is applied statement by
 * statement (one per `;`, no dollar quoting) under the same lock held for the
 * session, then the files after it. Its statements must be safe to run again
 * (IF NOT EXISTS): an index a failed build left invalid is dropped first. On a
 * schema small enough to index in a moment (a new install) it is applied in the
 * transaction like any other file, without CONCURRENTLY: a concurrent build
 * waits for every older transaction in the database, for nothing there.
 */
export async function migrate(
  sql: Sql,
  schema: string,
  log: Log,
  dir = migrationsDir,
  smallSchemaBytes = SMALL_SCHEMA_BYTES,
): Promise<string[]> {
  const applied: string[] = []
  for (let attempt = 1; ; attempt++) {
    try {
      for (;;) {
        const step = await migrateOnce(sql, schema, log, dir, smallSchemaBytes)
        applied.push(...step.applied)
        if (step.outside === null) return applied
        if (await applyOutsideTransaction(sql, schema, log, dir, step.outside)) applied.push(step.outside)
      }
    } catch (err) {
      if ((err as { code?: string }).code !== '55P03' || attempt >= ATTEMPTS) throw err
      log.warn({ schema, attempt }, 'migration gave way to a lock held elsewhere; trying again')
      await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 1000))
    }
  }
}

/** Applies pending files in one transaction up to the first that must be applied outside one (returned). */
async function migrateOnce(
  sql: Sql,
  schema: string,
  log: Log,
  dir: string,
  smallSchemaBytes: number,
): Promise<{ applied: string[]; outside: string | null }> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort()
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${lockKey(schema)}))`
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
      let text = await readFile(`${dir}/${file}`, 'utf8')
      if (NO_TRANSACTION.test(text)) {
        const [row] = await tx<{ bytes: number }[]>`
          select coalesce(sum(pg_relation_size(c.oid)), 0)::float8 as bytes from pg_class c
          where c.relnamespace = ${schema}::regnamespace and c.relkind = 'r'`
        if ((row?.bytes ?? 0) >= smallSchemaBytes) return { applied, outside: file }
        text = text.replace(/\bconcurrently\b/gi, '')
      }
      await tx.unsafe(text)
      await tx`insert into ${tx(schema)}.schema_migrations (name) values (${file})`
      applied.push(file)
      log.info({ migration: file, schema }, 'migration applied')
    }
    return { applied, outside: null }
  })
}

/**
 * Applies a no-transaction file one statement at a time on one connection holding the migration lock.
 * False when another replica applied it first. Without a lock timeout: a concurrent build blocks no
 * reads or writes while it waits.
 */
async function applyOutsideTransaction(
  sql: Sql,
  schema: string,
  log: Log,
  dir: string,
  file: string,
): Promise<boolean> {
  const reserved = await sql.reserve()
  try {
    await reserved`select pg_advisory_lock(hashtext(${lockKey(schema)}))`
    try {
      const [done] = await reserved`select 1 from ${reserved(schema)}.schema_migrations where name = ${file}`
      if (done) return false
      // Left by a build that failed (this file's, under this lock: no other is under way).
      const invalid = await reserved<{ name: string }[]>`
        select c.relname as name from pg_index i join pg_class c on c.oid = i.indexrelid
        where not i.indisvalid and c.relnamespace = ${schema}::regnamespace`
      for (const { name } of invalid) {
        await reserved`drop index concurrently if exists ${reserved(schema)}.${reserved(name)}`
      }
      const statements = (await readFile(`${dir}/${file}`, 'utf8'))
        .replace(/^\s*--.*$/gm, '')
        .split(/;\s*$/m)
        .map((s) => s.trim())
        .filter((s) => s.length > 0)
      for (const statement of statements) {
        const started = Date.now()
        await reserved.unsafe(statement)
        log.info({ migration: file, schema, ms: Date.now() - started }, 'migration statement applied')
      }
      await reserved`insert into ${reserved(schema)}.schema_migrations (name) values (${file})`
      log.info({ migration: file, schema }, 'migration applied')
      return true
    } finally {
      await reserved`select pg_advisory_unlock(hashtext(${lockKey(schema)}))`
    }
  } finally {
    reserved.release()
  }
}
