import assert from 'node:assert/strict'
import { after, type TestContext, test } from 'node:test'
import { isDeepStrictEqual } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { closeLeftovers, eventually, leftovers, ms, now, sleep, within } from './fixtures/bounded.ts'
import { type Answer, activeInRedis, cacheKey, introspectionStream } from './fixtures/introspection-stream.ts'
import { appMetric } from './fixtures/metrics.ts'
import { type PrivateRedis, startRedisServer, stopAllRedisServers } from './fixtures/redis-server.ts'
import {
  appBehindPostgresProxy,
  auth,
  buildTestApp,
  introspect,
  openSession,
  redisSettings,
  revokeSession,
  twoReplicas,
} from './helper.ts'

/**
 * What users rely on when Redis (the shared cache) dies, hangs or is not there
 * yet: no 5xx, no revoked token reported active more than L1_TTL_MS after the
 * revocation returned, Postgres answers meanwhile, and the service picks Redis
 * up again by itself. Each test runs its own redis-server, so the machine's
 * shared Redis is never stopped or stalled. Timings here are real time (the L1
 * TTL and the breaker use real time); the apps' manual clocks stay put, so no
 * session idles out or expires during a test. Assertions are on behaviour and
 * on bounds from the configuration, never on how much a busy machine got done.
 * (The matrix of partial failures across replicas is fault-matrix.test.ts.)
 */

const L1_TTL_MS = 200

after(async () => {
  await closeLeftovers()
  await stopAllRedisServers()
})
const closeApps = (...apps: FastifyInstance[]) => {
  for (const app of apps) leftovers.push(() => app.close())
}

async function privateRedis(t: TestContext, options: { start?: boolean } = {}): Promise<PrivateRedis> {
  const server = await startRedisServer(options)
  t.after(() => server.stop())
  return server
}

/** A plain client to look inside the private Redis (never the apps' connections). */
function inspector(t: TestContext, server: PrivateRedis) {
  // Bounded commands: a check that asks a stalled server fails instead of waiting for ever.
  const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1, commandTimeout: 5000 })
  client.on('error', () => {})
  t.after(() => client.disconnect())
  leftovers.push(() => client.disconnect())
  return client
}

/** The Redis key the service caches a token under: the prefix, `tok2:`, and the token's SHA-256 in hex. */
async function readyz(app: FastifyInstance) {
  const res = await app.inject({ method: 'GET', url: '/readyz' })
  const body = res.json() as { status: string; postgres: string; redis: string; invalidation_feed: string }
  return { status: res.statusCode, body }
}

/** The fields of /readyz that do not move from one call to the next (the feed's lag does). */
async function readiness(app: FastifyInstance) {
  const { status, postgres, redis } = (await readyz(app)).body
  return { status, postgres, redis }
}

/** Waits until every app's readiness is `expected` (a snapshot can flip back: the breaker opens on slow commands). */
async function readinessBecomes(
  apps: Record<string, FastifyInstance>,
  expected: Awaited<ReturnType<typeof readiness>>,
  timeoutMs: number,
) {
  for (const [name, app] of Object.entries(apps)) {
    await eventually(
      async () => isDeepStrictEqual(await readiness(app), expected),
      timeoutMs,
      `${name} readiness ${JSON.stringify(expected)}`,
    )
  }
}

/**
 * Waits until Redis holds an active copy of every token, introspecting them on every app at each
 * look: a fill is sent without waiting, only on an L1 miss, and on a busy machine may miss the
 * command timeout (then it is simply not there until the next miss fills it).
 */
async function cachedInRedis(
  peek: Redis,
  prefix: string,
  apps: FastifyInstance[],
  tokens: string[],
  timeoutMs = 10_000,
) {
  await eventually(
    async () => {
      for (const app of apps)
        for (const token of tokens) assert.equal((await introspect(app, token)).active, true)
      const values = await peek.mget(...tokens.map((tok) => cacheKey(prefix, tok)))
      return values.every(activeInRedis)
    },
    timeoutMs,
    `${tokens.length} tokens cached in Redis`,
  )
}

/**
 * For a `finally`: stops the stream without hiding the test's own failure (a
 * stream that would not stop is a diagnostic then; on the way that passes, the
 * test awaited stop() itself).
 */
async function halt(t: TestContext, stream: ReturnType<typeof introspectionStream>) {
  await stream.stop().catch((err: Error) => t.diagnostic(err.message))
}

test('Redis crashes during a stream of introspections and comes back: no 5xx, revocation holds, cache resumes', async (t) => {
  const redis = await privateRedis(t)
  const peek = inspector(t, redis)
  const settings = { ...redisSettings(), redisUrl: redis.url, l1TtlMs: L1_TTL_MS }
  const prefix = settings.redisKeyPrefix as string
  // One schema, dropped only once both have closed: dropping it under a replica still running can
  // deadlock with that replica's queries, and the failed hook would skip the ones after it.
  const [first, second] = await twoReplicas(t, settings)
  const A = first.app
  const B = second.app
  closeApps(A, B)

  const live = [await openSession(A), await openSession(A, { user_id: 'bob' })]
  const victim = await openSession(A, { user_id: 'carol' })
  const liveTokens = new Set(live.map((s) => s.token))
  const tokens = [...liveTokens, victim.token]
  await cachedInRedis(peek, prefix, [A, B], tokens)

  const stream = introspectionStream({ A, B }, tokens, 5)
  let answers: Answer[] = []
  try {
    await sleep(300)
    const killedAt = now()
    await redis.stop()
    for (const [name, app] of Object.entries({ A, B })) {
      await eventually(
        async () => (await readyz(app)).body.redis === 'degraded',
        5000,
        `${name} sees Redis away`,
      )
      assert.deepEqual(
        await readiness(app),
        { status: 'ready', postgres: 'up', redis: 'degraded' },
        `${name} stays ready without Redis`,
      )
    }

    const revoke = await revokeSession(A, victim.session.id)
    const revokedAt = now()
    assert.equal(revoke.statusCode, 200, revoke.body)
    assert.equal(revoke.json().status, 'revoked')

    // Long enough for B's L1 entries to lapse several times while Redis is away.
    await sleep(800)
    const restartedAt = now()
    await redis.start()
    await readinessBecomes({ A, B }, { status: 'ready', postgres: 'up', redis: 'up' }, 8000)
    const recoveredAt = now()

    // The cache refills: live tokens land in Redis again, and both replicas read them from there.
    const l2Hits = {
      A: await appMetric(A, 'session_cache_hits_total', { level: 'l2', kind: 'positive' }),
      B: await appMetric(B, 'session_cache_hits_total', { level: 'l2', kind: 'positive' }),
    }
    await eventually(
      async () => (await peek.exists(...live.map((s) => cacheKey(prefix, s.token)))) === live.length,
      10_000,
      'live tokens cached in Redis again',
    )
    for (const [name, app] of Object.entries({ A, B })) {
      const before = l2Hits[name as 'A' | 'B']
      await eventually(
        async () =>
          (await appMetric(app, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })) > before,
        10_000,
        `${name} serves from Redis again`,
      )
    }
    assert.equal(activeInRedis(await peek.get(cacheKey(prefix, victim.token))), false)

    answers = await stream.stop()

    // No 5xx, ever; every answer is a plain 200.
    const failed = answers.filter((a) => a.status !== 200)
    assert.deepEqual(
      failed.map((a) => `${a.app} ${a.status} ${a.code}`),
      [],
      'every introspection answered 200',
    )
    // The stream really ran through the outage on both replicas (how often a busy machine manages is not the point).
    for (const name of ['A', 'B']) {
      const during = answers.filter((a) => a.app === name && a.start > killedAt && a.end < restartedAt)
      assert.ok(during.length > 0, `${name} answered no introspection while Redis was down`)
    }
    // Live sessions stay active throughout.
    const liveInactive = answers.filter((a) => liveTokens.has(a.token) && a.active !== true)
    assert.equal(liveInactive.length, 0, 'live sessions always active')

    const victimActive = (name: string) =>
      answers.filter((a) => a.app === name && a.token === victim.token && a.active === true)
    // The replica that revoked never reports the token active once the revocation returned.
    const aLate = victimActive('A').filter((a) => a.start >= revokedAt)
    assert.deepEqual(
      aLate.map((a) => ms(a.start - revokedAt)),
      [],
      'A after the revocation',
    )
    // The other replica may lag by at most the bound (it hears of the revocation from Postgres).
    const bActive = victimActive('B')
    const bLastAt = Math.max(...bActive.map((a) => a.start)) - revokedAt
    const bLast = bLastAt > 0 ? `${ms(bLastAt)} after` : 'no later than'
    const bLate = bActive.filter((a) => a.start > revokedAt + L1_TTL_MS)
    assert.deepEqual(
      bLate.map((a) => ms(a.start - revokedAt)),
      [],
      `B later than ${L1_TTL_MS} ms`,
    )
    // And it does stop: every answer for the token in the last stretch is inactive.
    const tail = answers.filter((a) => a.token === victim.token && a.start >= recoveredAt)
    assert.ok(tail.length > 0 && tail.every((a) => a.active === false))

    const slowest = Math.max(...answers.map((a) => a.end - a.start))
    t.diagnostic(
      `${answers.length} introspections; B reported the revoked token active until ${bLast} the revocation returned; ` +
        `Redis down ${ms(restartedAt - killedAt)}; readiness back ${ms(recoveredAt - restartedAt)} after restart; slowest answer ${ms(slowest)}`,
    )
  } finally {
    await halt(t, stream)
  }
})

test('a hung Redis (DEBUG SLEEP) costs each introspection at most a command timeout; answers stay correct', async (t) => {
  const redis = await privateRedis(t)
  const peek = inspector(t, redis)
  const settings = { ...redisSettings(), redisUrl: redis.url, l1TtlMs: L1_TTL_MS }
  const { app } = await buildTestApp(t, settings)
  closeApps(app)
  const live = [await openSession(app), await openSession(app, { user_id: 'bob' })]
  const unknown = `sat_${'A'.repeat(43)}`
  for (const s of live) assert.equal((await introspect(app, s.token)).active, true)

  const stream = introspectionStream({ app }, [...live.map((s) => s.token), unknown], 5)
  try {
    await sleep(200)
    const hangStart = now()
    // The sleeping client is a connection of its own; the server stalls for every client.
    const hang = peek.call('DEBUG', 'SLEEP', '3')
    await eventually(async () => (await readyz(app)).body.redis === 'degraded', 5000, 'breaker opens')
    const openedAfter = now() - hangStart
    assert.equal(await within(hang, 10_000, 'DEBUG SLEEP 3'), 'OK')
    const hangEnd = now()
    await eventually(async () => (await readyz(app)).body.redis === 'up', 8000, 'Redis up after the hang')
    const upAfter = now() - hangEnd
    const l2Before = await appMetric(app, 'session_cache_hits_total', { level: 'l2' })
    await eventually(
      async () => (await appMetric(app, 'session_cache_hits_total', { level: 'l2' })) > l2Before,
      10_000,
      'Redis serves hits again',
    )
    const answers = await stream.stop()

    assert.deepEqual(
      answers.filter((a) => a.status !== 200).map((a) => `${a.status} ${a.code}`),
      [],
      'every introspection answered 200',
    )
    for (const a of answers) assert.equal(a.active, a.token !== unknown, 'each answer is right')
    const during = answers.filter((a) => a.start >= hangStart && a.start < hangEnd)
    assert.ok(during.length > 0, 'introspections ran during the hang')
    const slowest = Math.max(...during.map((a) => a.end - a.start))
    // The command timeout is 100 ms: no answer waits for the server to wake up (3 s).
    assert.ok(slowest < 1500, `slowest introspection during the hang took ${ms(slowest)}`)
    t.diagnostic(
      `${during.length} introspections during a 3 s hang, slowest ${ms(slowest)}; ` +
        `breaker open ${ms(openedAfter)} into the hang; readiness up ${ms(upAfter)} after it`,
    )
  } finally {
    await halt(t, stream)
  }
})

test('a session revoked while Redis hangs (breaker open) is not reported active from Redis once it wakes', async (t) => {
  const redis = await privateRedis(t)
  const peek = inspector(t, redis)
  const settings = { ...redisSettings(), redisUrl: redis.url, l1TtlMs: L1_TTL_MS }
  const prefix = settings.redisKeyPrefix as string
  // One schema, dropped only once both have closed: dropping it under a replica still running can
  // deadlock with that replica's queries, and the failed hook would skip the ones after it.
  const [first, second] = await twoReplicas(t, settings)
  const A = first.app
  const B = second.app
  closeApps(A, B)
  const live = await openSession(A)
  const victim = await openSession(A, { user_id: 'carol' })
  await cachedInRedis(peek, prefix, [A, B], [victim.token])

  const stream = introspectionStream({ A, B }, [live.token, victim.token], 5)
  try {
    await sleep(100)
    // Long enough for the breaker to open and the revocation to return before it wakes, on a busy machine too.
    const hang = peek.call('DEBUG', 'SLEEP', '3')
    await eventually(async () => (await readyz(A)).body.redis === 'degraded', 5000, 'breaker opens on A')
    const revoke = await revokeSession(A, victim.session.id)
    const revokedAt = now()
    assert.equal(revoke.statusCode, 200, revoke.body)
    await within(hang, 10_000, 'DEBUG SLEEP 3')
    const wokeAt = now()
    // Past the wake-up, long enough for both L1s to lapse and read Redis again, several times.
    await sleep(1000)
    const answers = await stream.stop()

    assert.deepEqual(
      answers.filter((a) => a.status !== 200).map((a) => `${a.app} ${a.status} ${a.code}`),
      [],
      'every introspection answered 200',
    )
    assert.ok(answers.filter((a) => a.token === live.token).every((a) => a.active === true))
    const late = (name: string, after: number) =>
      answers
        .filter((a) => a.app === name && a.token === victim.token && a.active === true && a.start >= after)
        .map((a) => ms(a.start - revokedAt))
    const lateA = late('A', revokedAt)
    const lateB = late('B', revokedAt + L1_TTL_MS)
    const span = (xs: string[]) => (xs.length ? ` (${xs[0]} to ${xs[xs.length - 1]} after it)` : '')
    t.diagnostic(
      `revoked token active after the revocation: A ${lateA.length}×${span(lateA)}, ` +
        `B ${lateB.length}× beyond its L1 TTL${span(lateB)}; Redis asleep until ${ms(wokeAt - revokedAt)} after it`,
    )
    assert.deepEqual(lateA, [], 'A after the revocation')
    assert.deepEqual(lateB, [], `B later than ${L1_TTL_MS} ms`)
  } finally {
    await halt(t, stream)
  }
})

test('with Redis and Postgres both down, introspection answers 503 once L1 lapses, never active', async (t) => {
  const redis = await privateRedis(t)
  const { app, proxy: postgresProxy } = await appBehindPostgresProxy(t, {
    ...redisSettings(),
    redisUrl: redis.url,
    l1TtlMs: L1_TTL_MS,
  })
  closeApps(app)
  leftovers.push(() => postgresProxy.close())
  const { token } = await openSession(app)
  const other = await openSession(app, { user_id: 'bob' })
  assert.equal((await introspect(app, token)).active, true)

  await redis.stop()
  await postgresProxy.cut()
  try {
    await sleep(L1_TTL_MS + 50)
    // A token this replica has cached (now lapsed) and one it never saw. Few attempts: each failed
    // connection lengthens the Postgres client's reconnect backoff (see the next test).
    for (let i = 0; i < 2; i++) {
      for (const tok of [token, other.token]) {
        const res = await app.inject({
          method: 'POST',
          url: '/v1/sessions/introspect',
          headers: auth(),
          payload: { token: tok },
        })
        assert.equal(res.statusCode, 503, res.body)
        assert.equal(res.json().error.code, 'SERVICE_UNAVAILABLE')
        assert.notEqual(res.json().active, true)
      }
    }
    const ready = await readyz(app)
    assert.equal(ready.status, 503)
    assert.deepEqual(await readiness(app), { status: 'unavailable', postgres: 'down', redis: 'degraded' })
    await eventually(
      async () => (await readyz(app)).body.invalidation_feed === 'stale',
      5000,
      'the feed is reported stale',
    )
  } finally {
    await postgresProxy.restore()
    if (!redis.running()) await redis.start()
  }

  // Both back: the service answers again by itself.
  const restoredAt = now()
  await eventually(
    async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/sessions/introspect',
        headers: auth(),
        payload: { token },
      })
      return res.statusCode === 200 && res.json().active === true
    },
    8000,
    'introspection answers again',
  )
  const answeringAfter = now() - restoredAt
  await eventually(async () => (await readyz(app)).body.redis === 'up', 8000, 'Redis back')
  await eventually(async () => (await readyz(app)).body.invalidation_feed === 'live', 15_000, 'feed live')
  await readinessBecomes({ app }, { status: 'ready', postgres: 'up', redis: 'up' }, 8000)
  t.diagnostic(`introspection answered again ${ms(answeringAfter)} after both came back`)
})

test('while Postgres stays down, every introspection still answers 503 without waiting for it', async (t) => {
  const redis = await privateRedis(t)
  const { app, proxy: postgresProxy } = await appBehindPostgresProxy(t, {
    ...redisSettings(),
    redisUrl: redis.url,
    l1TtlMs: L1_TTL_MS,
  })
  closeApps(app)
  leftovers.push(() => postgresProxy.close())
  const { token } = await openSession(app)
  await redis.stop()
  await postgresProxy.cut()
  const latencies: number[] = []
  try {
    await sleep(L1_TTL_MS + 50)
    // A gateway asks on every request; an outage must not turn each of them into a long wait
    // (the driver's reconnect backoff grows to 20 s by default; ours stops at 0.5 s, and a
    // refused connection fails at once, so well under the 5 s connect timeout).
    for (let i = 0; i < 12; i++) {
      const start = now()
      const res = await Promise.race([
        app.inject({ method: 'POST', url: '/v1/sessions/introspect', headers: auth(), payload: { token } }),
        sleep(4000).then(() => null),
      ])
      latencies.push(now() - start)
      assert.ok(res, `introspection ${i + 1} still unanswered after 4 s (before: ${latencies.map(ms)})`)
      assert.equal(res.statusCode, 503, res.body)
    }
    t.diagnostic(`latencies during the outage: ${latencies.map(ms).join(', ')}`)
  } finally {
    await postgresProxy.restore()
  }
})

test('an app started while Redis is down serves from Postgres and picks Redis up when it starts', async (t) => {
  const redis = await privateRedis(t, { start: false })
  const settings = { ...redisSettings(), redisUrl: redis.url, l1TtlMs: L1_TTL_MS }
  const prefix = settings.redisKeyPrefix as string
  const started = now()
  const { app } = await buildTestApp(t, settings)
  const buildTook = now() - started
  closeApps(app)

  const { token, session } = await openSession(app)
  const answer = await introspect(app, token)
  assert.equal(answer.active, true)
  assert.equal(answer.session_id, session.id)
  assert.deepEqual(await readiness(app), { status: 'ready', postgres: 'up', redis: 'degraded' })

  await redis.start()
  const redisStarted = now()
  await eventually(async () => (await readyz(app)).body.redis === 'up', 8000, 'the app sees Redis')
  const pickedUp = now() - redisStarted

  // Answers now go through Redis: the token is cached there and later lookups hit it.
  const peek = inspector(t, redis)
  const key = cacheKey(prefix, token)
  await eventually(
    async () => {
      assert.equal((await introspect(app, token)).active, true)
      return activeInRedis(await peek.get(key))
    },
    10_000,
    'the session cached in Redis',
  )
  const hitsBefore = await appMetric(app, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })
  await eventually(
    async () => {
      await sleep(L1_TTL_MS + 20)
      assert.equal((await introspect(app, token)).active, true)
      return (
        (await appMetric(app, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })) > hitsBefore
      )
    },
    10_000,
    'Redis hits',
  )
  t.diagnostic(`built in ${ms(buildTook)} without Redis; Redis picked up ${ms(pickedUp)} after it started`)
})
