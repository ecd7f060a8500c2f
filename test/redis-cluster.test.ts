import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import type { Config } from '../src/config.ts'
import { closeLeftovers, eventually, leftovers, ms, now, sleep } from './fixtures/bounded.ts'
import { type Answer, activeInRedis, cacheKey, introspectionStream } from './fixtures/introspection-stream.ts'
import { appMetric } from './fixtures/metrics.ts'
import {
  type ClusterNode,
  type PrivateCluster,
  startRedisCluster,
  stopAllRedisClusters,
} from './fixtures/redis-cluster.ts'
import { ADMIN_KEY, auth, introspect, openSession, twoReplicas } from './helper.ts'

/**
 * The service on a Redis Cluster (REDIS_URL=redis+cluster://…): each test
 * runs its own cluster of redis-servers on free ports (three primaries; with
 * a replica each where a primary is killed) and two replicas of the app on one
 * schema. What must hold there as on one Redis: sessions cached in Redis are
 * shared by the replicas, a revocation through one replica is seen by the
 * other within L1_TTL_MS and its Redis copies are deleted on every shard (no
 * command spans two slots), failed authentications are counted across
 * replicas, and when a primary dies no revoked session is answered active past
 * the bound, every question is answered (from Postgres while the shard is
 * away), and the cache comes back on the promoted replica. Assertions are on
 * behaviour and on bounds from the configuration, never on how much a busy
 * machine got done.
 */

const L1_TTL_MS = 500
/** `cluster-node-timeout` of the clusters here: a failover takes about this plus an election. */
const NODE_TIMEOUT_MS = 3000

after(async () => {
  await closeLeftovers()
  await stopAllRedisClusters()
})

async function privateCluster(t: TestContext, replicas: number): Promise<PrivateCluster> {
  const cluster = await startRedisCluster({ primaries: 3, replicas, nodeTimeoutMs: NODE_TIMEOUT_MS })
  t.after(() => cluster.stop())
  leftovers.push(() => cluster.stop())
  return cluster
}

/** A plain cluster client to look inside (never the apps' connections); every command bounded. */
function inspector(t: TestContext, cluster: PrivateCluster): Cluster {
  const client = new Cluster(
    cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    { redisOptions: { commandTimeout: 5000 } },
  )
  client.on('error', () => {})
  client.on('node error', () => {})
  t.after(() => client.disconnect())
  leftovers.push(() => client.disconnect())
  return client
}

/** Two replicas of the app on one new schema, caching in the cluster under a key prefix of their own. */
async function replicasOn(t: TestContext, cluster: PrivateCluster, extra: Partial<Config> = {}) {
  const prefix = `t_${randomBytes(6).toString('hex')}:`
  const settings: Partial<Config> = {
    redisUrl: cluster.url,
    redisKeyPrefix: prefix,
    l1TtlMs: L1_TTL_MS,
    ...extra,
  }
  const [a, b] = await twoReplicas(t, settings)
  leftovers.push(
    () => a.app.close(),
    () => b.app.close(),
  )
  for (const [name, app] of Object.entries({ A: a.app, B: b.app })) {
    await eventually(
      async () => {
        const body = (await app.inject({ method: 'GET', url: '/readyz' })).json()
        return body.redis === 'up' && body.invalidation_feed === 'live'
      },
      20_000,
      `${name} on the cluster with its feed live`,
    )
  }
  return { A: a.app, B: b.app, prefix, logs: { A: a.logs, B: b.logs } }
}

type Opened = Awaited<ReturnType<typeof openSession>> & { key: string; shard: ClusterNode }

/**
 * Opens sessions (user `user`, through `app`) until every primary holds at least `perShard` of
 * their cache keys: the keys hash where they will, so the count needed varies.
 */
async function sessionsOnEveryShard(
  app: FastifyInstance,
  cluster: PrivateCluster,
  prefix: string,
  user: string,
  perShard: number,
): Promise<Opened[]> {
  const primaries = await cluster.primaries()
  const opened: Opened[] = []
  const count = (node: ClusterNode) => opened.filter((s) => s.shard === node).length
  for (let i = 0; i < 200 && primaries.some((p) => count(p) < perShard); i++) {
    const session = await openSession(app, { user_id: user })
    const key = cacheKey(prefix, session.token)
    opened.push({ ...session, key, shard: await cluster.primaryOf(key) })
  }
  assert.ok(
    primaries.every((p) => count(p) >= perShard),
    `${opened.length} sessions did not give each of ${primaries.length} primaries ${perShard} keys`,
  )
  return opened
}

/** Waits until the cluster holds an active copy of every token, introspecting them on every app meanwhile. */
async function cachedInCluster(peek: Cluster, prefix: string, apps: FastifyInstance[], tokens: string[]) {
  await eventually(
    async () => {
      for (const app of apps)
        for (const token of tokens) assert.equal((await introspect(app, token)).active, true)
      const values = await Promise.all(tokens.map((token) => peek.get(cacheKey(prefix, token))))
      return values.every(activeInRedis)
    },
    20_000,
    `${tokens.length} tokens cached in the cluster`,
  )
}

function revoke(app: FastifyInstance, sessionId: string) {
  return app.inject({ method: 'DELETE', url: `/v1/sessions/${sessionId}`, headers: auth() })
}

/**
 * The promise, checked on recorded answers: no `active` for `token` from the replica that revoked
 * it to a question sent after the acknowledgement, nor from any other to one sent more than
 * L1_TTL_MS after it.
 */
function lateActive(answers: Answer[], token: string, revokedBy: string, ackAt: number): string[] {
  return answers
    .filter((a) => a.token === token && a.active === true)
    .filter((a) => a.start > (a.app === revokedBy ? ackAt : ackAt + L1_TTL_MS))
    .map((a) => `${a.app} ${ms(a.start - ackAt)} after the ack`)
}

// The first three tests share one cluster of three primaries (none is killed); started on first use.
let shared: Promise<PrivateCluster> | null = null
function sharedCluster(): Promise<PrivateCluster> {
  shared ??= startRedisCluster({ primaries: 3, replicas: 0, nodeTimeoutMs: NODE_TIMEOUT_MS }).then(
    (cluster) => {
      leftovers.unshift(() => cluster.stop())
      return cluster
    },
  )
  return shared
}

test('sessions cached in the cluster are shared by replicas; revocations through either are seen by the other and deleted on every shard', async (t) => {
  const cluster = await sharedCluster()
  const peek = inspector(t, cluster)
  const { A, B, prefix, logs } = await replicasOn(t, cluster)
  const alice = await sessionsOnEveryShard(A, cluster, prefix, 'alice', 2)
  const bob = await openSession(A, { user_id: 'bob' })
  const tokens = [...alice.map((s) => s.token), bob.token]

  // A reads each from Postgres and fills the cluster (through the Lua script: a sealed value).
  await cachedInCluster(peek, prefix, [A], tokens)
  // B has none of them in its L1: it answers from what A put in Redis.
  const hitsBefore = await appMetric(B, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })
  for (const token of tokens) assert.equal((await introspect(B, token)).active, true)
  const hits =
    (await appMetric(B, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })) - hitsBefore
  assert.ok(hits > 0, 'B answered from Redis')

  // One session revoked through B: B never answers it active again, A not past the bound.
  const [one, ...rest] = alice as [Opened, ...Opened[]]
  const answers: Answer[] = []
  const ask = async (name: string, app: FastifyInstance, token: string) => {
    const start = now()
    const active = (await introspect(app, token)).active
    answers.push({ app: name, token, start, end: now(), status: 200, active, code: undefined })
    return active
  }
  assert.equal(await ask('A', A, one.token), true)
  const res = await revoke(B, one.session.id)
  const ackAt = now()
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(await ask('B', B, one.token), false)
  await eventually(async () => (await ask('A', A, one.token)) === false, 10_000, 'A sees the revocation')
  const first = now()
  while (now() - first < 2 * L1_TTL_MS) await ask('A', A, one.token)
  assert.deepEqual(lateActive(answers, one.token, 'B', ackAt), [])
  // Deleted, or since replaced by a read of the revoked row (fills are newest-read-wins).
  assert.equal(activeInRedis(await peek.get(one.key)), false, 'no active copy left in Redis')

  // Every other session of alice, their keys on all three shards, revoked at once through A.
  const all = await A.inject({ method: 'DELETE', url: '/v1/users/alice/sessions', headers: auth() })
  assert.equal(all.statusCode, 200, all.body)
  const allAckAt = now()
  // Before anyone asks again (an answer read from Postgres would fill the keys anew).
  await eventually(
    async () => (await Promise.all(rest.map((s) => peek.exists(s.key)))).every((n) => n === 0),
    10_000,
    'their Redis copies deleted on every shard',
  )
  for (const s of rest) assert.equal(await ask('A', A, s.token), false)
  for (const s of rest) {
    await eventually(async () => (await ask('B', B, s.token)) === false, 10_000, 'B sees the revocations')
  }
  for (const s of rest) assert.deepEqual(lateActive(answers, s.token, 'A', allAckAt), [])
  assert.equal((await introspect(B, bob.token)).active, true, "bob's session is untouched")
  // No command was refused for spanning slots (a DEL of all the keys, or a MULTI, would be).
  for (const log of [logs.A, logs.B]) assert.doesNotMatch(log.text(), /CROSSSLOT|same slot/)
  t.diagnostic(
    `${alice.length + 1} sessions over 3 shards; B answered ${hits} of ${tokens.length} from Redis`,
  )
})

test('failed authentications counted on one replica count on the other through the cluster', async (t) => {
  const cluster = await sharedCluster()
  const peek = inspector(t, cluster)
  const limit = 5
  const { A, B, prefix } = await replicasOn(t, cluster, { authFailureLimit: limit, trustProxy: '127.0.0.1' })
  const list = (app: FastifyInstance, authorization: string, from: string) =>
    app.inject({
      method: 'GET',
      url: '/v1/users/alice/sessions',
      headers: { authorization, 'x-forwarded-for': from },
    })
  const guess = () => `Bearer sak_${randomBytes(32).toString('base64url')}`
  const basic = (id: string) =>
    `Basic ${Buffer.from(`${id}:${randomBytes(32).toString('base64url')}`).toString('base64')}`

  // An address spends its budget on A; B refuses it.
  const attacker = '198.51.100.60'
  for (let i = 0; i < limit; i++) assert.equal((await list(A, guess(), attacker)).statusCode, 401)
  const refused = await list(B, guess(), attacker)
  assert.equal(refused.statusCode, 429, refused.body)
  assert.equal(refused.json().error.code, 'RATE_LIMITED')
  // A key id guessed on B from many addresses; A refuses it.
  for (let i = 0; i < limit; i++) {
    assert.equal((await list(B, basic('env-admin'), `192.0.2.${i + 1}`)).statusCode, 401)
  }
  assert.equal((await list(A, basic('env-admin'), '192.0.2.100')).statusCode, 429)
  // The counts live in the cluster (one key per subject), and good keys still pass.
  assert.ok(await peek.exists(`${prefix}auth-failures:addr:${attacker}`), 'the address is counted in Redis')
  assert.equal((await list(B, `Bearer ${ADMIN_KEY}`, attacker)).statusCode, 200)
})

test('a primary killed: no revoked session answered active, every question answered, the cache back after the failover', async (t) => {
  const cluster = await privateCluster(t, 1)
  const peek = inspector(t, cluster)
  const { A, B, prefix } = await replicasOn(t, cluster)

  // Sessions on every shard; the shard of the first one dies.
  const opened = await sessionsOnEveryShard(A, cluster, prefix, 'alice', 3)
  const doomed = (opened[0] as Opened).shard
  const onDoomed = opened.filter((s) => s.shard === doomed)
  const elsewhere = opened.filter((s) => s.shard !== doomed)
  // Revoked just before the kill (its delete may or may not reach the replica), and while it is down
  // (its delete fails: the promoted replica keeps the old copy), on the dying shard and on another.
  const [before, during, liveDoomed] = onDoomed as [Opened, Opened, Opened]
  const [duringElsewhere, ...liveElsewhere] = elsewhere as [Opened, ...Opened[]]
  const victims = [before, during, duringElsewhere]
  const live = [liveDoomed, ...liveElsewhere]
  const tokens = [...live, ...victims].map((s) => s.token)
  await cachedInCluster(peek, prefix, [A, B], tokens)
  // What a replica that missed the deletes would hold: put back after the failover.
  const oldCopies = await Promise.all(victims.map(async (s) => [s.key, await peek.get(s.key)] as const))

  const acks = new Map<string, { by: string; at: number }>()
  const revokeThrough = async (name: string, app: FastifyInstance, s: Opened) => {
    const res = await revoke(app, s.session.id)
    acks.set(s.token, { by: name, at: now() })
    assert.equal(res.statusCode, 200, res.body)
  }

  const stream = introspectionStream({ A, B }, tokens, 10)
  let answers: Answer[] = []
  try {
    await sleep(L1_TTL_MS)
    await revokeThrough('A', A, before)
    const killedAt = now()
    await doomed.kill()
    await revokeThrough('B', B, during)
    await revokeThrough('A', A, duringElsewhere)

    // The replica takes over (the cluster's node timeout, then an election).
    await eventually(
      async () => {
        await sleep(100) // each look runs redis-cli twice
        return (await cluster.primaryOf(liveDoomed.key).catch(() => doomed)) !== doomed
      },
      30_000 + 3 * NODE_TIMEOUT_MS,
      'a replica promoted in place of the killed primary',
    )
    await cluster.healthy(3, 30_000)
    const failedOverAt = now()
    // Both apps find the promoted primary (slots are reread every 2 s, and on MOVED).
    for (const [name, app] of Object.entries({ A, B })) {
      await eventually(
        async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().redis === 'up',
        15_000,
        `${name} sees Redis up after the failover`,
      )
    }
    // The shard that failed over is written again: a live copy deleted there is filled anew.
    await peek.del(liveDoomed.key)
    await eventually(
      async () => activeInRedis(await peek.get(liveDoomed.key)),
      15_000,
      'a live session cached again on the promoted primary',
    )
    const recoveredAt = now()
    // Old copies of the revoked sessions come back, as from a replica that missed the deletes.
    for (const [key, value] of oldCopies) if (value) await peek.set(key, value, 'PX', 60_000)
    const restoredAt = now()
    const hitsBefore = {
      A: await appMetric(A, 'session_cache_hits_total', { level: 'l2', kind: 'positive' }),
      B: await appMetric(B, 'session_cache_hits_total', { level: 'l2', kind: 'positive' }),
    }
    for (const [name, app] of Object.entries({ A, B })) {
      await eventually(
        async () =>
          (await appMetric(app, 'session_cache_hits_total', { level: 'l2', kind: 'positive' })) >
          hitsBefore[name as 'A' | 'B'],
        15_000,
        `${name} serves from Redis again`,
      )
    }
    // Long enough for every L1 entry to lapse several times over the old copies.
    await sleep(4 * L1_TTL_MS)
    answers = await stream.stop()

    assert.deepEqual(
      answers.filter((a) => a.status !== 200).map((a) => `${a.app} ${a.status}`),
      [],
      'every introspection answered 200 (Postgres is there throughout)',
    )
    for (const name of ['A', 'B']) {
      const meanwhile = answers.filter((a) => a.app === name && a.start > killedAt && a.end < failedOverAt)
      assert.ok(meanwhile.length > 0, `${name} answered nothing while the shard was down`)
    }
    const liveTokens = new Set(live.map((s) => s.token))
    assert.deepEqual(
      answers.filter((a) => liveTokens.has(a.token) && a.active !== true).map((a) => a.app),
      [],
      'live sessions always active',
    )
    for (const victim of victims) {
      const ack = acks.get(victim.token)
      assert.ok(ack)
      assert.deepEqual(lateActive(answers, victim.token, ack.by, ack.at), [], `revoked through ${ack.by}`)
      const tail = answers.filter((a) => a.token === victim.token && a.start > restoredAt)
      assert.ok(
        tail.length > 0 && tail.every((a) => a.active === false),
        'inactive after the old copies came back',
      )
    }
    const l2Rejected =
      (await appMetric(A, 'session_cache_l2_rejected_total')) +
      (await appMetric(B, 'session_cache_l2_rejected_total'))
    t.diagnostic(
      `${answers.length} introspections; failover ${ms(failedOverAt - killedAt)} after the kill, ` +
        `cache refilled ${ms(recoveredAt - failedOverAt)} after it; Redis copies refused: ${l2Rejected}`,
    )
  } finally {
    await stream.stop().catch((err: Error) => t.diagnostic(err.message))
  }
})
