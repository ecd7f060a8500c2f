import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Config } from '../src/config.ts'
import { feedChannel } from '../src/sessions/invalidation-feed.ts'
import {
  adminSql,
  appBehindPostgresProxy,
  auth,
  buildTestApp,
  eventually,
  introspect,
  openSession,
  REDIS_URL,
  redisSettings,
  revokeSession,
  twoReplicas,
} from './helper.ts'

/**
 * The second invalidation path: every replica hears session changes from
 * Postgres (LISTEN/NOTIFY, proven by heartbeats), whatever Redis does; and
 * Redis values are authenticated and versioned, so a forged value, a value
 * copied to another token, or one from before a change never makes a token
 * active.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const tokenKey = (prefix: string, token: string) =>
  `${prefix}tok2:${createHash('sha256').update(token).digest('hex')}`
/** A token in the opaque format that was never issued. */
const neverIssued = () => `sat_${randomBytes(32).toString('base64url')}`

/** Sum of a metric's samples whose label text includes `labels`. */
async function metric(app: FastifyInstance, name: string, labels = ''): Promise<number> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  let sum = 0
  for (const line of text.split('\n')) {
    const [series, value] = line.split(' ')
    if (!series || line.startsWith('#')) continue
    if ((series === name || series.startsWith(`${name}{`)) && series.includes(labels)) sum += Number(value)
  }
  return sum
}

async function feedState(app: FastifyInstance): Promise<string> {
  return (await app.inject({ method: 'GET', url: '/readyz' })).json().invalidation_feed
}

const feedLive = (app: FastifyInstance, what = 'the invalidation feed is live') =>
  eventually(async () => (await feedState(app)) === 'live', 15_000, what)

function redisClient(t: TestContext) {
  const redis = new Redis(REDIS_URL)
  t.after(() => redis.disconnect())
  return redis
}

/**
 * Opens a session on `app` and introspects it there, which writes it to Redis
 * behind the answer; returns it once it is there, with its key and value.
 */
async function sessionInRedis(app: FastifyInstance, redis: Redis, prefix: string) {
  const opened = await openSession(app, { user_id: 'alice' })
  assert.equal((await introspect(app, opened.token)).active, true)
  const key = tokenKey(prefix, opened.token)
  await eventually(async () => (await redis.exists(key)) === 1, 5000, 'the session is in Redis')
  return { ...opened, key, value: (await redis.get(key)) as string }
}

/**
 * Puts a stale copy back into Redis and asks `replica` until it has asked Redis
 * (only while its feed is live, which a busy machine may briefly not be) and
 * turned the copy down: each answer must be inactive.
 */
async function turnsDown(
  replica: FastifyInstance,
  redis: Redis,
  stale: { key: string; value: string; token: string },
) {
  const rejected = await metric(replica, 'session_cache_l2_rejected_total', 'reason="stale"')
  await eventually(
    async () => {
      await redis.set(stale.key, stale.value, 'PX', 60_000)
      // Past any L1 entry (the tests' L1_TTL_MS is 200 ms).
      await sleep(250)
      assert.equal((await introspect(replica, stale.token)).active, false)
      return (await metric(replica, 'session_cache_l2_rejected_total', 'reason="stale"')) > rejected
    },
    15_000,
    'the stale copy is asked for and refused',
  )
}

test('a forged Redis value, or a genuine one copied to another token, is a miss: never active, counted', async (t) => {
  const settings: Partial<Config> = {
    ...redisSettings(),
    l1TtlMs: 200,
    forwardAuthSecret: 'gateway-secret-0123456789abcdef',
  }
  const prefix = settings.redisKeyPrefix as string
  const { app } = await buildTestApp(t, settings)
  await feedLive(app)
  const redis = redisClient(t)

  // A real session, so there is a genuine value to steal and a realistic row to forge.
  const real = await sessionInRedis(app, redis, prefix)
  const { key: realKey, value: genuine } = real
  const [readAt, mac, ...rest] = genuine.split(':')
  const row = JSON.parse(rest.join(':'))
  const forgedRow = JSON.stringify({ ...row, user_id: 'root-admin' })

  const attempts = {
    'plain JSON (no MAC)': forgedRow,
    'a made-up MAC': `${readAt}:${'A'.repeat(mac?.length ?? 22)}:${forgedRow}`,
    'the genuine MAC over another row': `${readAt}:${mac}:${forgedRow}`,
    'a genuine value under another key': genuine,
  }
  // Not even a value that is not ASCII where the MAC goes costs more than a miss.
  Object.assign(attempts, {
    'a MAC slot of other characters': `${readAt}:${'é'.repeat(mac?.length ?? 22)}:${forgedRow}`,
  })
  const forged = () => metric(app, 'session_cache_l2_rejected_total', 'reason="forged"')
  for (const [what, value] of Object.entries(attempts)) {
    // Redis is asked only while the feed is live, which a busy machine may briefly not be: ask
    // again (with a token of its own each time) until it was asked; every answer must refuse.
    const before = await forged()
    await eventually(
      async () => {
        const token = neverIssued()
        await redis.set(tokenKey(prefix, token), value, 'PX', 60_000)
        assert.equal((await introspect(app, token)).active, false, what)
        const gateway = await app.inject({
          method: 'GET',
          url: '/v1/forward-auth',
          headers: { authorization: `Bearer ${token}`, 'x-forward-auth-secret': settings.forwardAuthSecret },
        })
        assert.equal(gateway.statusCode, 401, what)
        assert.equal(gateway.headers['x-auth-user-id'], undefined, what)
        return (await forged()) > before
      },
      15_000,
      `${what}: asked for and refused as forged`,
    )
  }
  // The real token's own value was tampered with too: still alice, never root-admin.
  const before = await forged()
  await eventually(
    async () => {
      await redis.set(realKey, `${readAt}:${mac}:${forgedRow}`, 'PX', 60_000)
      await sleep(250)
      const answer = await introspect(app, real.token)
      assert.equal(answer.user_id, 'alice')
      return (await forged()) > before
    },
    15_000,
    'the tampered copy of a real session is asked for and refused',
  )
})

test('Redis back with a copy from before a revocation: ignored by a replica that heard of it and by one started after', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 200 }
  const prefix = settings.redisKeyPrefix as string
  const [a, b] = await twoReplicas(t, settings)
  await feedLive(a.app)
  await feedLive(b.app)
  const redis = redisClient(t)
  const stale = await sessionInRedis(a.app, redis, prefix)
  assert.match(stale.value, /"status":"active"/)

  // As if Redis had been partitioned away during the revocation and came back with its data.
  assert.equal((await revokeSession(a.app, stale.session.id)).statusCode, 200)
  for (const replica of [a, b]) await turnsDown(replica.app, redis, stale)

  // A replica started after the revocation never heard of it: the copy predates its feed.
  await redis.set(stale.key, stale.value, 'PX', 60_000)
  const c = await buildTestApp(t, { ...settings, dbSchema: a.config.dbSchema })
  await turnsDown(c.app, redis, stale)
  // The stale copy is replaced by a newer read, not left for the next replica to trip over.
  await eventually(
    async () => /"status":"revoked"/.test((await redis.get(stale.key)) ?? ''),
    5000,
    'refilled',
  )
})

test('a copy written to Redis late (a delayed fill) is refused by its age, long after the change was heard', async (t) => {
  // A short L2 lifetime, so the per-session distrust lapses within the test.
  const settings = { ...redisSettings(), l1TtlMs: 200, l2TtlMs: 1500 }
  const prefix = settings.redisKeyPrefix as string
  const [a, b] = await twoReplicas(t, settings)
  await feedLive(b.app)
  const redis = redisClient(t)
  const stale = await sessionInRedis(a.app, redis, prefix)
  assert.equal((await revokeSession(a.app, stale.session.id)).statusCode, 200)
  // Past the distrust window (L2 + L1 + 1 s): the change is forgotten, and a fill read before
  // it lands now with a fresh Redis expiry, as a write held up in the network would.
  await sleep(settings.l2TtlMs + settings.l1TtlMs + 1500)
  await turnsDown(b.app, redis, stale)
})

test('without Redis, a revocation on one replica reaches the others through Postgres, long before their L1 TTL', async (t) => {
  const settings = { l1TtlMs: 60_000 }
  const [a, b] = await twoReplicas(t, settings)
  await feedLive(b.app)
  const { token, session } = await openSession(a.app)
  assert.equal((await introspect(b.app, token)).active, true)
  assert.equal((await introspect(b.app, token)).active, true)
  assert.equal(await metric(b.app, 'session_cache_hits_total', 'level="l1",kind="positive"'), 1)
  assert.equal((await revokeSession(a.app, session.id)).statusCode, 200)
  await eventually(async () => !(await introspect(b.app, token)).active, 10_000, 'B hears of it')
  assert.ok((await metric(b.app, 'session_cache_invalidations_received_total')) >= 1)
})

test('suspending and resuming are heard too: the other replica follows both at once', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 60_000 }
  const [a, b] = await twoReplicas(t, settings)
  await feedLive(b.app)
  const { token, session } = await openSession(a.app)
  assert.equal((await introspect(b.app, token)).active, true)
  const headers = auth()
  const suspend = await a.app.inject({
    method: 'POST',
    url: `/v1/sessions/${session.id}/suspend`,
    headers,
    payload: { reason: 'support' },
  })
  assert.equal(suspend.statusCode, 200, suspend.body)
  await eventually(async () => !(await introspect(b.app, token)).active, 10_000, 'B sees the suspension')
  const resume = await a.app.inject({ method: 'POST', url: `/v1/sessions/${session.id}/resume`, headers })
  assert.equal(resume.statusCode, 200, resume.body)
  await eventually(async () => (await introspect(b.app, token)).active === true, 10_000, 'B sees the resume')
})

test('a lost listening connection is a gap: L1 is cleared and Redis copies read before it are not trusted', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 1000 }
  const { app, proxy } = await appBehindPostgresProxy(t, settings)
  await feedLive(app)
  const gaps = await metric(app, 'invalidation_feed_gaps_total')
  assert.equal(gaps, 1, 'the first LISTEN')
  const { token } = await openSession(app)
  assert.equal((await introspect(app, token)).active, true)
  const redis = redisClient(t)
  const key = tokenKey(settings.redisKeyPrefix as string, token)
  await eventually(async () => (await redis.exists(key)) === 1, 5000, 'the session is in Redis')

  // Every connection to Postgres dies (changes committed now would never reach this replica).
  await proxy.cut()
  await proxy.restore()
  await eventually(async () => (await metric(app, 'invalidation_feed_gaps_total')) > gaps, 15_000, 'relisten')
  await feedLive(app, 'the feed proves itself again')
  assert.ok((await metric(app, 'session_cache_l1_clears_total')) >= 1, 'L1 cleared')

  // The Redis copy was read before the gap: Postgres is asked instead, and the answer is right.
  const rejected = await metric(app, 'session_cache_l2_rejected_total', 'reason="stale"')
  assert.equal((await introspect(app, token)).active, true)
  assert.equal(await metric(app, 'session_cache_l2_rejected_total', 'reason="stale"'), rejected + 1)
})

test('a feed that goes silent (connection up, nothing arrives) is reported stale, then replaced and live again', async (t) => {
  const settings = { ...redisSettings(), l1TtlMs: 200 }
  const { app, proxy, logs } = await appBehindPostgresProxy(t, settings)
  await feedLive(app)
  proxy.holdReplies()
  await eventually(async () => (await feedState(app)) === 'stale', 10_000, 'reported stale')
  assert.equal(await metric(app, 'invalidation_feed_live'), 0)
  // Silent for longer than it tolerates (2 s at this bound): it replaces its connections.
  await eventually(
    () => logs.text().includes('invalidation feed silent: reconnecting'),
    15_000,
    'the feed reconnects',
  )
  proxy.releaseReplies()
  await feedLive(app, 'live again once Postgres answers')
  assert.ok((await metric(app, 'invalidation_feed_lag_seconds')) >= 0, 'proven at least once')
})

test('the listening connection killed in Postgres is one gap: the feed listens again and proves itself', async (t) => {
  // A feed silent for 8 heartbeats (L1_TTL_MS / 4 each) reconnects, which is a gap too: a long TTL keeps
  // a loaded machine's stalls from passing for one.
  const settings = { ...redisSettings(), l1TtlMs: 4000 }
  const { app, config } = await buildTestApp(t, settings)
  await feedLive(app)
  assert.equal(await metric(app, 'invalidation_feed_gaps_total'), 1)
  const sql = adminSql()
  t.after(() => sql.end())
  const killed = await sql`
    select pg_terminate_backend(pid) from pg_stat_activity
    where query = ${`listen "${feedChannel(config.dbSchema)}"`}`
  assert.equal(killed.length, 1, 'one listening connection')
  await eventually(async () => (await metric(app, 'invalidation_feed_gaps_total')) === 2, 15_000, 'relisten')
  await feedLive(app, 'live again')
  await sleep(500)
  assert.equal(await metric(app, 'invalidation_feed_gaps_total'), 2, 'one gap, not a reconnect on top')
})

test('a truncated sessions table is heard too: every replica forgets what it cached', async (t) => {
  const settings = { l1TtlMs: 60_000 }
  const [a, b] = await twoReplicas(t, settings)
  await feedLive(b.app)
  const { token } = await openSession(a.app)
  assert.equal((await introspect(b.app, token)).active, true)
  const sql = adminSql()
  t.after(() => sql.end())
  await sql`truncate ${sql(a.config.dbSchema)}.sessions cascade`
  await eventually(async () => !(await introspect(b.app, token)).active, 10_000, 'B forgets the session')
})

test('deleting a session notifies the feed only when it was not ended yet (migration 009)', async (t) => {
  const { app, config } = await buildTestApp(t)
  const sql = adminSql()
  const heard: string[] = []
  const listening = await sql.listen(feedChannel(config.dbSchema), (payload) => {
    if (!payload.startsWith('~')) heard.push(payload)
  })
  t.after(async () => {
    await listening.unlisten()
    await sql.end()
  })
  const keyOf = (token: string) => createHash('sha256').update(token).digest('hex')
  const ended = await openSession(app)
  const live = await openSession(app)
  assert.ok((await revokeSession(app, ended.session.id)).statusCode < 300)
  await eventually(() => heard.includes(keyOf(ended.token)), 5000, 'the revocation is heard')
  heard.length = 0

  // Purge's delete of an ended session: no notification (ending it notified); the answer stays "inactive".
  await sql`delete from ${sql(config.dbSchema)}.sessions where id = ${ended.session.id}`
  // A live session deleted by hand still notifies. Notifications arrive in commit order, so once this
  // one is heard, one for the ended session would have been heard before it.
  await sql`delete from ${sql(config.dbSchema)}.sessions where id = ${live.session.id}`
  await eventually(() => heard.includes(keyOf(live.token)), 5000, "the live session's delete is heard")
  assert.deepEqual(heard, [keyOf(live.token)])
  assert.equal((await introspect(app, ended.token)).active, false)
  assert.equal((await introspect(app, live.token)).active, false)
})
