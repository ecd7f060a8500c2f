/**
 * Many replicas behind a real load balancer (issue 20): three `serve`
 * processes on one schema and one Redis key prefix, behind an nginx
 * `upstream` (round robin) this file starts with its own config. Under a
 * steady introspection load through nginx, sessions are revoked through every
 * replica in turn, directly and through nginx, and every answer is judged
 * against the README's promise ("Caching and consistency"): no replica answers
 * `active: true` for a session revoked more than L1_TTL_MS before the question;
 * the revoking replica itself (it drops its entry before it replies) not at
 * all after its ack; live sessions stay active. A second test kills a replica
 * mid-load: nginx fails over and the promise still holds.
 *
 * Bounds come from the configuration, never from how fast the machine is: a
 * slow machine only makes answers later, and an answer is judged by when its
 * question was sent. Waits for "enough answers" are bounded and fail with what
 * was missing. Needs the `nginx` binary: skipped without it, except on CI.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Agent, type IncomingHttpHeaders, request } from 'node:http'
import { performance } from 'node:perf_hooks'
import { after, type TestContext, test } from 'node:test'
import { metricSum } from './fixtures/metrics.ts'
import { findNginx, type PrivateNginx, privatePaths, startNginxWith } from './fixtures/nginx.ts'
import { createReplica, type Replica } from './fixtures/replica.ts'
import { ADMIN_KEY, DATABASE_URL, dropSchema, REDIS_URL, TEST_KEK, uniqueSchema } from './helper.ts'

// The staleness bound: L1_TTL_MS as the replicas are configured (the service's default).
const L1_TTL_MS = 1000
const REQUEST_TIMEOUT_MS = 15_000
const START_DEADLINE_MS = 60_000
// Waits for the load to have asked what a check needs; generous, since the machine may be busy.
const COVERAGE_DEADLINE_MS = 30_000
const READY_DEADLINE_MS = 30_000
const CLEANUP_STEP_MS = 20_000
// A modest load for a loaded 2-core machine: a few concurrent clients with a pause between requests.
const CLIENTS = 6
const PAUSE_MS = 2
// Time between two revocations, so each lands in the middle of the load.
const REVOKE_SPACING_MS = 100

const NGINX = findNginx()
const INSTALL_HINT =
  'nginx is not installed: apt-get install nginx-light (Debian/Ubuntu), brew install nginx (macOS); .ci/run installs it on CI'
const skip = NGINX || process.env.CI === 'true' ? false : INSTALL_HINT

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => performance.now()
const ms = (x: number) => `${Math.round(x)} ms`
const headers = { authorization: `Bearer ${ADMIN_KEY}` }

/** `promise`, or a rejection saying `what` did not finish within `timeoutMs`: no wait in this file is unbounded. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms(timeoutMs)}`)), timeoutMs)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: unknown
  text: string
}

/** One JSON request to 127.0.0.1:`port`; rejects on a connection error or after REQUEST_TIMEOUT_MS. */
function send(agent: Agent, port: number, method: string, path: string, body?: unknown): Promise<Reply> {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  const sent: Record<string, string> = { ...headers }
  if (payload !== undefined) sent['content-type'] = 'application/json'
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: sent, agent }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => {
        let parsed: unknown
        try {
          parsed = JSON.parse(text)
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed, text })
      })
      res.on('error', reject)
    })
    req.setTimeout(REQUEST_TIMEOUT_MS, () =>
      req.destroy(new Error(`no reply within ${REQUEST_TIMEOUT_MS} ms`)),
    )
    req.on('error', reject)
    req.end(payload)
  })
}

// Control calls (open, revoke, metrics, readiness) get a connection each; the load keeps its own alive.
const control = new Agent({ keepAlive: false })

interface Cluster {
  replicas: [Replica, Replica, Replica]
  nginx: PrivateNginx
  /** The replica nginx says answered (the last address of X-Upstream), by its name; null when none did. */
  upstreamOf(reply: { headers: IncomingHttpHeaders }): string | null
}

/**
 * An nginx `upstream` of the replicas, round robin (nginx's default), one
 * worker. Introspection is a read, so nginx may send it again to the next
 * replica when one fails (`non_idempotent`: nginx retries no POST otherwise);
 * DELETE is retried anyway. X-Upstream says which replica answered.
 */
function upstreamConfig(ports: number[], port: number, dir: string): string {
  const servers = ports.map((p) => `        server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join('\n')
  return `worker_processes 1;
events {
    worker_connections 512;
}
http {
${privatePaths(dir)}
    upstream session_authority {
${servers}
        keepalive 16;
    }
    server {
        listen 127.0.0.1:${port};
        access_log off;
        # startNginxWith's readiness probe: answered by nginx itself.
        location = /_session_authority {
            return 404;
        }
        location / {
            proxy_pass http://session_authority;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout non_idempotent;
            proxy_connect_timeout 2s;
            proxy_read_timeout 15s;
            add_header X-Upstream $upstream_addr always;
        }
    }
}
`
}

// What the file started, stopped in this order (nginx, replicas, schema last) by the test's t.after and
// again by the file's `after`: a failed or timed-out test still leaves no process or schema behind.
const started: { nginx: PrivateNginx | null; replicas: Replica[]; schema: string | null } = {
  nginx: null,
  replicas: [],
  schema: null,
}
let cleaning: Promise<void> | null = null

function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    const errors: string[] = []
    const step = async (what: string, run: () => Promise<unknown>) => {
      try {
        await within(run(), CLEANUP_STEP_MS, what)
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`)
      }
    }
    const { nginx, replicas, schema } = started
    if (nginx) await step('stopping nginx', () => nginx.stop())
    for (const replica of replicas) await step(`closing replica ${replica.name}`, () => replica.close())
    // Last: dropping the schema under a replica still running can deadlock with its queries.
    if (schema) await step(`dropping schema ${schema}`, () => dropSchema(schema))
    control.destroy()
    if (errors.length > 0) throw new Error(errors.join('; '))
  })()
  return cleaning
}
after(() => cleanUp())

async function startCluster(t: TestContext): Promise<Cluster> {
  t.after(() => cleanUp())
  const schema = uniqueSchema()
  started.schema = schema
  const env = {
    DB_SCHEMA: schema,
    REDIS_KEY_PREFIX: `rn_${randomBytes(4).toString('hex')}:`,
    ADMIN_API_KEY: ADMIN_KEY,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    L1_TTL_MS: String(L1_TTL_MS),
    LOG_LEVEL: 'warn',
    PURGE_INTERVAL_MS: '0',
    WEBHOOK_POLL_MS: '0',
  }
  const redisPort = Number(new URL(REDIS_URL).port || 6379)
  for (const name of ['A', 'B', 'C']) {
    const replica = await createReplica({
      name,
      databaseUrl: DATABASE_URL,
      redisPort,
      env,
      startTimeoutMs: START_DEADLINE_MS,
    })
    started.replicas.push(replica)
  }
  const replicas = started.replicas as [Replica, Replica, Replica]
  const [a, b, c] = replicas
  // A applies the migrations; the others start once the schema is there.
  await a.start()
  await Promise.all([b.start(), c.start()])
  const nginx = await startNginxWith((port, dir) =>
    upstreamConfig(
      replicas.map((r) => r.port),
      port,
      dir,
    ),
  )
  started.nginx = nginx
  const names = new Map(replicas.map((r) => [`127.0.0.1:${r.port}`, r.name]))
  return {
    replicas,
    nginx,
    upstreamOf(reply) {
      const tried = String(reply.headers['x-upstream'] ?? '').split(',')
      return names.get(tried[tried.length - 1]?.trim() ?? '') ?? null
    },
  }
}

/** Waits until every running replica is ready with its invalidation feed live (the normal case). */
async function allReady(cluster: Cluster) {
  const deadline = now() + READY_DEADLINE_MS
  let why: string[] = []
  for (;;) {
    why = []
    for (const replica of cluster.replicas.filter((r) => r.running())) {
      try {
        const reply = await send(control, replica.port, 'GET', '/readyz')
        const feed = (reply.body as { invalidation_feed?: string } | undefined)?.invalidation_feed
        if (reply.status !== 200 || feed !== 'live')
          why.push(`${replica.name}: ${reply.status} ${reply.text}`)
      } catch (err) {
        why.push(`${replica.name}: ${(err as Error).message}`)
      }
    }
    if (why.length === 0) return
    if (now() > deadline) assert.fail(`replicas not ready within ${ms(READY_DEADLINE_MS)}: ${why.join('; ')}`)
    await sleep(100)
  }
}

interface Session {
  id: string
  token: string
}

async function openSessions(cluster: Cluster, label: string, count: number): Promise<Session[]> {
  const sessions: Session[] = []
  for (let i = 0; i < count; i++) {
    const reply = await send(control, cluster.nginx.port, 'POST', '/v1/sessions', {
      user_id: `${label}-${i}`,
    })
    assert.equal(reply.status, 201, `open a session through nginx: ${reply.text}`)
    const body = reply.body as { token: string; session: { id: string } }
    sessions.push({ id: body.session.id, token: body.token })
  }
  return sessions
}

/** One introspection through nginx as the test saw it (times are performance.now()). */
interface Answer {
  session: string
  /** The replica that answered (X-Upstream); null without an upstream answer. */
  replica: string | null
  sentAt: number
  receivedAt: number
  /** HTTP status; 0 when no HTTP answer came (see `failure`). */
  status: number
  active: boolean | undefined
  failure: string | undefined
}

/**
 * CLIENTS loops introspecting every session through nginx over kept-alive
 * connections, each starting at a different session, recording every answer.
 */
function startLoad(cluster: Cluster, sessions: Session[]) {
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  const answers: Answer[] = []
  let running = true

  async function ask(session: Session): Promise<Answer> {
    const sentAt = now()
    try {
      const reply = await send(agent, cluster.nginx.port, 'POST', '/v1/sessions/introspect', {
        token: session.token,
      })
      const active = (reply.body as { active?: unknown } | undefined)?.active
      const usable = reply.status !== 200 || typeof active === 'boolean'
      return {
        session: session.id,
        replica: cluster.upstreamOf(reply),
        sentAt,
        receivedAt: now(),
        status: reply.status,
        active: typeof active === 'boolean' ? active : undefined,
        failure: usable ? undefined : `a 200 without a boolean active: ${reply.text.slice(0, 200)}`,
      }
    } catch (err) {
      const failure = `no answer: ${(err as Error).message}`
      return {
        session: session.id,
        replica: null,
        sentAt,
        receivedAt: now(),
        status: 0,
        active: undefined,
        failure,
      }
    }
  }

  const step = Math.max(1, Math.floor(sessions.length / CLIENTS))
  const loops = Array.from({ length: CLIENTS }, async (_, n) => {
    let i = n * step
    while (running) {
      const session = sessions[i++ % sessions.length]
      if (session) answers.push(await ask(session))
      await sleep(PAUSE_MS)
    }
  })

  let stopping: Promise<void> | null = null
  return {
    answers,
    /** Stops asking and waits (bounded) for the requests in flight. */
    stop(): Promise<void> {
      running = false
      if (!stopping) {
        stopping = within(Promise.all(loops), REQUEST_TIMEOUT_MS + 5000, 'the load stopping')
          .then(() => {})
          .finally(() => agent.destroy())
      }
      return stopping
    },
  }
}

type Load = ReturnType<typeof startLoad>

/** Waits until `missing()` (what the load has not shown yet) is empty; fails with what is still missing. */
async function until(missing: () => string[], what: string, timeoutMs = COVERAGE_DEADLINE_MS) {
  const deadline = now() + timeoutMs
  for (;;) {
    const left = missing()
    if (left.length === 0) return
    if (now() > deadline) {
      assert.fail(
        `${what} within ${ms(timeoutMs)}: still missing ${left.length}, e.g. ${left.slice(0, 5).join('; ')}`,
      )
    }
    await sleep(50)
  }
}

/** Sessions × replicas not yet answered active (so every replica's L1 and Redis hold every session). */
function notWarm(load: Load, sessions: Session[], replicas: string[]) {
  const seen = new Set(load.answers.filter((a) => a.active === true).map((a) => `${a.session}|${a.replica}`))
  return sessions.flatMap((s) =>
    replicas.filter((r) => !seen.has(`${s.id}|${r}`)).map((r) => `${s.id} on ${r}`),
  )
}

interface Revocation {
  session: string
  /** How the test sent it: a replica's name (directly) or `nginx`. */
  via: string
  /** The replica that revoked (for `nginx`, from X-Upstream). */
  by: string
  ackAt: number
}

async function revoke(cluster: Cluster, session: Session, target: Replica | 'nginx'): Promise<Revocation> {
  const port = target === 'nginx' ? cluster.nginx.port : target.port
  const reply = await send(control, port, 'DELETE', `/v1/sessions/${session.id}`)
  const ackAt = now()
  const via = target === 'nginx' ? 'nginx' : target.name
  assert.equal(reply.status, 200, `revoke ${session.id} via ${via}: ${reply.text}`)
  assert.equal((reply.body as { status?: string }).status, 'revoked')
  const by = target === 'nginx' ? cluster.upstreamOf(reply) : target.name
  assert.ok(by, `nginx says which replica revoked ${session.id} (X-Upstream ${reply.headers['x-upstream']})`)
  return { session: session.id, via, by, ackAt }
}

/** Revoked sessions × replicas without an answer to a question sent past the bound yet. */
function notCheckedPastBound(load: Load, revocations: Revocation[], replicas: string[]) {
  const ackOf = new Map(revocations.map((r) => [r.session, r.ackAt]))
  const seen = new Set<string>()
  for (const a of load.answers) {
    const ackAt = ackOf.get(a.session)
    if (ackAt !== undefined && a.status === 200 && a.sentAt > ackAt + L1_TTL_MS)
      seen.add(`${a.session}|${a.replica}`)
  }
  return revocations.flatMap((rev) =>
    replicas.filter((r) => !seen.has(`${rev.session}|${r}`)).map((r) => `${rev.session} on ${r}`),
  )
}

interface Verdict {
  checked: number
  /** Answers about revoked sessions to questions sent more than L1_TTL_MS after the ack. */
  pastBound: number
  /** Active answers to questions sent past the bound: the promise broken. */
  stale: Answer[]
  /** Active answers from the replica that revoked, to questions sent after its ack. */
  staleAtRevoker: Answer[]
  /** Active answers sent after the ack but within the bound (allowed; reported). */
  activeWithinBound: number
  /** Latest active answer's send time after its ack, over revoked sessions (≤ 0: none after the ack). */
  worstStalenessMs: number
  /** A live session answered inactive. */
  falseNegatives: Answer[]
  /** Anything but a 200 with a boolean `active`, unless excused. */
  errors: Answer[]
  byReplica: Map<string, number>
}

function judge(answers: Answer[], revocations: Revocation[], excused: (a: Answer) => boolean = () => false) {
  const revoked = new Map(revocations.map((r) => [r.session, r]))
  const verdict: Verdict = {
    checked: answers.length,
    pastBound: 0,
    stale: [],
    staleAtRevoker: [],
    activeWithinBound: 0,
    worstStalenessMs: Number.NEGATIVE_INFINITY,
    falseNegatives: [],
    errors: [],
    byReplica: new Map(),
  }
  for (const a of answers) {
    const name = a.replica ?? 'none'
    verdict.byReplica.set(name, (verdict.byReplica.get(name) ?? 0) + 1)
    if (a.status !== 200 || a.failure !== undefined) {
      if (!excused(a)) verdict.errors.push(a)
      continue
    }
    const rev = revoked.get(a.session)
    if (!rev) {
      if (a.active === false) verdict.falseNegatives.push(a)
      continue
    }
    const past = a.sentAt > rev.ackAt + L1_TTL_MS
    if (past) verdict.pastBound++
    if (a.active !== true) continue
    verdict.worstStalenessMs = Math.max(verdict.worstStalenessMs, a.sentAt - rev.ackAt)
    if (past) verdict.stale.push(a)
    else if (a.sentAt > rev.ackAt) {
      verdict.activeWithinBound++
      if (a.replica === rev.by) verdict.staleAtRevoker.push(a)
    }
  }
  return verdict
}

function describe(a: Answer, revocations: Revocation[]): string {
  const rev = revocations.find((r) => r.session === a.session)
  const when = rev
    ? ` sent ${ms(a.sentAt - rev.ackAt)} after the ack (revoked by ${rev.by} via ${rev.via})`
    : ''
  return `${a.replica ?? '?'} ${a.session}${when}: ${a.failure ?? `${a.status} active=${a.active}`}`
}

/** Everything wrong with a verdict, one line each. */
function problems(verdict: Verdict, revocations: Revocation[], cluster: Cluster): string[] {
  const found: string[] = []
  const examples = (answers: Answer[]) =>
    answers
      .slice(0, 3)
      .map((a) => describe(a, revocations))
      .join('; ')
  if (verdict.stale.length > 0)
    found.push(`${verdict.stale.length} active answers past L1_TTL_MS: ${examples(verdict.stale)}`)
  if (verdict.staleAtRevoker.length > 0)
    found.push(
      `${verdict.staleAtRevoker.length} active answers from the revoking replica after its ack: ${examples(verdict.staleAtRevoker)}`,
    )
  if (verdict.falseNegatives.length > 0)
    found.push(
      `${verdict.falseNegatives.length} live sessions answered inactive: ${examples(verdict.falseNegatives)}`,
    )
  if (verdict.errors.length > 0) {
    found.push(`${verdict.errors.length} answers not a 200: ${examples(verdict.errors)}`)
    found.push(`--- nginx ---\n${cluster.nginx.output()}`)
    for (const r of cluster.replicas) found.push(`--- ${r.name} ---\n${r.output().slice(-1500)}`)
  }
  return found
}

function summary(verdict: Verdict): string {
  const worst =
    verdict.worstStalenessMs === Number.NEGATIVE_INFINITY
      ? 'none after the ack'
      : ms(verdict.worstStalenessMs)
  return (
    `${verdict.checked} answers (${[...verdict.byReplica].map(([r, n]) => `${r} ${n}`).join(', ')}), ` +
    `${verdict.pastBound} about revoked sessions past the bound, ${verdict.stale.length} stale, ` +
    `${verdict.activeWithinBound} active within the bound, worst staleness ${worst}, ` +
    `${verdict.falseNegatives.length} false negatives, ${verdict.errors.length} errors`
  )
}

/** The replica's own count of introspections it answered (http_request_duration_seconds_count, any status). */
async function introspections(replica: Replica): Promise<number> {
  const reply = await send(control, replica.port, 'GET', '/metrics')
  assert.equal(reply.status, 200, `${replica.name} /metrics: ${reply.status}`)
  return metricSum(reply.text, 'http_request_duration_seconds_count', { route: '/v1/sessions/introspect' })
}

test('three replicas behind an nginx upstream under introspection load', {
  skip,
  timeout: 180_000,
}, async (t) => {
  if (!NGINX) assert.fail(`CI=true and ${INSTALL_HINT}`)
  const cluster = await startCluster(t)
  const [a, b, c] = cluster.replicas
  const names = cluster.replicas.map((r) => r.name)

  await t.test(
    'revocations through every replica, directly and through nginx: none answered active past L1_TTL_MS',
    { timeout: 90_000 },
    async (st) => {
      await allReady(cluster)
      // Two rounds of (A, nginx, B, nginx, C, nginx): 12 revoked; 6 stay live.
      const order: Array<Replica | 'nginx'> = [a, 'nginx', b, 'nginx', c, 'nginx']
      const sessions = await openSessions(cluster, 'rr', 2 * order.length + 6)
      const doomed = sessions.slice(0, 2 * order.length)
      const countsBefore = await Promise.all(cluster.replicas.map(introspections))
      const load = startLoad(cluster, sessions)
      const revocations: Revocation[] = []
      try {
        await until(() => notWarm(load, sessions, names), 'every session answered active by every replica')
        for (const [i, session] of doomed.entries()) {
          revocations.push(await revoke(cluster, session, order[i % order.length] as Replica | 'nginx'))
          await sleep(REVOKE_SPACING_MS)
        }
        await until(
          () => notCheckedPastBound(load, revocations, names),
          'every revoked session asked past the bound on every replica',
        )
      } finally {
        await load.stop()
      }

      const verdict = judge(load.answers, revocations)
      const throughNginx = revocations.filter((r) => r.via === 'nginx').map((r) => r.by)
      st.diagnostic(`${summary(verdict)}; revocations through nginx landed on ${throughNginx.join(' ')}`)
      assert.deepEqual(problems(verdict, revocations, cluster), [])
      assert.deepEqual(
        [...new Set(revocations.map((r) => r.by))].sort(),
        names,
        'every replica revoked sessions',
      )

      // Round robin over three healthy replicas: each takes a third; half of that is asserted.
      for (const name of names) {
        const share = verdict.byReplica.get(name) ?? 0
        assert.ok(
          share >= verdict.checked / 6,
          `${name} answered ${share} of ${verdict.checked} through nginx\n${cluster.nginx.output()}`,
        )
      }
      // And each replica counted them itself (its metrics move at its response hook: read until caught up).
      const deadline = now() + 5000
      for (const [i, replica] of cluster.replicas.entries()) {
        const expected = verdict.byReplica.get(replica.name) ?? 0
        let counted = 0
        for (;;) {
          counted = (await introspections(replica)) - (countsBefore[i] ?? 0)
          if (counted >= expected || now() > deadline) break
          await sleep(100)
        }
        assert.ok(
          counted >= expected,
          `${replica.name} counted ${counted} introspections, nginx says ${expected}`,
        )
      }
    },
  )

  await t.test(
    'a replica killed mid-load: nginx fails over to the others and still no stale answer',
    { timeout: 90_000 },
    async (st) => {
      await allReady(cluster)
      const sessions = await openSessions(cluster, 'fo', 3 + 6 + 6)
      // Revoked through C just before C is killed, then through A, B and nginx once C is gone.
      const beforeKill = sessions.slice(0, 3)
      const afterKill = sessions.slice(3, 9)
      const load = startLoad(cluster, sessions)
      const revocations: Revocation[] = []
      let killDoneAt = Number.POSITIVE_INFINITY
      try {
        await until(() => notWarm(load, sessions, names), 'every session answered active by every replica')
        revocations.push(...(await Promise.all(beforeKill.map((s) => revoke(cluster, s, c)))))
        await within(c.kill(), 10_000, 'killing C')
        killDoneAt = now()
        const order: Array<Replica | 'nginx'> = [a, 'nginx', b, 'nginx']
        for (const [i, session] of afterKill.entries()) {
          revocations.push(await revoke(cluster, session, order[i % order.length] as Replica | 'nginx'))
          await sleep(REVOKE_SPACING_MS)
        }
        await until(
          () => notCheckedPastBound(load, revocations, [a.name, b.name]),
          'every revoked session asked past the bound on A and B',
        )
      } finally {
        await load.stop()
      }

      const killedAt = c.killedAt() ?? killDoneAt
      // Only a request in flight while C died may have no usable answer (nginx retries those it can).
      const inFlightAtKill = (x: Answer) => x.sentAt < killDoneAt && x.receivedAt >= killedAt
      const verdict = judge(load.answers, revocations, inFlightAtKill)
      const afterTheKill = load.answers.filter((x) => x.sentAt > killDoneAt)
      const fromC = afterTheKill.filter((x) => x.replica === c.name)
      const excused = load.answers.filter((x) => (x.status !== 200 || x.failure) && inFlightAtKill(x))
      st.diagnostic(
        `${summary(verdict)}; ${afterTheKill.length} sent after C was gone, ${excused.length} excused in flight at the kill`,
      )
      assert.deepEqual(problems(verdict, revocations, cluster), [])
      assert.equal(fromC.length, 0, 'nothing is answered by C once it is gone')
      for (const name of [a.name, b.name]) {
        assert.ok(
          afterTheKill.some((x) => x.replica === name && x.status === 200),
          `${name} answered after the kill`,
        )
      }
      for (const rev of revocations.filter((r) => r.ackAt > killDoneAt)) assert.notEqual(rev.by, c.name)
    },
  )
})
