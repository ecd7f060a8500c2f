import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { type TestContext, test } from 'node:test'
import { jsonClient } from './fixtures/http-json.ts'
import { type Answer, type LoadSession, startIntrospectionLoad } from './fixtures/introspection-load.ts'
import { metricSum } from './fixtures/metrics.ts'
import { type PrivateRedis, startRedisServer } from './fixtures/redis-server.ts'
import { createReplica, type Replica } from './fixtures/replica.ts'
import { ADMIN_KEY, DATABASE_URL, dropSchema, TEST_KEK, uniqueSchema } from './helper.ts'

/**
 * The promise under test, whatever fails: no replica answers `active: true`
 * for a session revoked or suspended more than L1_TTL_MS before the question
 * was sent; a replica that cannot prove it is fresh asks Postgres, and one that
 * cannot reach Postgres answers 503, never another 5xx.
 *
 * Three replicas (child processes) share one schema of the real Postgres and
 * one private redis-server, each through proxies of its own, so a cell can
 * break one replica's path or everyone's. Each cell opens fresh sessions,
 * warms every replica's cache (and so Redis), breaks something, ends sessions
 * through replica A while a load introspects every session on every replica,
 * heals, and checks that the replicas recover without a restart.
 *
 * Only bounds that follow from the configuration are asserted: a slow machine
 * makes answers later, which can never turn a correct answer into a violation
 * (the bound is measured from the ack to the moment the question was sent).
 * FAULT_MATRIX_ROUNDS=5 repeats the matrix (`npm run test:faults`).
 */

const L1_TTL_MS = 1000
const L2_TTL_MS = 60_000
// How long the load keeps asking after the last ack: three L1 lifetimes and a little.
const OBSERVE_MS = 3 * L1_TTL_MS + 500
// A fault healed this long after the acks, so any stale answer it lets through comes after the bound.
const HEAL_AFTER_ACKS_MS = L1_TTL_MS + 500
// Generous on purpose: recovery waits for reconnect backoffs on a loaded 2-core machine.
const RECOVERY_DEADLINE_MS = 30_000
const START_DEADLINE_MS = 60_000
const REQUEST_TIMEOUT_MS = 15_000
const ROUNDS = Math.max(1, Number(process.env.FAULT_MATRIX_ROUNDS ?? 1) || 1)
// Per cell: the first four are revoked, the next two suspended, the last two stay live.
const REVOKED = 4
const SUSPENDED = 2
const LIVE = 2

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => performance.now()
const headers = { authorization: `Bearer ${ADMIN_KEY}` }
// Control calls get a connection each: none may race a server closing an idle kept-alive one.
const control = jsonClient({ headers, timeoutMs: REQUEST_TIMEOUT_MS, keepAlive: false })

interface Cluster {
  redis: PrivateRedis
  a: Replica
  b: Replica
  c: Replica
  all: Replica[]
}

interface Cell {
  name: string
  /** Breaks something before the sessions end. */
  fault(cluster: Cluster): Promise<void>
  /** Runs right after the last ack: a kill, a cut, an early heal. */
  afterAcks?(cluster: Cluster): Promise<void>
  /** Runs once the cell is judged (cell 5 starts a replacement for the replica it killed). */
  finish?(cluster: Cluster): Promise<void>
}

const redisProxies = (cluster: Cluster) => cluster.all.map((replica) => replica.redis)
const postgresProxies = (cluster: Cluster) => cluster.all.map((replica) => replica.postgres)

async function cutAll(proxies: Array<{ cut(): Promise<void> }>) {
  await Promise.all(proxies.map((proxy) => proxy.cut()))
}

async function restoreAll(proxies: Array<{ restore(): Promise<void> }>) {
  await Promise.all(proxies.map((proxy) => proxy.restore()))
}

/** Puts back whatever a cell broke; safe to call when nothing is broken. */
async function healAll(cluster: Cluster) {
  if (!cluster.redis.running()) await cluster.redis.start()
  await restoreAll([...redisProxies(cluster), ...postgresProxies(cluster)])
}

const CELLS: Cell[] = [
  {
    name: 'cell 1: Redis down for all, revoke through A',
    fault: (cluster) => cutAll(redisProxies(cluster)),
  },
  {
    // The known bug: B and C kept answering from Redis entries A could not replace.
    name: 'cell 2: Redis cut for A only, revoke through A',
    fault: (cluster) => cluster.a.redis.cut(),
  },
  {
    // Redis keeps the entries from before the revocation, and comes back with them.
    name: 'cell 3: Redis cut for all, back with its data',
    fault: (cluster) => cutAll(redisProxies(cluster)),
    afterAcks: async (cluster) => {
      await sleep(HEAL_AFTER_ACKS_MS)
      await restoreAll(redisProxies(cluster))
    },
  },
  {
    // The same as a partition: commands hang until they time out instead of failing at once.
    name: 'cell 3b: Redis partitioned from all (blackhole), back with its data',
    fault: async (cluster) => {
      for (const proxy of redisProxies(cluster)) proxy.blackhole()
    },
    afterAcks: async (cluster) => {
      await sleep(HEAL_AFTER_ACKS_MS)
      await restoreAll(redisProxies(cluster))
    },
  },
  {
    name: 'cell 4: Redis stopped during the revocations, restarted empty',
    fault: (cluster) => cluster.redis.stop(),
    afterAcks: async (cluster) => {
      await sleep(HEAL_AFTER_ACKS_MS)
      await cluster.redis.start()
    },
  },
  {
    name: 'cell 5: A killed right after revoking while Redis is away',
    fault: (cluster) => cutAll(redisProxies(cluster)),
    afterAcks: async (cluster) => {
      await cluster.a.kill()
      await sleep(HEAL_AFTER_ACKS_MS)
      await restoreAll(redisProxies(cluster))
    },
    // The only restart of the matrix: later cells need three replicas again.
    finish: async (cluster) => {
      if (!cluster.a.running()) await cluster.a.start()
    },
  },
  {
    name: 'cell 6: B cut from Postgres, revoke through A',
    fault: (cluster) => cluster.b.postgres.cut(),
  },
  {
    name: 'cell 7: Postgres cut for all right after revoking through A',
    fault: async () => {},
    afterAcks: (cluster) => cutAll(postgresProxies(cluster)),
  },
]

/** Why a replica is not fully back (not ready, Redis not up, invalidation feed not live); null when it is. */
async function unreadiness(replica: Replica): Promise<string | null> {
  try {
    const reply = await control.send(replica.port, 'GET', '/readyz')
    const body = reply.body as { redis?: string; invalidation_feed?: string } | undefined
    if (reply.status === 200 && body?.redis === 'up' && body.invalidation_feed === 'live') return null
    return `${replica.name} /readyz ${reply.status} ${reply.text}`
  } catch (err) {
    return `${replica.name} /readyz: ${(err as Error).message}`
  }
}

async function introspectOnce(replica: Replica, token: string) {
  return control.send(replica.port, 'POST', '/v1/sessions/introspect', { token })
}

/** What is still wrong after a heal: readiness, and sessions not answering as they should. */
async function recoveryProblems(replicas: Replica[], sessions: LoadSession[], ended: Map<string, number>) {
  const problems: string[] = []
  for (const replica of replicas) {
    const why = await unreadiness(replica)
    if (why) problems.push(why)
    for (const session of sessions) {
      const expected = !ended.has(session.id)
      try {
        const reply = await introspectOnce(replica, session.token)
        const active = (reply.body as { active?: unknown } | undefined)?.active
        if (reply.status !== 200 || active !== expected) {
          problems.push(
            `${replica.name} ${session.id}: expected active ${expected}, got ${reply.status} ${reply.text}`,
          )
        }
      } catch (err) {
        problems.push(`${replica.name} ${session.id}: ${(err as Error).message}`)
      }
    }
  }
  return problems
}

/** Polls `check` until it reports nothing, or gives up at the deadline with what it last reported. */
async function pollUntilClean(check: () => Promise<string[]>, deadlineMs: number) {
  const started = now()
  for (;;) {
    const problems = await check()
    if (problems.length === 0 || now() - started > deadlineMs) return { problems, tookMs: now() - started }
    await sleep(250)
  }
}

async function openSessions(replica: Replica, label: string, count: number): Promise<LoadSession[]> {
  const sessions: LoadSession[] = []
  for (let i = 0; i < count; i++) {
    const reply = await control.send(replica.port, 'POST', '/v1/sessions', { user_id: `${label}-${i}` })
    assert.equal(reply.status, 201, `open a session on ${replica.name}: ${reply.text}`)
    const body = reply.body as { token: string; session: { id: string } }
    sessions.push({ id: body.session.id, token: body.token })
  }
  return sessions
}

/** Introspects every session on every replica until it is active there, so L1 and Redis both hold it. */
async function warm(replicas: Replica[], sessions: LoadSession[]) {
  const { problems } = await pollUntilClean(async () => {
    const cold: string[] = []
    for (const replica of replicas) {
      for (const session of sessions) {
        const reply = await introspectOnce(replica, session.token)
        if ((reply.body as { active?: unknown } | undefined)?.active !== true) {
          cold.push(`${replica.name} ${session.id}: ${reply.status} ${reply.text}`)
        }
      }
    }
    return cold
  }, RECOVERY_DEADLINE_MS)
  assert.deepEqual(problems, [], 'every session answers active on every replica before the fault')
}

/** Revokes and suspends through one replica, all at once; returns each session's ack time. */
async function endSessions(replica: Replica, revoke: LoadSession[], suspend: LoadSession[]) {
  const ended = new Map<string, number>()
  const end = async (session: LoadSession, how: 'revoke' | 'suspend') => {
    const reply =
      how === 'revoke'
        ? await control.send(replica.port, 'DELETE', `/v1/sessions/${session.id}`)
        : await control.send(replica.port, 'POST', `/v1/sessions/${session.id}/suspend`, { reason: 'test' })
    const ackAt = now()
    assert.equal(reply.status, 200, `${how} ${session.id} through ${replica.name}: ${reply.text}`)
    ended.set(session.id, ackAt)
  }
  await Promise.all([
    ...revoke.map((session) => end(session, 'revoke')),
    ...suspend.map((session) => end(session, 'suspend')),
  ])
  return ended
}

/** Sum of `session_cache_hits_total{level="l2"}` of one replica; null when it cannot be read. */
async function l2Hits(replica: Replica): Promise<number | null> {
  if (!replica.running()) return null
  try {
    const reply = await control.send(replica.port, 'GET', '/metrics')
    return metricSum(reply.text, 'session_cache_hits_total', { level: 'l2' })
  } catch {
    return null
  }
}

interface Judgement {
  checked: number
  afterBound: number
  /** Active answers, sent more than L1_TTL_MS after the ack, about a revoked or suspended session. */
  violations: Answer[]
  /** Latest active answer's send time minus its session's ack, over ended sessions (≤ 0: none after the ack). */
  worstStalenessMs: number
  unavailable: number
  /** Anything but 200 and 503 SERVICE_UNAVAILABLE. */
  wrongStatus: Answer[]
  /** No usable answer (connection error, timeout, malformed body), except from a replica killed on purpose. */
  failures: Answer[]
  /** A live session answered inactive. */
  liveInactive: Answer[]
}

/** A replica killed on purpose may drop the requests it had when it died, and those only. */
function excused(answer: Answer, replicas: Replica[]): boolean {
  const killedAt = replicas.find((replica) => replica.name === answer.replica)?.killedAt() ?? null
  return answer.status === 0 && killedAt !== null && answer.receivedAt >= killedAt
}

function judge(answers: Answer[], ended: Map<string, number>, replicas: Replica[]): Judgement {
  const verdict: Judgement = {
    checked: answers.length,
    afterBound: 0,
    violations: [],
    worstStalenessMs: Number.NEGATIVE_INFINITY,
    unavailable: 0,
    wrongStatus: [],
    failures: [],
    liveInactive: [],
  }
  for (const answer of answers) {
    if (answer.failure !== undefined) {
      if (!excused(answer, replicas)) verdict.failures.push(answer)
      continue
    }
    if (answer.status === 503 && answer.code === 'SERVICE_UNAVAILABLE') verdict.unavailable++
    else if (answer.status !== 200) verdict.wrongStatus.push(answer)
    const ackAt = ended.get(answer.session)
    if (ackAt === undefined) {
      if (answer.active === false) verdict.liveInactive.push(answer)
      continue
    }
    const pastBound = answer.sentAt > ackAt + L1_TTL_MS
    if (pastBound) verdict.afterBound++
    if (answer.active !== true) continue
    verdict.worstStalenessMs = Math.max(verdict.worstStalenessMs, answer.sentAt - ackAt)
    if (pastBound) verdict.violations.push(answer)
  }
  if (verdict.worstStalenessMs === Number.NEGATIVE_INFINITY) verdict.worstStalenessMs = 0
  return verdict
}

const ms = (x: number) => `${Math.round(x)} ms`

/** How many answers of `answers` each replica gave, e.g. "B 400, C 412". */
function perReplica(answers: Answer[]): string {
  const counts = new Map<string, number>()
  for (const answer of answers) counts.set(answer.replica, (counts.get(answer.replica) ?? 0) + 1)
  return [...counts].map(([name, count]) => `${name} ${count}`).join(', ')
}

function describeAnswer(answer: Answer, ended: Map<string, number>): string {
  const ackAt = ended.get(answer.session)
  const when = ackAt === undefined ? '' : ` sent ${ms(answer.sentAt - ackAt)} after the ack`
  const what = answer.failure ?? `${answer.status} active=${answer.active} code=${answer.code}`
  return `${answer.replica} ${answer.session}${when}: ${what}`
}

const tail = (replica: Replica) => `--- ${replica.name} output ---\n${replica.output().slice(-2000)}`

/** Everything wrong with a cell, one line each (with the replicas' output where it helps). */
function problemsOf(
  verdict: Judgement,
  ended: Map<string, number>,
  recovery: string[],
  replicas: Replica[],
): string[] {
  const problems: string[] = []
  const examples = (answers: Answer[]) =>
    answers
      .slice(0, 3)
      .map((answer) => describeAnswer(answer, ended))
      .join('; ')
  if (verdict.violations.length > 0) {
    problems.push(
      `${verdict.violations.length} answers active more than ${L1_TTL_MS} ms after the session ended ` +
        `(${perReplica(verdict.violations)}; worst ${ms(verdict.worstStalenessMs)}), e.g. ${examples(verdict.violations)}`,
    )
  }
  if (verdict.wrongStatus.length > 0) {
    problems.push(
      `${verdict.wrongStatus.length} answers neither 200 nor 503: ${examples(verdict.wrongStatus)}`,
    )
  }
  if (verdict.failures.length > 0) {
    problems.push(
      `${verdict.failures.length} requests without a usable answer: ${examples(verdict.failures)}`,
    )
  }
  if (verdict.liveInactive.length > 0) {
    problems.push(
      `${verdict.liveInactive.length} live sessions answered inactive: ${examples(verdict.liveInactive)}`,
    )
  }
  if (recovery.length > 0) {
    problems.push(`not recovered within ${RECOVERY_DEADLINE_MS} ms: ${recovery.slice(0, 5).join('; ')}`)
  }
  const noisy = new Set([...verdict.wrongStatus, ...verdict.failures].map((answer) => answer.replica))
  const crashed = replicas.filter((replica) => !replica.running() && replica.killedAt() === null)
  for (const replica of crashed) problems.push(`${replica.name} exited without being killed`)
  for (const replica of replicas) {
    if (noisy.has(replica.name) || crashed.includes(replica) || recovery.length > 0)
      problems.push(tail(replica))
  }
  return problems
}

async function runCell(t: TestContext, cluster: Cluster, cell: Cell, label: string) {
  const ready = await pollUntilClean(
    async () => (await Promise.all(cluster.all.map(unreadiness))).filter((why) => why !== null),
    RECOVERY_DEADLINE_MS,
  )
  assert.deepEqual(ready.problems, [], 'every replica is ready before the cell')

  const sessions = await openSessions(cluster.a, label, REVOKED + SUSPENDED + LIVE)
  await warm(cluster.all, sessions)
  const hitsBefore = await Promise.all(cluster.all.map(l2Hits))
  const load = startIntrospectionLoad({
    targets: cluster.all,
    sessions,
    headers,
    loopsPerTarget: 3,
    pauseMs: 2,
    timeoutMs: REQUEST_TIMEOUT_MS,
  })
  let ended = new Map<string, number>()
  let recovery: { problems: string[]; tookMs: number }
  try {
    // Some answers from before the fault, so the cell also shows the switch into it.
    await sleep(300)
    await cell.fault(cluster)
    ended = await endSessions(
      cluster.a,
      sessions.slice(0, REVOKED),
      sessions.slice(REVOKED, REVOKED + SUSPENDED),
    )
    await cell.afterAcks?.(cluster)
    await sleep(OBSERVE_MS)
    await healAll(cluster)
    const live = cluster.all.filter((replica) => replica.running())
    recovery = await pollUntilClean(() => recoveryProblems(live, sessions, ended), RECOVERY_DEADLINE_MS)
  } finally {
    await healAll(cluster)
    await load.stop()
  }

  const hitsAfter = await Promise.all(cluster.all.map(l2Hits))
  const verdict = judge(load.answers, ended, cluster.all)
  const l2 = cluster.all.map((replica, i) => {
    const before = hitsBefore[i]
    const after = hitsAfter[i]
    return `${replica.name} ${before == null || after == null ? '-' : after - before}`
  })
  t.diagnostic(
    `${cell.name}: ${verdict.checked} answers checked, ${verdict.afterBound} after the bound, ` +
      `${verdict.violations.length} violations${verdict.violations.length > 0 ? ` (${perReplica(verdict.violations)})` : ''}, ` +
      `worst staleness ${ms(verdict.worstStalenessMs)}, ${verdict.unavailable} 503s, ` +
      `recovery ${recovery.problems.length === 0 ? `in ${ms(recovery.tookMs)}` : 'FAILED'}, L2 hits ${l2.join(' ')}`,
  )
  assert.deepEqual(problemsOf(verdict, ended, recovery.problems, cluster.all), [])
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const schema = uniqueSchema()
  const redis = await startRedisServer()
  const replicas: Replica[] = []
  t.after(async () => {
    for (const replica of replicas) await replica.close()
    await redis.stop()
    await dropSchema(schema)
  })
  const env = {
    DB_SCHEMA: schema,
    REDIS_KEY_PREFIX: `fm_${randomBytes(4).toString('hex')}:`,
    ADMIN_API_KEY: ADMIN_KEY,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    L1_TTL_MS: String(L1_TTL_MS),
    L2_TTL_MS: String(L2_TTL_MS),
    LOG_LEVEL: 'warn',
    PURGE_INTERVAL_MS: '0',
    WEBHOOK_POLL_MS: '0',
  }
  for (const name of ['A', 'B', 'C']) {
    const options = {
      name,
      databaseUrl: DATABASE_URL,
      redisPort: redis.port,
      env,
      startTimeoutMs: START_DEADLINE_MS,
    }
    replicas.push(await createReplica(options))
  }
  const [a, b, c] = replicas as [Replica, Replica, Replica]
  // A applies the migrations; the others start once the schema is there.
  await a.start()
  await Promise.all([b.start(), c.start()])
  return { redis, a, b, c, all: replicas }
}

test('fault matrix: no replica answers active for a session ended more than L1_TTL_MS ago, whatever fails', async (t) => {
  const cluster = await startCluster(t)
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [i, cell] of CELLS.entries()) {
      const name = ROUNDS > 1 ? `round ${round}, ${cell.name}` : cell.name
      await t.test(name, async (st) => {
        try {
          await runCell(st, cluster, { ...cell, name }, `fm-r${round}-c${i + 1}`)
        } finally {
          await cell.finish?.(cluster)
        }
      })
    }
  }
})
