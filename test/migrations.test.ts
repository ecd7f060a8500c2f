import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { type TestContext, test } from 'node:test'
import pino from 'pino'
import postgres from 'postgres'
import { migrate, migrationsDir } from '../src/db/migrate.ts'
import { holdTableLock } from './fixtures/table-lock.ts'
import { DATABASE_URL, dropSchema, eventually, uniqueSchema } from './helper.ts'

const log = pino({ level: 'silent' })

const MIGRATIONS = [
  '001_initial.sql',
  '002_jwt_sessions.sql',
  '003_binding_and_policies.sql',
  '004_webhooks.sql',
  '005_invalidation_feed.sql',
  '006_tenants.sql',
  '007_user_devices.sql',
  '008_background_indexes.sql',
  '009_notify_live_deletes_only.sql',
  '010_idle_expiry_from_last_use.sql',
  '011_event_tenant_named.sql',
  '012_sessions_fillfactor.sql',
]

/**
 * A directory of the project's migrations `files` only, as a deployment of an older release has them;
 * `add(file)` brings the next one, as an upgrade does.
 */
async function someMigrations(files: readonly string[]) {
  const dir = await mkdtemp(`${tmpdir()}/migrations-`)
  const add = (file: string) => copyFile(`${migrationsDir}/${file}`, `${dir}/${file}`)
  for (const file of files) await add(file)
  return { dir, add }
}

function connect(schema: string) {
  return postgres(DATABASE_URL, { max: 2, onnotice: () => {}, connection: { search_path: schema } })
}

/**
 * A schema of the test's own; `open()` gives a connection to it. After the
 * test, every connection opened is ended, then the schema is dropped.
 */
function ownSchema(t: TestContext) {
  const schema = uniqueSchema()
  const opened: postgres.Sql[] = []
  t.after(async () => {
    await Promise.all(opened.map((sql) => sql.end()))
    await dropSchema(schema)
  })
  const open = () => {
    const sql = connect(schema)
    opened.push(sql)
    return sql
  }
  return { schema, open }
}

/**
 * A schema of the test's own as the release before `next` left it (every
 * migration before it applied), and `next` ready in `dir`, as an upgrade
 * brings it; `sql` is the connection that migrated.
 */
async function upgrading(t: TestContext, next: string) {
  const { dir, add } = await someMigrations(MIGRATIONS.slice(0, MIGRATIONS.indexOf(next)))
  const { schema, open } = ownSchema(t)
  const sql = open()
  await migrate(sql, schema, log, dir)
  await add(next)
  return { schema, dir, sql, open }
}

/** Two sessions, written as any release since the first writes them. */
async function twoSessions(sql: postgres.Sql) {
  for (const id of ['00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002']) {
    await sql`insert into sessions (id, user_id, token_hash, device, metadata, idle_timeout_seconds,
        absolute_lifetime_seconds, created_at, last_seen_at, idle_expires_at, absolute_expires_at)
      values (${id}, 'alice', ${Buffer.from(id)}, '{}', '{}', 60, 60, now(), now(), now(), now())`
  }
}

/**
 * A database of the test's own, dropped after it: a concurrent index build waits for every older
 * transaction of its database, and the other test files run theirs in the shared one.
 */
async function privateDatabase(t: TestContext) {
  const database = `sa_concurrent_${randomBytes(4).toString('hex')}`
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${database}`)
  const url = new URL(DATABASE_URL)
  url.pathname = `/${database}`
  const opened: postgres.Sql[] = []
  t.after(async () => {
    await Promise.all(opened.map((sql) => sql.end({ timeout: 5 })))
    await admin.unsafe(`drop database if exists ${database} with (force)`)
    await admin.end()
  })
  /** A replica's connections to the database, on `schema`. */
  const replica = (schema: string) => {
    const sql = postgres(url.href, { max: 2, onnotice: () => {}, connection: { search_path: schema } })
    opened.push(sql)
    return sql
  }
  return { admin, database, replica }
}

/** Resolves once some session waits for a lock on `table` of `schema` (the migration, in these tests). */
function waitingForLock(sql: postgres.Sql, schema: string, table: string) {
  return eventually(
    async () => {
      const [row] = await sql`
        select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation
        where not l.granted and c.relname = ${table} and c.relnamespace = ${schema}::regnamespace`
      return (row?.n ?? 0) > 0
    },
    15_000,
    'the migration waits for the lock',
  )
}

test('migrations create the schema, are recorded, and a second run applies nothing', async (t) => {
  const { schema, open } = ownSchema(t)
  const sql = open()
  const first = await migrate(sql, schema, log)
  assert.deepEqual(first, MIGRATIONS)
  const tables =
    await sql`select table_name from information_schema.tables where table_schema = ${schema} order by 1`
  assert.deepEqual(
    tables.map((r) => r.table_name),
    [
      'api_keys',
      'refresh_tokens',
      'schema_migrations',
      'session_events',
      'sessions',
      'signing_keys',
      'tenants',
      'user_devices',
      'webhook_deliveries',
      'webhook_subscriptions',
    ],
  )
  assert.deepEqual(await migrate(sql, schema, log), [])
})

test('replicas migrating at the same time wait for each other: each file is applied once', async (t) => {
  const { schema, open } = ownSchema(t)
  const clients = Array.from({ length: 4 }, open)
  const results = await Promise.all(clients.map((sql) => migrate(sql, schema, log)))
  const applied = results.flat()
  assert.deepEqual(applied.sort(), MIGRATIONS)
  const check = open()
  const rows = await check`select name from schema_migrations`
  assert.deepEqual(rows.map((r) => r.name).sort(), applied.sort())
})

test('a failing migration leaves nothing half-applied', async (t) => {
  const { dir } = await someMigrations(['001_initial.sql'])
  await writeFile(`${dir}/002_broken.sql`, 'create table half_done (id int);\nselect * from no_such_table;')
  const { schema, open } = ownSchema(t)
  const sql = open()
  await assert.rejects(migrate(sql, schema, log, dir), /no_such_table/)
  const [row] =
    await sql`select to_regclass(${`${schema}.half_done`}) as t, to_regclass(${`${schema}.sessions`}) as s`
  assert.equal(row?.t, null)
  assert.equal(row?.s, null)
})

// Bounded: without giving way, the writes below would wait for the blocker forever.
test('a migration blocked by a long transaction gives way: the tables it already locked stay usable, then it applies', {
  timeout: 60_000,
}, async (t) => {
  const { schema, dir, sql, open } = await upgrading(t, '006_tenants.sql')
  const blocker = open()

  // A long transaction (a report, a stuck client) holds session_events, which 006 alters after api_keys.
  const lock = await holdTableLock(blocker, 'session_events')
  const migrating = migrate(sql, schema, log, dir)
  // Until the migration has locked api_keys and waits for session_events.
  await waitingForLock(blocker, schema, 'session_events')

  // Meanwhile the previous version keeps using api_keys: each write completes while the blocker
  // still holds its lock (without giving way, they would all wait for it).
  for (let i = 0; i < 3; i++) {
    await sql`insert into api_keys (id, name, key_hash, scopes, created_at)
      values (${`key_${i}`}, 'old replica', ${Buffer.from([i])}, ${['introspect']}, now())`
  }
  lock.release()
  await lock.held
  assert.deepEqual(await migrating, ['006_tenants.sql'])
  const keys = await sql`select tenant_id from api_keys where name = 'old replica'`
  assert.deepEqual(
    keys.map((k) => k.tenant_id),
    ['default', 'default', 'default'],
  )
})

test('on a deployment with data, the fillfactor file waits for a vacuum of sessions while reads and writes go on, then applies', {
  timeout: 60_000,
}, async (t) => {
  const { schema, dir, sql, open } = await upgrading(t, '012_sessions_fillfactor.sql')
  const vacuum = open()

  // The lock a vacuum of the table holds while it runs.
  const lock = await holdTableLock(vacuum, 'sessions', 'share update exclusive')
  // Any schema counts as big here: the file is applied outside a transaction, with no lock timeout.
  const migrating = migrate(sql, schema, log, dir, 0)
  await waitingForLock(vacuum, schema, 'sessions')
  // Meanwhile sessions are written and read: each completes while the vacuum still holds its lock.
  await twoSessions(sql)
  const [count] = await sql`select count(*)::int as n from sessions`
  assert.equal(count?.n, 2)
  lock.release()
  await lock.held
  assert.deepEqual(await migrating, ['012_sessions_fillfactor.sql'])
  const [table] = await sql`select reloptions from pg_class where oid = 'sessions'::regclass`
  assert.deepEqual(table?.reloptions, ['fillfactor=90'])
})

test('a no-transaction migration on a schema with data builds its indexes concurrently, replacing one a failed build left invalid', {
  timeout: 60_000,
}, async (t) => {
  const { dir, add } = await someMigrations(MIGRATIONS.slice(0, 7))
  const { replica } = await privateDatabase(t)
  const schema = uniqueSchema()
  const sql = replica(schema)
  await migrate(sql, schema, log, dir)
  await twoSessions(sql)
  // A concurrent build that failed (here: a unique index over a duplicate) leaves an invalid index behind.
  await assert.rejects(sql`create unique index concurrently sessions_live_absolute_idx on sessions (user_id)`)
  await add(MIGRATIONS[7] as string)

  // Any schema counts as big here: the file is applied outside a transaction.
  assert.deepEqual(await migrate(sql, schema, log, dir, 0), [MIGRATIONS[7]])
  const indexes = await sql<{ name: string; valid: boolean; definition: string }[]>`
    select c.relname as name, i.indisvalid as valid, pg_get_indexdef(i.indexrelid) as definition
    from pg_index i join pg_class c on c.oid = i.indexrelid
    where c.relnamespace = ${schema}::regnamespace and c.relname in
      ('sessions_live_absolute_idx', 'sessions_live_idle_idx', 'session_events_type_idx', 'session_events_tenant_idx')
    order by 1`
  assert.deepEqual(
    indexes.map((i) => [i.name, i.valid]),
    [
      ['session_events_tenant_idx', true],
      ['session_events_type_idx', true],
      ['sessions_live_absolute_idx', true],
      ['sessions_live_idle_idx', true],
    ],
  )
  assert.match(indexes[2]?.definition ?? '', /\(absolute_expires_at, id\) WHERE/)
  assert.deepEqual(await migrate(sql, schema, log, dir, 0), [])
})

test('a replica that starts while another builds an index concurrently takes its turn: no deadlock, applied once', {
  timeout: 60_000,
}, async (t) => {
  const { dir, add } = await someMigrations(MIGRATIONS.slice(0, 7))
  // Here a snapshot held on purpose keeps the build waiting.
  const { admin, database, replica } = await privateDatabase(t)
  const schema = uniqueSchema()
  const [a, b, holder] = [replica(schema), replica(schema), replica(schema)]
  await migrate(a, schema, log, dir)
  await add(MIGRATIONS[7] as string)

  // A transaction with a snapshot: replica A's concurrent build waits for it to end.
  const snapshot = await holder.reserve()
  await snapshot`begin isolation level repeatable read`
  await snapshot`select 1`
  const first = migrate(a, schema, log, dir, 0)
  first.catch(() => {})
  await eventually(
    async () =>
      (
        await admin`select 1 from pg_stat_activity where datname = ${database}
          and query ilike 'create index concurrently%' and wait_event_type = 'Lock'`
      ).length > 0,
    15_000,
    "replica A's build waits for the snapshot",
  )
  // Replica B starts meanwhile. Waiting for the migration lock inside Postgres, it would hold a
  // snapshot of its own that A's build then waits for, while B waits for A: a deadlock.
  const second = migrate(b, schema, log, dir, 0)
  second.catch(() => {})
  await new Promise((resolve) => setTimeout(resolve, 1000))
  await snapshot`commit`
  snapshot.release()

  const results = await Promise.all([first, second])
  assert.deepEqual(results.flat(), [MIGRATIONS[7]])
  const [recorded] = await a<{ n: number }[]>`
    select count(*)::int as n from schema_migrations where name = ${MIGRATIONS[7] as string}`
  assert.equal(recorded?.n, 1)
})
