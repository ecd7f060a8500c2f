import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import pino from 'pino'
import { createMetrics } from '../src/metrics.ts'
import { createSessionRepository } from '../src/sessions/repository.ts'
import { createWriteBehind } from '../src/sessions/write-behind.ts'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'
import { buildTestApp, logCapture, openSession } from './helper.ts'

// The write-behind module on its own, against the real repository and Postgres: what one flush
// writes when Postgres refuses a value in the batch, and when Postgres is away.

/** A write-behind over the app's database that only flushes when told (and its log). */
function writeBehindFor(t: TestContext, sql: Parameters<typeof createSessionRepository>[0]) {
  const logs = logCapture()
  const touches = createWriteBehind({
    repo: createSessionRepository(sql),
    intervalMs: 3_600_000,
    metrics: createMetrics(),
    log: pino({ level: 'warn' }, logs.stream),
  })
  t.after(() => touches.close().catch(() => {}))
  return { touches, logs }
}

async function stored(sql: Parameters<typeof createSessionRepository>[0], id: string) {
  const [row] = await sql`select host(ip) as ip, last_seen_at from sessions where id = ${id}`
  return row as { ip: string | null; last_seen_at: Date }
}

test('a use Postgres refuses never holds back the others in its batch', async (t) => {
  const { app } = await buildTestApp(t)
  const { sql } = app.db
  const sessions = []
  for (let i = 0; i < 9; i++) sessions.push((await openSession(app, { user_id: `user-${i}` })).session)
  const { touches, logs } = writeBehindFor(t, sql)

  const at = new Date(Date.parse('2026-01-01T00:05:00Z'))
  // Addresses Postgres inet refuses (a zone id; what ipaddr.js reads as 127.0.0.1), and an id it refuses.
  const refusedIps = new Map([
    [sessions[2]?.id, 'fe80::1%eth0'],
    [sessions[5]?.id, '127.1'],
  ])
  for (const [i, session] of sessions.entries()) {
    touches.record(session.id, at, refusedIps.get(session.id) ?? `198.51.100.${i}`)
  }
  touches.record('not-a-session-id', at, '198.51.100.99')
  await touches.flush()

  for (const [i, session] of sessions.entries()) {
    const row = await stored(sql, session.id)
    assert.equal(row.last_seen_at.getTime(), at.getTime(), `the use of session ${i} is written`)
    // A refused address is left out; the session keeps the one it had.
    assert.equal(row.ip, refusedIps.has(session.id) ? '203.0.113.7' : `198.51.100.${i}`, `session ${i}`)
  }
  const warnings = logs.lines.map((line) => JSON.parse(line))
  assert.deepEqual(
    warnings.map((w) => w.sessionId).sort(),
    [sessions[2]?.id, sessions[5]?.id, 'not-a-session-id', 'not-a-session-id'].sort(),
    logs.text(),
  )
  assert.ok(!logs.text().includes('will retry'), 'nothing is put back to fail again')

  // Nothing is left to fail at the next flush: a newer use is written as usual.
  const later = new Date(at.getTime() + 60_000)
  touches.record(sessions[0]?.id as string, later, null)
  await touches.flush()
  assert.equal((await stored(sql, sessions[0]?.id as string)).last_seen_at.getTime(), later.getTime())
  assert.equal(logs.lines.length, warnings.length)
})

test('when Postgres is away the whole batch is kept and written once it is back', async (t) => {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 })
  t.after(() => proxy.close())
  const { app } = await buildTestApp(t, {
    databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
  })
  const { sql } = app.db
  const { session } = await openSession(app)
  const { touches, logs } = writeBehindFor(t, sql)

  const at = new Date(Date.parse('2026-01-01T00:05:00Z'))
  touches.record(session.id, at, '198.51.100.1')
  touches.record(randomUUID(), at, null)
  await proxy.cut()
  await touches.flush()
  assert.match(logs.text(), /will retry/)
  await proxy.restore()
  await touches.flush()
  const row = await stored(sql, session.id)
  assert.equal(row.last_seen_at.getTime(), at.getTime())
  assert.equal(row.ip, '198.51.100.1')
})

test('writing uses back changes no indexed column: each row is a HOT update, with no new index entries', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const { sql } = app.db
  const ids: string[] = []
  for (let i = 0; i < 4; i++) ids.push((await openSession(app, { user_id: `user-${i}` })).session.id)
  const at = new Date(clock.now() + 60_000)
  // Counted in the transaction that writes them: pg_stat_xact_* sees this transaction's own updates.
  const counts = await sql.begin(async (tx) => {
    const repo = createSessionRepository(tx as unknown as Parameters<typeof createSessionRepository>[0])
    const written = await repo.touchMany(ids.map((id) => ({ id, at, ip: '203.0.113.9' })))
    const [row] = await tx`
      select n_tup_upd::int as updated, n_tup_hot_upd::int as hot
      from pg_stat_xact_user_tables where relid = 'sessions'::regclass`
    return { written, ...row }
  })
  assert.deepEqual(counts, { written: 4, updated: 4, hot: 4 })
  for (const id of ids) assert.deepEqual(await stored(sql, id), { ip: '203.0.113.9', last_seen_at: at })
})
