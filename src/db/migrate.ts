import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Log } from '../logger.ts'
import type { Sql } from './connect.ts'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

/** How long a migration may wait for one lock before it gives way (and tries again). */
const LOCK_TIMEOUT_MS = 250
const ATTEMPTS = 480

/** The first line of a file applied outside a transaction (it builds indexes CONCURRENTLY, or waits for a vacuum). */
const NO_TRANSACTION = /^-- no-transaction[ \t]*\r?\n/
/** The indexes such a file builds or drops: `create index concurrently if not exists <name>` and the like. */
const CONCURRENT_INDEX =
  /\b((?:create|drop)\s+(?:unique\s+)?index)\s+concurrently\b(\s+if\s+(?:not\s+)?exists)?\s+("?[A-Za-z_][A-Za-z0-9_]*"?)/gi

/**
 * How often a replica asks again for the migration lock another holds. It never waits for the lock
 * inside Postgres: a session waiting there holds a snapshot, and a concurrent index build under the
 * lock waits for every older snapshot of its database, so the two would wait for each other (a
 * deadlock, which Postgres breaks by failing one of them).
 */
const LOCK_POLL_MS = 250
/** Failures after which a migration rolls back and tries again: a lock timeout, a deadlock. */
const RETRIED = new Set(['55P03', '40P01'])

/**
 * A schema whose tables hold less than this is indexed in a moment: a file marked
 * no-transaction is applied in the transaction there, without CONCURRENTLY.
 */
const SMALL_SCHEMA_BYTES = 32 * 1024 * 1024

const lockKey = (schema: string) => `session-authority:migrate:${schema}`

/**
 * Applies the numbered SQL files of migrations/ that the schema lacks, in order,
 * in one transaction holding an advisory lock: replicas starting together take
 * turns instead of racing (each asks for the lock until it has it, see
 * LOCK_POLL_MS), and a failed file leaves nothing half-done.
 * A migration that would wait more than LOCK_TIMEOUT_MS for a table (a long
 * transaction elsewhere) rolls back and tries again a moment later, rather than
 * holding the tables it already locked, and every replica still serving from
 * them, behind that transaction. Returns the names applied.
 *
 * A file whose first line is `-- no-transaction` builds indexes with CREATE
 * INDEX CONCURRENTLY (writes go on during the build), which cannot run in a
 * transaction, or takes a lock that waits for a running vacuum without
 * blocking reads or writes (012's storage parameter): the files before it
 * commit, then it is applied statement by statement (one per `;`, no dollar
 * quoting) under the same lock held for the session, then the files after
 * it. Its statements must be safe to run again (IF NOT EXISTS): an index a
 * failed build left invalid is dropped first. On a
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
        if (step === 'busy') {
          await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS))
          continue
        }
        applied.push(...step.applied)
        if (step.outside === null) return applied
        if (await applyOutsideTransaction(sql, schema, log, dir, step.outside)) applied.push(step.outside)
      }
    } catch (err) {
      if (!RETRIED.has((err as { code?: string }).code ?? '') || attempt >= ATTEMPTS) throw err
      log.warn({ schema, attempt }, 'migration gave way to a lock held elsewhere; trying again')
      await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 1000))
    }
  }
}

/**
 * Applies pending files in one transaction up to the first that must be applied outside one (returned);
 * 'busy' at once, having done nothing, while another replica holds the migration lock.
 */
async function migrateOnce(
  sql: Sql,
  schema: string,
  log: Log,
  dir: string,
  smallSchemaBytes: number,
): Promise<{ applied: string[]; outside: string | null } | 'busy'> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort()
  return sql.begin(async (tx) => {
    const [lock] = await tx<{ held: boolean }[]>`
      select pg_try_advisory_xact_lock(hashtext(${lockKey(schema)})) as held`
    if (!lock?.held) return 'busy' as const
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
        text = text.replace(CONCURRENT_INDEX, (_all, verb, exists = '', name) => `${verb}${exists} ${name}`)
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
 * False when another replica applied it first. Without a lock timeout: a concurrent build, or a
 * storage parameter's change, blocks no reads or writes while it waits.
 */
async function applyOutsideTransaction(
  sql: Sql,
  schema: string,
  log: Log,
  dir: string,
  file: string,
): Promise<boolean> {
  const text = await readFile(`${dir}/${file}`, 'utf8')
  // The indexes this file builds: one of them a failed build left invalid is dropped and built again.
  const own = [...text.matchAll(CONCURRENT_INDEX)].map((m) => (m[3] as string).replaceAll('"', ''))
  const reserved = await sql.reserve()
  try {
    // Asked for again and again, never waited for in Postgres (see LOCK_POLL_MS).
    for (;;) {
      const [lock] = await reserved<{ held: boolean }[]>`
        select pg_try_advisory_lock(hashtext(${lockKey(schema)})) as held`
      if (lock?.held) break
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS))
    }
    try {
      const [done] = await reserved`select 1 from ${reserved(schema)}.schema_migrations where name = ${file}`
      if (done) return false
      // Left by a build of this file that failed (under this lock: no other is under way).
      const invalid = await reserved<{ name: string }[]>`
        select c.relname as name from pg_index i join pg_class c on c.oid = i.indexrelid
        where not i.indisvalid and c.relnamespace = ${schema}::regnamespace and c.relname = any(${own})`
      for (const { name } of invalid) {
        await reserved`drop index concurrently if exists ${reserved(schema)}.${reserved(name)}`
      }
      const statements = text
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
