import assert from 'node:assert/strict'
import http from 'node:http'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../src/config.ts'
import { appMetric } from './fixtures/metrics.ts'
import {
  adminSql,
  appBehindPostgresProxy,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  eventually,
  openSession,
  revokeSession,
  type TestApp,
  twoReplicas,
} from './helper.ts'

// The forward-auth fast lane answers a gateway's common sub-request (a live,
// cached session) before the router. These calls go over real HTTP, where the
// lane is; app.inject() reaches the router only, so it gives the route's own
// answer to compare with.

const SECRET = 'gateway-secret-0123456789abcdef'
const HOME_IP = '203.0.113.7'
const FAR_IP = '198.51.100.1'
const FIREFOX = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'
const CHROME_NEXT = CHROME_WINDOWS.replace('Chrome/120.0.0.0', 'Chrome/121.0.0.0')
/** Headers that differ between any two answers, or that only a real connection has. */
const PER_ANSWER = ['date', 'x-request-id', 'connection', 'keep-alive']

const GATEWAY: Partial<Config> = {
  forwardAuthSecret: SECRET,
  forwardAuthMetadata: 'plan,team=x-team',
  trustProxy: '127.0.0.1',
}

/**
 * An app listening on loopback, its calls made over one kept-alive
 * connection, with a count of the requests its router saw.
 */
async function listening<Built extends TestApp>(t: TestContext, built: Built) {
  const { app } = built
  const routed: string[] = []
  app.addHook('onRequest', (request, _reply, done) => {
    routed.push(`${request.method} ${request.url}`)
    done()
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  // Until the invalidation feed is live, what L1 holds may be dropped at any time (its start is a gap).
  const feedLive = async () =>
    (await app.inject({ method: 'GET', url: '/readyz' })).json().invalidation_feed === 'live'
  await eventually(feedLive, 10_000, 'the invalidation feed is live')
  const address = app.server.address()
  assert.ok(address && typeof address === 'object')
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.after(() => agent.destroy())
  return { ...built, routed, base: { port: address.port, agent } }
}

/** A listening app behind a trusted proxy (127.0.0.1, the test itself), with metadata headers. */
async function laneApp(t: TestContext, overrides: Partial<Config> = {}) {
  return listening(t, await buildTestApp(t, { ...GATEWAY, ...overrides }))
}

type Base = Awaited<ReturnType<typeof listening>>['base']

interface Call {
  method?: string
  token?: string
  headers?: Record<string, string>
  body?: string
  path?: string
}

function gatewayHeaders({ token, headers = {} }: Call): Record<string, string> {
  return {
    'user-agent': CHROME_WINDOWS,
    'x-forward-auth-secret': SECRET,
    'x-forwarded-for': HOME_IP,
    ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    ...headers,
  }
}

/** A gateway's sub-request over HTTP: status, headers and body. */
function overHttp(base: Base, call: Call) {
  return new Promise<{ status: number; headers: Record<string, string>; body: string }>((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port: base.port,
        agent: base.agent,
        method: call.method ?? 'GET',
        path: call.path ?? '/v1/forward-auth',
        headers: gatewayHeaders(call),
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          body += chunk
        })
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers as Record<string, string>, body }),
        )
      },
    )
    request.on('error', reject)
    request.end(call.body)
  })
}

/** The same sub-request through the router alone. */
async function routed(app: FastifyInstance, call: Call) {
  const res = await app.inject({
    method: (call.method ?? 'GET') as 'GET',
    url: call.path ?? '/v1/forward-auth',
    headers: gatewayHeaders(call),
    remoteAddress: '127.0.0.1',
  })
  return { status: res.statusCode, headers: res.headers as Record<string, string> }
}

const comparable = (headers: Record<string, string>) =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => !PER_ANSWER.includes(name)))

test('the lane answers a live cached session as the route does, without the router', async (t) => {
  const { app, routed: seen, base } = await laneApp(t)
  const { token, session } = await openSession(app, {
    user_id: 'zoë',
    metadata: { plan: 'pro', team: 'red team' },
  })
  const first = await overHttp(base, { token })
  assert.equal(first.status, 200)
  seen.length = 0

  const calls: Call[] = [
    ...['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS'].map((method) => ({ method, token })),
    // A query is ignored; Envoy's ext_authz appends the client's path.
    { token, path: '/v1/forward-auth?rd=/home' },
    { token, path: '/v1/forward-auth/api/orders?page=2' },
    { method: 'POST', token, path: '/v1/forward-auth/' },
  ]
  for (const call of calls) {
    const why = `${call.method ?? 'GET'} ${call.path ?? ''}`
    const lane = await overHttp(base, call)
    assert.deepEqual(seen, [], `${why}: the router saw it`)
    const route = await routed(app, call)
    seen.length = 0
    assert.equal(lane.status, 200, why)
    assert.equal(lane.body, '', why)
    assert.deepEqual(comparable(lane.headers), comparable(route.headers), why)
    assert.match(lane.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/, why)
  }
  const lane = await overHttp(base, { token })
  assert.equal(lane.headers['x-auth-user-id'], encodeURIComponent('zoë'))
  assert.equal(lane.headers['x-auth-session-id'], session.id)
  assert.equal(lane.headers['x-auth-meta-plan'], 'pro')
  assert.equal(lane.headers['x-team'], 'red team')
  assert.equal(lane.headers['cache-control'], 'no-store')
  // A caller's request id is kept, as the router keeps it.
  const traced = await overHttp(base, { token, headers: { 'x-request-id': 'trace-42' } })
  assert.equal(traced.headers['x-request-id'], 'trace-42')
  assert.deepEqual(seen, [])

  // Its answers are timed and counted under the route, as the router's are.
  const routes: Array<[route: string, path: string]> = [
    ['/v1/forward-auth', '/v1/forward-auth'],
    ['/v1/forward-auth/*', '/v1/forward-auth/x'],
  ]
  for (const [route, path] of routes) {
    const series = { route, method: 'GET', status: '200' }
    const before = await appMetric(app, 'http_request_duration_seconds_count', series)
    await overHttp(base, { token, path })
    await overHttp(base, { token, path })
    assert.equal(await appMetric(app, 'http_request_duration_seconds_count', series), before + 2, route)
  }
})

test('the lane leaves everything but the common case to the route', async (t) => {
  const { app, routed: seen, base } = await laneApp(t)
  const { token } = await openSession(app)
  assert.equal((await overHttp(base, { token })).status, 200)

  const cases: Array<[why: string, call: Call, status: number]> = [
    ['a body to read and drop', { method: 'POST', token, body: 'x'.repeat(100) }, 200],
    ['a path to decode', { token, path: '/v1/forward-auth/caf%C3%A9' }, 200],
    ['a very long URL', { token, path: `/v1/forward-auth/${'a'.repeat(2100)}` }, 200],
    ['another path', { token, path: '/v1/forward-authx' }, 404],
    ['no token', {}, 401],
    ['an unknown token', { token: 'sa_unknown0123456789' }, 401],
    ['a wrong gateway secret', { token, headers: { 'x-forward-auth-secret': 'wrong' } }, 403],
    ['a method no gateway forwards', { method: 'PROPFIND', token }, 405],
  ]
  for (const [why, call, status] of cases) {
    seen.length = 0
    const answer = await overHttp(base, call)
    assert.equal(answer.status, status, why)
    // The lane answers only 200s; a refusal stops the router before the count (a hook added last).
    if (status === 200) assert.equal(seen.length, 1, `${why}: the router did not see it`)
  }
})

test('a revoked, suspended or drifting session is never answered from the lane', async (t) => {
  const { app, config, routed: seen, base } = await laneApp(t)
  const revoked = await openSession(app)
  const drifting = await openSession(app)
  const updating = await openSession(app)
  for (const { token } of [revoked, drifting, updating])
    assert.equal((await overHttp(base, { token })).status, 200)

  // Revoked through the API: refused. The first call reads the ended row back into memory, where the
  // second finds it, and the lane leaves that one to the route as well.
  const revoke = await revokeSession(app, revoked.session.id)
  assert.equal(revoke.statusCode, 200, revoke.body)
  for (const call of ['first', 'second']) {
    seen.length = 0
    const afterRevoke = await overHttp(base, { token: revoked.token })
    assert.equal(afterRevoke.status, 401, call)
    assert.match(afterRevoke.headers['www-authenticate'] ?? '', /invalid_token/, call)
    assert.equal(seen.length, 1, call)
  }

  // Another browser: drift, judged by the route, which suspends the session (the default policy).
  seen.length = 0
  assert.equal(
    (await overHttp(base, { token: drifting.token, headers: { 'user-agent': FIREFOX } })).status,
    401,
  )
  assert.equal(seen.length, 1)
  for (const call of ['first', 'second']) {
    seen.length = 0
    assert.equal((await overHttp(base, { token: drifting.token })).status, 401, `suspended: ${call} call`)
    assert.equal(seen.length, 1, call)
  }
  // And a far address, forwarded by the trusted proxy, is drift too.
  const far = await openSession(app)
  assert.equal((await overHttp(base, { token: far.token })).status, 200)
  assert.equal(
    (await overHttp(base, { token: far.token, headers: { 'x-forwarded-for': FAR_IP } })).status,
    401,
  )

  // A browser update is followed (the session is rebound to the new version) by the route, once.
  seen.length = 0
  const update = await overHttp(base, { token: updating.token, headers: { 'user-agent': CHROME_NEXT } })
  assert.equal(update.status, 200)
  assert.equal(seen.length, 1, 'the route follows the update')
  const sql = adminSql()
  t.after(() => sql.end())
  const [stored] = await sql.unsafe(`select user_agent from "${config.dbSchema}".sessions where id = $1`, [
    updating.session.id,
  ])
  assert.equal(stored?.user_agent, CHROME_NEXT)
  // Rebinding dropped the session from the cache: the route reads it back once, then the lane has it.
  assert.equal(
    (await overHttp(base, { token: updating.token, headers: { 'user-agent': CHROME_NEXT } })).status,
    200,
  )
  seen.length = 0
  assert.equal(
    (await overHttp(base, { token: updating.token, headers: { 'user-agent': CHROME_NEXT } })).status,
    200,
  )
  assert.deepEqual(
    seen,
    [],
    'the updated browser is now the one the session is bound to: the lane answers it',
  )
})

test('a session that ran out in memory is refused, by the route, which records the expiry', async (t) => {
  const { app, clock, routed: seen, base } = await laneApp(t, { idleTimeoutSeconds: 600 })
  const { token, session } = await openSession(app)
  assert.equal((await overHttp(base, { token })).status, 200)
  assert.equal((await overHttp(base, { token })).status, 200)
  clock.advance(601_000)
  for (const call of ['first', 'second']) {
    seen.length = 0
    assert.equal((await overHttp(base, { token })).status, 401, call)
    assert.equal(seen.length, 1, call)
  }
  await eventually(async () => {
    const res = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    return res.json().status === 'expired'
  })
})

test('a revoke on another replica reaches the lane through the invalidation feed', async (t) => {
  const [a, b] = await twoReplicas(t, GATEWAY)
  const { routed: seen, base } = await listening(t, a)
  const { token, session } = await openSession(b.app)
  assert.equal((await overHttp(base, { token })).status, 200)
  seen.length = 0
  assert.equal((await overHttp(base, { token })).status, 200)
  assert.deepEqual(seen, [], 'held in memory')
  const revoke = await revokeSession(b.app, session.id)
  assert.equal(revoke.statusCode, 200, revoke.body)
  // The feed delivers within milliseconds; the bound only keeps a loaded machine from failing the test.
  await eventually(async () => (await overHttp(base, { token })).status === 401, 10_000, 'refused')
  assert.equal((await overHttp(base, { token })).status, 401)
})

test("another tenant's session is unknown to the lane as to the route", async (t) => {
  // The gateway replica serves tenant `other` only; the session is the default tenant's.
  const [main, gateway] = await twoReplicas(t, GATEWAY, { ...GATEWAY, forwardAuthTenants: 'other' })
  const { routed: seen, base } = await listening(t, gateway)
  const { token } = await openSession(main.app)
  for (const call of ['first', 'second']) {
    seen.length = 0
    assert.equal((await overHttp(base, { token })).status, 401, call)
    assert.equal(seen.length, 1, call)
  }
})

test('the cookie, the address allowlist and the secret work on the lane as on the route', async (t) => {
  const {
    app,
    routed: seen,
    base,
  } = await laneApp(t, {
    forwardAuthCookie: 'sa_session',
    forwardAuthAllowedIps: '127.0.0.0/8',
  })
  const { token } = await openSession(app)
  const cookie = { cookie: `theme=dark; sa_session=${token}` }
  assert.equal((await overHttp(base, { headers: cookie })).status, 200)
  seen.length = 0
  assert.equal((await overHttp(base, { headers: cookie })).status, 200)
  assert.deepEqual(seen, [], 'the cookie token, from memory')
  // On the same connection: a wrong or missing secret after a right one is refused.
  for (const secret of ['gateway-secret-0123456789abcdeX', SECRET.slice(0, -1), `${SECRET}é`, '']) {
    const refused = await overHttp(base, { token, headers: { 'x-forward-auth-secret': secret } })
    assert.equal(refused.status, 403, secret)
  }
  assert.equal((await overHttp(base, { token })).status, 200)

  // A gateway outside the allowlist is refused, whatever it presents.
  const { app: elsewhere, base: far } = await laneApp(t, { forwardAuthAllowedIps: '10.0.0.0/8' })
  const other = await openSession(elsewhere)
  for (const call of ['first', 'second']) {
    assert.equal((await overHttp(far, { token: other.token })).status, 403, call)
  }
})

test('a call the lane hands to the route is counted once in the cache metrics', async (t) => {
  const { app, base } = await laneApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await overHttp(base, { token })).status, 200)
  const hits = (kind: string) => appMetric(app, 'session_cache_hits_total', { level: 'l1', kind })
  let before = await hits('positive')
  assert.equal((await overHttp(base, { token })).status, 200)
  assert.equal(await hits('positive'), before + 1, 'answered by the lane')
  await revokeSession(app, session.id)
  assert.equal((await overHttp(base, { token })).status, 401)
  before = await hits('positive')
  assert.equal((await overHttp(base, { token })).status, 401)
  assert.equal(await hits('positive'), before + 1, 'the ended session, handed on')
  const unknown = `sat_${'x'.repeat(43)}`
  assert.equal((await overHttp(base, { token: unknown })).status, 401)
  before = await hits('negative')
  assert.equal((await overHttp(base, { token: unknown })).status, 401)
  assert.equal(await hits('negative'), before + 1, 'a token known to be none, handed on')
})

test("when Postgres goes away, a session held in memory past the L1 bound is the route's: 503, never 200", async (t) => {
  const L1_TTL_MS = 200
  const built = await appBehindPostgresProxy(t, { ...GATEWAY, l1TtlMs: L1_TTL_MS })
  const { app, proxy, routed: seen, base } = await listening(t, built)
  const { token } = await openSession(app)
  assert.equal((await overHttp(base, { token })).status, 200)
  seen.length = 0
  assert.equal((await overHttp(base, { token })).status, 200)
  assert.deepEqual(seen, [], 'held in memory')
  await proxy.cut()
  await new Promise((resolve) => setTimeout(resolve, L1_TTL_MS + 50))
  const cut = await overHttp(base, { token })
  assert.equal(cut.status, 503, cut.body)
  assert.equal(cut.headers['x-auth-user-id'], undefined)
  await proxy.restore()
  assert.equal((await overHttp(base, { token })).status, 200)
})
