import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import { Redis } from 'ioredis'
import type { Config } from '../src/config.ts'
import {
  appBehindPostgresProxy,
  auth,
  buildTestApp,
  eventually,
  introspect,
  openSession,
  REDIS_URL,
  redisSettings,
  revokeSession,
} from './helper.ts'

/** A counter's value from /metrics, summed over the series whose labels include `labels`. */
async function metric(app: Awaited<ReturnType<typeof buildTestApp>>['app'], name: string, labels = '') {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line.startsWith('#')) continue
    const [series, value] = line.split(' ')
    if (series && (series === name || series.startsWith(`${name}{`)) && series.includes(labels))
      sum += Number(value)
  }
  return sum
}

test('a revocation through one replica is seen by another at once (shared Postgres and Redis)', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 60_000 }
  const a = await buildTestApp(t, settings)
  const b = await buildTestApp(t, { ...settings, dbSchema: a.config.dbSchema })
  const delays: number[] = []
  for (let i = 0; i < 5; i++) {
    const { token, session } = await openSession(a.app)
    // Both replicas have the session in their L1 (whose TTL here is a minute).
    assert.equal((await introspect(a.app, token)).active, true)
    assert.equal((await introspect(b.app, token)).active, true)
    assert.equal((await introspect(b.app, token)).active, true)

    const res = await revokeSession(a.app, session.id)
    assert.equal(res.statusCode, 200)
    const revokedAt = performance.now()
    assert.equal((await introspect(a.app, token)).active, false, 'the revoking replica')
    await eventually(
      async () => !(await introspect(b.app, token)).active,
      3000,
      'replica B sees the revocation',
    )
    delays.push(performance.now() - revokedAt)
  }
  t.diagnostic(`propagation to the other replica (ms): ${delays.map((d) => d.toFixed(2)).join(', ')}`)
  // LISTEN/NOTIFY takes milliseconds; the bound is loose for a loaded machine, and far below the L1 TTL (60 s).
  assert.ok(Math.max(...delays) < 5000, `propagation took ${Math.max(...delays)} ms`)
  const received = await metric(b.app, 'session_cache_invalidations_received_total')
  assert.ok(received >= 5, `B received ${received} invalidations; its log: ${b.logs.text()}`)
  assert.ok((await metric(a.app, 'session_cache_invalidations_sent_total')) >= 5)
})

test('revoking every session of a user invalidates each one on the other replica', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 60_000 }
  const a = await buildTestApp(t, settings)
  const b = await buildTestApp(t, { ...settings, dbSchema: a.config.dbSchema })
  const tokens = [(await openSession(a.app)).token, (await openSession(a.app)).token]
  for (const token of tokens) assert.equal((await introspect(b.app, token)).active, true)
  await a.app.inject({ method: 'DELETE', url: '/v1/users/alice/sessions', headers: auth() })
  for (const token of tokens) {
    await eventually(async () => !(await introspect(b.app, token)).active, 3000, 'B sees the revocation')
  }
})

test('L1_TTL_MS=0 is a bound of 0: no cache answers, not even Redis; every check reads Postgres', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 0 }
  const a = await buildTestApp(t, settings)
  const b = await buildTestApp(t, { ...settings, dbSchema: a.config.dbSchema })
  const { token, session } = await openSession(a.app)
  for (let i = 0; i < 5; i++) assert.equal((await introspect(b.app, token)).active, true)
  assert.equal(await metric(b.app, 'session_cache_hits_total', 'kind="positive"'), 0)
  const ready = (await b.app.inject({ method: 'GET', url: '/readyz' })).json()
  assert.equal(ready.invalidation_feed, 'off')
  await revokeSession(a.app, session.id)
  assert.equal((await introspect(b.app, token)).active, false)
  assert.equal((await introspect(a.app, token)).active, false)
})

test('another replica answers from Redis what one replica read, while its feed is live', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 60_000 }
  const a = await buildTestApp(t, settings)
  const b = await buildTestApp(t, { ...settings, dbSchema: a.config.dbSchema })
  for (const app of [a.app, b.app]) {
    await eventually(
      async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().invalidation_feed === 'live',
      10_000,
      'feed live',
    )
  }
  const { token } = await openSession(a.app)
  assert.equal((await introspect(a.app, token)).active, true)
  // A's fill is written behind its answer.
  const redis = new Redis(REDIS_URL)
  t.after(() => redis.disconnect())
  const key = `${settings.redisKeyPrefix}tok2:${createHash('sha256').update(token).digest('hex')}`
  await eventually(async () => (await redis.exists(key)) === 1, 5000, 'the session is in Redis')
  assert.equal((await introspect(b.app, token)).active, true)
  assert.equal(await metric(b.app, 'session_cache_hits_total', 'level="l2",kind="positive"'), 1)
  assert.equal(await metric(b.app, 'session_cache_misses_total', 'level="l2"'), 0)
})

test('unknown tokens reach Postgres once per negative TTL, not once per request', async (t) => {
  const { app } = await buildTestApp(t, { ...redisSettings(), negativeTtlMs: 300 })
  const unknown = `sat_${'Q'.repeat(43)}`
  const started = performance.now()
  for (let i = 0; i < 50; i++) assert.equal((await introspect(app, unknown)).active, false)
  // At most one Postgres read (a miss at both levels) per 300 ms window the loop spanned (one, unless
  // the machine is slow); every other answer was a negative hit.
  const windows = Math.floor((performance.now() - started) / 300) + 1
  const misses = await metric(app, 'session_cache_misses_total', 'level="l2"')
  assert.ok(misses >= 1 && misses <= windows, `${misses} reads in ${windows} windows`)
  assert.equal(await metric(app, 'session_cache_hits_total', 'kind="negative"'), 50 - misses)
  await new Promise((r) => setTimeout(r, 350))
  assert.equal((await introspect(app, unknown)).active, false)
  assert.equal(await metric(app, 'session_cache_misses_total', 'level="l2"'), misses + 1)
})

test('a cached session still expires on time: the cache never outlives the expiry checks', async (t) => {
  const { app, clock } = await buildTestApp(t, {
    ...redisSettings(),
    l1TtlMs: 60_000,
    writeBehindIntervalMs: 60_000,
  })
  const { token } = await openSession(app, { idle_timeout: 60, absolute_lifetime: 600 })
  for (let i = 0; i < 9; i++) {
    clock.advance(50_000)
    assert.equal((await introspect(app, token)).active, true, `use ${i}`)
  }
  // 450 s in; the absolute lifetime ends at 600 s whatever the cache holds.
  clock.advance(151_000)
  assert.equal((await introspect(app, token)).active, false)
})

test('write-behind: many introspections become one UPDATE statement per interval', async (t) => {
  const { app, clock } = await buildTestApp(t, { writeBehindIntervalMs: 250 })
  const { sql } = app.db
  await sql`create table update_statements (at timestamptz default clock_timestamp())`
  await sql`create function count_update() returns trigger language plpgsql as $$
    begin insert into update_statements default values; return null; end $$`
  await sql`create trigger count_update after update on sessions for each statement execute function count_update()`
  const sessions = [await openSession(app), await openSession(app), await openSession(app)]

  const started = performance.now()
  let last = 0
  for (let i = 0; i < 300; i++) {
    clock.advance(10)
    last = clock.now()
    for (const { token } of sessions) assert.equal((await introspect(app, token)).active, true)
    if (i % 50 === 0) await new Promise((r) => setTimeout(r, 20))
  }
  await new Promise((r) => setTimeout(r, 300))
  const elapsed = performance.now() - started
  const [{ count }] = (await sql`select count(*)::int as count from update_statements`) as unknown as [
    { count: number },
  ]
  t.diagnostic(`900 introspections over ${elapsed.toFixed(0)} ms → ${count} UPDATE statements`)
  assert.ok(count >= 1)
  assert.ok(count <= Math.ceil(elapsed / 250) + 1, `${count} statements in ${elapsed} ms`)
  const rows = await sql`select last_seen_at from sessions`
  for (const row of rows) assert.equal(row.last_seen_at.getTime(), last)
})

test('write-behind: closing the app writes what is pending', async (t) => {
  const { app, clock, config } = await buildTestApp(t, { writeBehindIntervalMs: 60_000 })
  const { token, session } = await openSession(app)
  clock.advance(5000)
  await introspect(app, token, { ip: '203.0.113.23' })
  const { adminSql } = await import('./helper.ts')
  const sql = adminSql()
  t.after(() => sql.end())
  const read = () =>
    sql`select last_seen_at, host(ip) as ip from ${sql(config.dbSchema)}.sessions where id = ${session.id}`
  const [before] = await read()
  assert.equal(before?.last_seen_at.getTime(), clock.now() - 5000)
  await app.close()
  const [after] = await read()
  assert.equal(after?.last_seen_at.getTime(), clock.now())
  assert.equal(after?.ip, '203.0.113.23')
})

test('/metrics exposes latency, cache, invalidation, write-behind and store health series', async (t) => {
  const { app } = await buildTestApp(t, redisSettings())
  const { token } = await openSession(app)
  await introspect(app, token)
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /text\/plain/)
  for (const series of [
    'http_request_duration_seconds_bucket{le="0.001",method="POST",route="/v1/sessions/introspect",status="200"}',
    'session_cache_hits_total',
    'session_cache_misses_total{level="l1"}',
    'session_cache_invalidations_sent_total',
    'session_cache_invalidations_received_total',
    'session_cache_l1_clears_total',
    'invalidation_feed_lag_seconds',
    'write_behind_flush_seconds_bucket',
    'redis_up 1',
    'postgres_up 1',
  ]) {
    assert.ok(res.body.includes(series), series)
  }
  // Values a busy machine may move (the feed reconnects when starved; the write-behind may flush):
  // the series are there with a value, the first gap (at start) counted.
  assert.match(res.body, /^invalidation_feed_live [01]$/m)
  assert.match(res.body, /^invalidation_feed_gaps_total [1-9]\d*$/m)
  assert.match(res.body, /^write_behind_queue_size \d+$/m)
  assert.ok(!res.body.includes(token))
})

/**
 * Two replicas of one schema and a session opened on the direct one; the slow
 * one reaches Postgres through a proxy whose replies the test can hold, with
 * one pooled connection, opened first (migrations), before the feed's own.
 * The slow replica knows the caller's key and has the lookup statement
 * prepared, so a held read is one that Postgres has already answered.
 */
async function directAndSlow(t: TestContext, settings: Partial<Config>) {
  const direct = await buildTestApp(t, settings)
  const { app: slow, proxy } = await appBehindPostgresProxy(t, {
    ...settings,
    dbSchema: direct.config.dbSchema,
    dbPoolMax: 1,
  })
  const { token, session } = await openSession(direct.app)
  await introspect(slow, `sat_${'A'.repeat(43)}`)
  return { direct, slow: { app: slow }, proxy, token, session }
}

test('a request that arrives after a revocation never gets the answer of a read begun before it', async (t) => {
  const { direct, slow, proxy, token, session } = await directAndSlow(t, { l1TtlMs: 60_000 })

  // The read's query runs in Postgres now, before the revocation; its reply is held back
  // (only the pool's: the feed still hears of the revocation).
  proxy.holdReplies(0)
  const before = introspect(slow.app, token)
  await new Promise((r) => setTimeout(r, 200))
  const received = await metric(slow.app, 'session_cache_invalidations_received_total')
  const res = await revokeSession(direct.app, session.id)
  assert.equal(res.statusCode, 200)
  await eventually(
    async () => (await metric(slow.app, 'session_cache_invalidations_received_total')) > received,
    3000,
    'the slow replica hears of the revocation',
  )
  const after = introspect(slow.app, token)
  await new Promise((r) => setTimeout(r, 100))
  proxy.releaseReplies()
  // The read begun before the revocation may say active; the request after it must not.
  await before
  assert.equal((await after).active, false)
})

test('a request never joins a read older than the bound, even when the replica has heard nothing', async (t) => {
  const settings = { l1TtlMs: 300 }
  const { direct, slow, proxy, token, session } = await directAndSlow(t, settings)

  // Every reply to the slow replica is held, its feed's included: it cannot hear of the revocation.
  proxy.holdReplies()
  const before = introspect(slow.app, token)
  await new Promise((r) => setTimeout(r, 100))
  assert.equal((await revokeSession(direct.app, session.id)).statusCode, 200)
  // Later than the bound: joining the read begun before would answer from a snapshot that old.
  await new Promise((r) => setTimeout(r, settings.l1TtlMs + 100))
  const after = introspect(slow.app, token)
  await new Promise((r) => setTimeout(r, 100))
  proxy.releaseReplies()
  await before
  assert.equal((await after).active, false)
})
