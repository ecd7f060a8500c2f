/**
 * `npm run bench:scale` (not in CI): how the service holds up with many
 * sessions. For 10k sessions and then for SCALE (default 1,000,000; the full
 * run is SCALE=10000000, about 13 GB) it loads a schema of its own with that
 * many sessions and twice as many events (live ones, ones past their expiry
 * but not marked yet, long-ended ones, a few users with 1,000 sessions each),
 * and measures Postgres-only introspection (no Redis, L1 off), session
 * creation, listing a heavy user, the write-behind's statements, and purge
 * throughput with introspection during it. It prints a Markdown table of each
 * figure at both sizes and their ratio (also written to .bench/scale.md), and
 * writes the plans of the background statements, with and without the
 * indexes of the no-transaction migrations, to .bench/scale-plans.txt.
 * Each schema is dropped however the run ends.
 *
 * BENCH_SECONDS changes the measured time of each load (default 10).
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import postgres from 'postgres'
import { systemClock } from '../src/clock.ts'
import type { Sql } from '../src/db/connect.ts'
import { migrate, migrationsDir } from '../src/db/migrate.ts'
import { DELETE_BATCH, EXPIRE_BATCH, purgeSessions } from '../src/sessions/purge.ts'
import { createSessionRepository } from '../src/sessions/repository.ts'
import { CHUNK } from '../src/sessions/write-behind.ts'
import { EVERY_TENANT, onlyTenant } from '../src/tenants/tenancy.ts'
import { killServers, startServer } from './child.ts'
import { buildDist } from './compiled.ts'
import { measure } from './load.ts'
import { measurePaced } from './paced.ts'
import { ADMIN_KEY, CLIENT, CREATE_PATH, INTROSPECT_PATH, openSessionBody } from './protocol.ts'

const DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const SCALE = Number(process.env.SCALE ?? 1_000_000)
const BASE = 10_000
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10)
const HEAVY_USERS = 5
const HEAVY_SESSIONS = 1000
/** Sessions written back in the write-behind rows (a busy interval). */
const TOUCHED = 100_000
/** Rows per INSERT … SELECT while loading. */
const LOAD_CHUNK = 1_000_000
const DAY = 86_400
const log = pino({ level: 'warn' })
const SELF = fileURLToPath(import.meta.url)
const OUT = new URL('../.bench/', import.meta.url)

const runId = randomBytes(4).toString('hex')
const schemas = new Set<string>()

/** The token of loaded session i, which the load stores the SHA-256 of. */
const tokenOf = (i: number) => `sat_${String(i).padStart(43, 'A')}`
/** Where loaded session i was opened from (and is introspected from: no drift). */
const ipOf = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`

const connect = (schema: string, options: postgres.Options<Record<string, never>> = {}) =>
  postgres(DATABASE_URL, {
    max: 4,
    onnotice: () => {},
    ...options,
    connection: { search_path: schema, ...options.connection },
  })

/**
 * Session i (1…n): the first HEAVY_USERS × HEAVY_SESSIONS belong to the heavy
 * users; of the others, by i % 20: 0–13 live, 14 past its idle expiry and 15
 * past its absolute expiry (neither marked yet), 16–18 ended long before the
 * retention, 19 ended recently. Rows of every kind share every page.
 */
export async function loadSessions(sql: Sql, n: number) {
  const users = Math.max(1, Math.floor(n / 3))
  for (let lo = 1; lo <= n; lo += LOAD_CHUNK) {
    const hi = Math.min(n, lo + LOAD_CHUNK - 1)
    await sql`
      insert into sessions (id, tenant_id, user_id, token_hash, status, ip, bound_ip, user_agent, device, metadata,
        idle_timeout_seconds, absolute_lifetime_seconds, created_at, last_seen_at, idle_expires_at, absolute_expires_at,
        ended_at, end_reason)
      select md5('s' || i)::uuid, 'default', k.user_id, sha256(convert_to('sat_' || lpad(i::text, 43, 'A'), 'UTF8')),
        case when k.kind between 16 and 19 then (case when i % 2 = 0 then 'revoked' else 'expired' end) else 'active' end,
        k.ip, k.ip, ${CLIENT.user_agent}::text,
        jsonb_build_object('browser', 'Chrome', 'browser_version', '120.0.' || (i % 5000), 'os', 'Windows',
          'os_version', '10', 'type', 'desktop'),
        jsonb_build_object('tenant', 'acme', 'plan', case when i % 3 = 0 then 'pro' else 'free' end, 'login', 'password'),
        ${DAY}::int, ${30 * DAY}::int, t.created_at, t.last_seen_at,
        least(t.last_seen_at + interval '1 day', t.created_at + interval '30 days'), t.created_at + interval '30 days',
        t.ended_at, case when t.ended_at is null then null else 'api' end
      from generate_series(${lo}::int, ${hi}::int) as i
      cross join lateral (select
        case when i <= ${HEAVY_USERS * HEAVY_SESSIONS}::int then 0 else i % 20 end as kind,
        case when i <= ${HEAVY_USERS * HEAVY_SESSIONS}::int then 'heavy-' || (i % ${HEAVY_USERS}::int)
          else 'user-' || ((i::bigint * 7919) % ${users}::bigint) end as user_id,
        ('10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255))::inet as ip) k
      cross join lateral (select c.created_at,
          case when k.kind = 14 then c.created_at + interval '1 hour'
            when k.kind = 15 then now() - interval '1 hour'
            when k.kind between 16 and 19 then c.created_at + interval '1 hour'
            else now() - make_interval(secs => (i * 13) % 3600) end as last_seen_at,
          case when k.kind between 16 and 18 then c.created_at + interval '2 hours'
            when k.kind = 19 then now() - make_interval(days => i % 10, secs => i % 86400) end as ended_at
        from (select case
          when k.kind = 14 then now() - make_interval(days => 3 + i % 20, secs => i % 86400)
          when k.kind = 15 then now() - make_interval(days => 31 + i % 5, secs => i % 86400)
          when k.kind between 16 and 18 then now() - make_interval(days => 60 + i % 300, secs => i % 86400)
          when k.kind = 19 then now() - make_interval(days => 20)
          else now() - make_interval(secs => (i * 37) % (10 * ${DAY}::int)) end as created_at) c) t`
    process.stderr.write(`  sessions ${hi.toLocaleString('en')}/${n.toLocaleString('en')}\n`)
  }
}

/**
 * 2n events over the last 120 days, in time order (ids follow time, as they do
 * in service): a quarter older than the 90-day retention. One in 10,000 is a
 * `refresh_token.reused` (a rare type), the rest mostly created and refreshed.
 */
export async function loadEvents(sql: Sql, n: number) {
  const total = 2 * n
  const users = Math.max(1, Math.floor(n / 3))
  for (let lo = 1; lo <= total; lo += LOAD_CHUNK) {
    const hi = Math.min(total, lo + LOAD_CHUNK - 1)
    await sql`
      insert into session_events (session_id, tenant_id, user_id, type, data, created_at)
      select md5('s' || s)::uuid, 'default',
        case when s <= ${HEAVY_USERS * HEAVY_SESSIONS}::int then 'heavy-' || (s % ${HEAVY_USERS}::int)
          else 'user-' || ((s::bigint * 7919) % ${users}::bigint) end,
        case when j % 10000 = 0 then 'refresh_token.reused' when j % 2 = 1 then 'session.created'
          when j % 10 = 2 then 'session.revoked' when j % 10 = 4 then 'session.expired' else 'session.refreshed' end,
        jsonb_build_object('ip', '10.0.' || (j % 250) || '.' || (j % 200), 'user_agent', ${CLIENT.user_agent}::text,
          'device', jsonb_build_object('browser', 'Chrome', 'browser_version', '120.0.' || (j % 5000), 'os', 'Windows',
            'os_version', '10', 'type', 'desktop'), 'token_type', 'opaque'),
        now() - make_interval(secs => 120.0 * ${DAY}::float8 * (1 - j::float8 / ${total}::float8))
      from generate_series(${lo}::int, ${hi}::int) as j
      cross join lateral (select 1 + (j::bigint * 104729) % ${n}::bigint as s) x`
    process.stderr.write(`  events ${hi.toLocaleString('en')}/${total.toLocaleString('en')}\n`)
  }
}

/** A copy of migrations/ without the no-transaction files (index builds), to apply them after the load. */
export async function migrationsWithoutIndexes(): Promise<string> {
  const dir = await mkdtemp(`${tmpdir()}/scale-migrations-`)
  for (const file of await readdir(migrationsDir)) {
    if (!file.endsWith('.sql')) continue
    const text = await readFile(`${migrationsDir}/${file}`, 'utf8')
    if (!text.startsWith('-- no-transaction')) await copyFile(`${migrationsDir}/${file}`, `${dir}/${file}`)
  }
  return dir
}

/**
 * The plans of the statements background work and the admin lists run, each in
 * a transaction that is rolled back (nothing changes), as auto_explain reports
 * them (EXPLAIN ANALYZE of the very statements the repository sends).
 */
async function plans(schema: string, n: number): Promise<Array<{ what: string; plan: string }>> {
  const notices: string[] = []
  const sql = connect(schema, {
    max: 1,
    onnotice: (notice) => notices.push(String(notice.message)),
  })
  const out: Array<{ what: string; plan: string }> = []
  try {
    await sql`load 'auto_explain'`
    await sql`set auto_explain.log_min_duration = 0`
    await sql`set auto_explain.log_analyze = on`
    await sql`set auto_explain.log_buffers = on`
    await sql`set auto_explain.log_triggers = on`
    await sql`set client_min_messages = log`
    const live = await sql<{ id: string }[]>`
      select id from sessions where status = 'active' and idle_expires_at > now() + interval '1 hour' limit ${CHUNK}`
    const nowMs = Date.now()
    const now = new Date(nowMs)
    const cases: Array<[string, (repo: ReturnType<typeof createSessionRepository>) => Promise<unknown>]> = [
      ['expire step, one batch', (r) => r.expireOverdue(now, new Date(nowMs - 30_000), EXPIRE_BATCH)],
      ['expire step, nothing due', (r) => r.expireOverdue(new Date(0), new Date(0), EXPIRE_BATCH)],
      [
        'delete ended sessions, one batch',
        (r) => r.deleteEnded(new Date(nowMs - 30 * DAY * 1000), DELETE_BATCH),
      ],
      [
        'delete ended sessions, nothing left (the last batch)',
        (r) => r.deleteEnded(new Date(0), DELETE_BATCH),
      ],
      [
        'delete old events, one batch',
        (r) => r.deleteEvents(new Date(nowMs - 90 * DAY * 1000), DELETE_BATCH),
      ],
      ['delete old events, nothing left (the last batch)', (r) => r.deleteEvents(new Date(0), DELETE_BATCH)],
      [
        `write-behind, one chunk of ${CHUNK}`,
        (r) => r.touchMany(live.map((s) => ({ id: s.id, at: now, ip: null }))),
      ],
      [
        'events ?type=refresh_token.reused (rare)',
        (r) => r.listEvents(onlyTenant('default'), { ...noFilter, type: 'refresh_token.reused' }),
      ],
      [
        'events ?type=refresh_token.reused, platform key',
        (r) => r.listEvents(EVERY_TENANT, { ...noFilter, type: 'refresh_token.reused' }),
      ],
      [
        'events ?type=session.revoked',
        (r) => r.listEvents(onlyTenant('default'), { ...noFilter, type: 'session.revoked' }),
      ],
      ['events, one tenant, no filter', (r) => r.listEvents(onlyTenant('default'), noFilter)],
      [
        'events ?until=100 days ago',
        (r) =>
          r.listEvents(onlyTenant('default'), { ...noFilter, until: new Date(nowMs - 100 * DAY * 1000) }),
      ],
      [
        'events ?user_id=heavy-0',
        (r) => r.listEvents(onlyTenant('default'), { ...noFilter, userId: 'heavy-0' }),
      ],
      [
        'sessions of a heavy user, first page',
        (r) => r.listLiveForUser(onlyTenant('default'), 'heavy-0', now, { limit: 100, after: null }),
      ],
      ['sessions of a heavy user, count', (r) => r.countLiveForUser(onlyTenant('default'), 'heavy-0', now)],
    ]
    for (const [what, run] of cases) {
      notices.length = 0
      await sql
        .begin(async (tx) => {
          await run(createSessionRepository(tx as unknown as Sql))
          throw new RolledBack()
        })
        .catch((err) => {
          if (!(err instanceof RolledBack)) throw err
        })
      const plan = notices.filter((m) => m.includes('plan:')).join('\n')
      out.push({ what: `${what} (${n.toLocaleString('en')} sessions)`, plan })
    }
  } finally {
    await sql.end()
  }
  return out
}

class RolledBack extends Error {}
const noFilter = { userId: null, type: null, since: null, until: null, before: null, limit: 50 }

/** The scans of the two big tables a plan makes, e.g. "Index Scan using session_events_type_idx". */
function scans(plan: string): string[] {
  const found = plan.match(
    /(Parallel )?(Seq Scan|Index Only Scan|Index Scan|Index Scan Backward|Bitmap Index Scan)( Backward)?( using \w+)? on \w+/g,
  )
  return [...new Set((found ?? []).filter((s) => /sessions|session_events|\w+_idx|pkey/.test(s)))]
}

interface Figures {
  n: number
  loadSeconds: number
  indexSeconds: number
  introspect: { rps: number; p50: number; p99: number }
  create: { rps: number; p50: number; p99: number }
  listHeavy: { rps: number; p50: number; p99: number; seen: number }
  touchChunk: { p50: number; max: number; chunks: number; samePage: number }
  touchOne: { ms: number; rows: number }
  purge: {
    rows: number
    seconds: number
    rowsPerSecond: number
    /** The expire step alone, and the delete steps after it. */
    expireRowsPerSecond: number
    deleteRowsPerSecond: number
    counts: Record<string, number>
  }
  duringPurge: { p99Median: number; p99Worst: number; windows: number }
  /** At half the top introspection rate, paced (open loop): p99 without purge and during it. */
  paced: { rate: number; p99: number; duringMedian: number; duringWorst: number; windows: number }
  plans: Array<{ what: string; plan: string }>
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN
}

async function measureAt(n: number): Promise<Figures> {
  const schema = `bench_scale_${runId}_${n}`
  schemas.add(schema)
  console.error(`… ${n.toLocaleString('en')} sessions in schema ${schema}`)
  const sql = connect(schema)
  try {
    const dir = await migrationsWithoutIndexes()
    await migrate(sql, schema, log, dir)
    await rm(dir, { recursive: true })
    let started = Date.now()
    // Triggers off while loading (the rows are what the triggers would have made).
    const loader = connect(schema, { max: 1, connection: { session_replication_role: 'replica' } })
    try {
      await loadSessions(loader, n)
      await loadEvents(loader, n)
    } finally {
      await loader.end()
    }
    await sql`vacuum (analyze) sessions`
    await sql`vacuum (analyze) session_events`
    const loadSeconds = (Date.now() - started) / 1000
    const before = await plans(schema, n)
    started = Date.now()
    // The indexes this deployment lacks, built as an upgrade builds them (concurrently, at this size).
    await migrate(sql, schema, log)
    const indexSeconds = (Date.now() - started) / 1000
    await sql`analyze sessions`
    await sql`analyze session_events`
    const after = await plans(schema, n)
    const planList = [
      ...before.map((p) => ({ ...p, what: `WITHOUT the new indexes: ${p.what}` })),
      ...after.map((p) => ({ ...p, what: `WITH the new indexes: ${p.what}` })),
    ]

    // The write-behind of a busy interval: chunks of CHUNK in id order, then the same as one statement.
    const touched = await sql<{ id: string }[]>`
      select id from sessions where status = 'active' and idle_expires_at > now() + interval '1 hour'
      order by id limit ${Math.min(TOUCHED, Math.floor(n / 2))}`
    const repo = createSessionRepository(sql)
    // Where each row is: a row whose new version stays on its page was (nearly always) a HOT update.
    const pages = async () =>
      new Map(
        (
          await sql<{ id: string; page: string }[]>`
            select id::text as id, split_part(trim(both '()' from ctid::text), ',', 1) as page
            from sessions where id = any(${touched.map((s) => s.id)}::uuid[])`
        ).map((r) => [r.id, r.page]),
      )
    const pagesBefore = await pages()
    const chunkMs: number[] = []
    const at = new Date()
    for (let i = 0; i < touched.length; i += CHUNK) {
      const t0 = performance.now()
      await repo.touchMany(touched.slice(i, i + CHUNK).map((s) => ({ id: s.id, at, ip: null })))
      chunkMs.push(performance.now() - t0)
    }
    const pagesAfter = await pages()
    const samePage =
      [...pagesAfter].filter(([id, page]) => pagesBefore.get(id) === page).length / pagesAfter.size
    const t1 = performance.now()
    const later = new Date(at.getTime() + 1000)
    const rows = await repo.touchMany(touched.map((s) => ({ id: s.id, at: later, ip: null })))
    const touchOne = { ms: performance.now() - t1, rows }

    const server = await startServer({
      mode: 'postgres',
      databaseUrl: DATABASE_URL,
      redisUrl: '',
      schema,
      redisKeyPrefix: `bench_scale_${runId}:`,
    })
    try {
      const liveIds = liveSample(n, 5000)
      const introspectLoad = {
        port: server.port,
        path: INTROSPECT_PATH,
        bodies: liveIds.map((i) =>
          JSON.stringify({ token: tokenOf(i), ip: ipOf(i), user_agent: CLIENT.user_agent }),
        ),
        expect: (body: string) => body.startsWith('{"active":true'),
      }
      console.error('  introspection')
      await measure({ ...introspectLoad, seconds: 3 })
      const introspect = await measure({ ...introspectLoad, seconds: SECONDS })
      // A service is not run flat out: the same, at half that rate, evenly paced.
      const pacedLoad = { ...introspectLoad, rate: Math.round(introspect.rps / 2) }
      const pacedP99 = (await measurePaced({ ...pacedLoad, seconds: SECONDS })).p99
      console.error('  creation')
      const createLoad = {
        port: server.port,
        path: CREATE_PATH,
        bodies: Array.from({ length: 5000 }, (_, i) => openSessionBody(`new-user-${i}`)),
        expect: (body: string) => body.includes('"token"'),
      }
      await measure({ ...createLoad, seconds: 3 })
      const create = await measure({ ...createLoad, seconds: SECONDS })
      console.error('  listing a heavy user')
      const seen = await walkHeavyUser(server.port)
      const listLoad = {
        port: server.port,
        path: '/v1/users/heavy-0/sessions?limit=100',
        bodies: [],
        get: { authorization: `Bearer ${ADMIN_KEY}` },
        expect: (body: string) => body.startsWith('{"sessions":['),
      }
      await measure({ ...listLoad, seconds: 3 })
      const listHeavy = await measure({ ...listLoad, seconds: SECONDS })

      console.error('  purge, with introspection during it')
      const purging = purgeInChild(schema)
      let done = false
      const result = purging.done.finally(() => {
        done = true
      })
      await purging.started
      // 2 s windows, flat out and paced in turn, for as long as the purge runs.
      const windows: number[] = []
      const pacedWindows: number[] = []
      while (!done || windows.length === 0 || pacedWindows.length === 0) {
        if (windows.length <= pacedWindows.length)
          windows.push((await measure({ ...introspectLoad, seconds: 2 })).p99)
        else pacedWindows.push((await measurePaced({ ...pacedLoad, seconds: 2 })).p99)
      }
      const purge = await result
      return {
        n,
        loadSeconds,
        indexSeconds,
        introspect: pick(introspect),
        create: pick(create),
        listHeavy: { ...pick(listHeavy), seen },
        touchChunk: { p50: median(chunkMs), max: Math.max(...chunkMs), chunks: chunkMs.length, samePage },
        touchOne,
        purge,
        duringPurge: { p99Median: median(windows), p99Worst: Math.max(...windows), windows: windows.length },
        paced: {
          rate: pacedLoad.rate,
          p99: pacedP99,
          duringMedian: median(pacedWindows),
          duringWorst: Math.max(...pacedWindows),
          windows: pacedWindows.length,
        },
        plans: planList,
      }
    } finally {
      await server.stop()
    }
  } finally {
    await sql.end()
    await dropSchema(schema)
  }
}

const pick = (m: { rps: number; p50: number; p99: number }) => ({ rps: m.rps, p50: m.p50, p99: m.p99 })

/** Live sessions to introspect: not a heavy user's, of kinds 0–13 (see loadSessions). */
function liveSample(n: number, count: number): number[] {
  const out: number[] = []
  for (
    let i = HEAVY_USERS * HEAVY_SESSIONS + 1;
    i <= n && out.length < count;
    i += 1 + Math.floor(n / count / 2)
  ) {
    if (i % 20 <= 13) out.push(i)
  }
  return out
}

/** Every page of heavy-0's sessions, following next_cursor: how many sessions a client can see. */
async function walkHeavyUser(port: number): Promise<number> {
  let seen = 0
  let cursor: string | null = null
  do {
    const url: string = `http://127.0.0.1:${port}/v1/users/heavy-0/sessions?limit=500${cursor ? `&cursor=${cursor}` : ''}`
    const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    const page = (await res.json()) as { sessions: unknown[]; next_cursor: string | null }
    seen += page.sessions.length
    cursor = page.next_cursor
  } while (cursor)
  return seen
}

/**
 * Runs purge in a process of its own (as `session-authority purge` would), timing it there.
 * `started` resolves when the purge itself begins, after the child's own start-up (which
 * would otherwise count as the purge's load on the machine).
 */
function purgeInChild(schema: string): { started: Promise<void>; done: Promise<Figures['purge']> } {
  const child = spawn(process.execPath, ['--import', 'tsx', SELF, 'purge-child', schema], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  let began: () => void = () => {}
  const started = new Promise<void>((resolve) => {
    began = resolve
  })
  child.stdout.on('data', (chunk) => {
    out += chunk
    if (out.includes(PURGE_STARTED)) began()
  })
  const done = new Promise<Figures['purge']>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => {
      began()
      if (code !== 0) reject(new Error(`purge child exited with code ${code}`))
      else resolve(JSON.parse(out.trim().split('\n').pop() as string))
    })
  })
  return { started, done }
}

const PURGE_STARTED = 'purge started'

async function purgeChild(schema: string) {
  const sql = connect(schema, { max: 2 })
  try {
    const repo = createSessionRepository(sql)
    const config = { writeBehindIntervalMs: 30_000, purgeRetentionDays: 30, eventRetentionDays: 90 }
    console.log(PURGE_STARTED)
    const started = performance.now()
    // The expire step hands every batch to invalidate, its last one included: the step ends at the last call.
    let expired = started
    const invalidate = async () => {
      expired = performance.now()
    }
    const counts = await purgeSessions(repo, { clock: systemClock, config, invalidate }, true)
    const ended = performance.now()
    const rows = counts ? counts.expired + counts.sessions_deleted + counts.events_deleted : 0
    const seconds = (ended - started) / 1000
    const figures: Figures['purge'] = {
      rows,
      seconds,
      rowsPerSecond: rows / seconds,
      expireRowsPerSecond: (counts?.expired ?? 0) / ((expired - started) / 1000),
      deleteRowsPerSecond:
        ((counts?.sessions_deleted ?? 0) + (counts?.events_deleted ?? 0)) / ((ended - expired) / 1000),
      counts: { ...counts },
    }
    console.log(JSON.stringify(figures))
  } finally {
    await sql.end()
  }
}

async function dropSchema(schema: string) {
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} })
  try {
    await sql`drop schema if exists ${sql(schema)} cascade`
    schemas.delete(schema)
  } catch (err) {
    console.error(`could not drop schema ${schema}: ${(err as Error).message}`)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

const f = (x: number, digits = 0) =>
  Number.isFinite(x)
    ? x.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '–'

function table(base: Figures, big: Figures): string {
  const n = big.n.toLocaleString('en')
  const row = (what: string, a: number, b: number, digits = 0, ratio = true) =>
    `| ${what} | ${f(a, digits)} | ${f(b, digits)} | ${ratio ? `${f(b / a, 2)}×` : ''} |`
  /** How much a purge raised a p99, at each size. */
  const slowdown = (during: (x: Figures) => number, without: (x: Figures) => number) =>
    row(
      '… median window p99 / p99 without purge',
      during(base) / without(base),
      during(big) / without(big),
      2,
      false,
    )
  return [
    `| figure | ${base.n.toLocaleString('en')} sessions | ${n} sessions | ratio |`,
    '|---|---:|---:|---:|',
    row('introspection, Postgres only (req/s)', base.introspect.rps, big.introspect.rps),
    row('… p50 (ms)', base.introspect.p50, big.introspect.p50, 1),
    row('… p99 (ms)', base.introspect.p99, big.introspect.p99, 1),
    row('session creation (req/s)', base.create.rps, big.create.rps),
    row('session creation p99 (ms)', base.create.p99, big.create.p99, 1),
    row('heavy user (1,000 sessions), first page of 100 (req/s)', base.listHeavy.rps, big.listHeavy.rps),
    row('… p99 (ms)', base.listHeavy.p99, big.listHeavy.p99, 1),
    row('… sessions seen following next_cursor', base.listHeavy.seen, big.listHeavy.seen, 0, false),
    row(`write-behind chunk of ${f(CHUNK)} rows, p50 (ms)`, base.touchChunk.p50, big.touchChunk.p50, 1),
    row('… slowest chunk (ms)', base.touchChunk.max, big.touchChunk.max, 1),
    row(
      '… rows kept on their page (HOT, %)',
      100 * base.touchChunk.samePage,
      100 * big.touchChunk.samePage,
      0,
      false,
    ),
    row(
      `… the same ${f(big.touchOne.rows)} rows as one statement (ms; the old flush)`,
      base.touchOne.ms,
      big.touchOne.ms,
      0,
    ),
    row('purge: rows purged', base.purge.rows, big.purge.rows, 0, false),
    row('purge throughput (rows/s)', base.purge.rowsPerSecond, big.purge.rowsPerSecond),
    row('… the expire step alone (rows/s)', base.purge.expireRowsPerSecond, big.purge.expireRowsPerSecond),
    row('… the delete steps alone (rows/s)', base.purge.deleteRowsPerSecond, big.purge.deleteRowsPerSecond),
    row(
      'introspection flat out, p99 during purge, median of 2 s windows (ms)',
      base.duringPurge.p99Median,
      big.duringPurge.p99Median,
      1,
    ),
    row('… worst window (ms)', base.duringPurge.p99Worst, big.duringPurge.p99Worst, 1),
    slowdown(
      (x) => x.duringPurge.p99Median,
      (x) => x.introspect.p99,
    ),
    row('introspection paced at half its top rate (req/s)', base.paced.rate, big.paced.rate),
    row('… p99 without purge (ms)', base.paced.p99, big.paced.p99, 1),
    row('… p99 during purge, median of 2 s windows (ms)', base.paced.duringMedian, big.paced.duringMedian, 1),
    row('… worst window (ms)', base.paced.duringWorst, big.paced.duringWorst, 1),
    slowdown(
      (x) => x.paced.duringMedian,
      (x) => x.paced.p99,
    ),
    row('load (s)', base.loadSeconds, big.loadSeconds, 0, false),
    row('building the new indexes concurrently (s)', base.indexSeconds, big.indexSeconds, 1, false),
  ].join('\n')
}

async function main() {
  buildDist()
  const base = await measureAt(BASE)
  const big = await measureAt(SCALE)
  const md = table(base, big)
  const planText = [...base.plans, ...big.plans]
    .map((p) => `=== ${p.what}\n    scans: ${scans(p.plan).join('; ') || '(none)'}\n${p.plan}\n`)
    .join('\n')
  await mkdir(OUT, { recursive: true })
  await writeFile(new URL('scale.md', OUT), `${md}\n`)
  await writeFile(new URL('scale-plans.txt', OUT), planText)
  console.log(md)
  console.log('\nScans of the two big tables, by statement (plans in .bench/scale-plans.txt):')
  for (const p of big.plans) console.log(`- ${p.what}: ${scans(p.plan).join('; ') || '(none)'}`)
}

async function cleanUp() {
  killServers()
  for (const schema of [...schemas]) await dropSchema(schema)
}

if (process.argv[1] !== SELF) {
  // Imported (to load a schema by hand): nothing runs.
} else if (process.argv[2] === 'purge-child') {
  await purgeChild(process.argv[3] as string)
} else {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`${signal}: dropping the schema`)
      void cleanUp().finally(() => process.exit(130))
    })
  }
  try {
    await main()
  } catch (err) {
    console.error(err)
    process.exitCode = 1
  } finally {
    await cleanUp()
  }
}
