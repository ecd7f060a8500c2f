import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { appMetric } from './fixtures/metrics.ts'
import { adminSql, buildTestApp, CHROME_WINDOWS, openSession, revokeSession } from './helper.ts'

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

/**
 * A listening app behind a trusted proxy (127.0.0.1, the test itself), with
 * metadata headers, and a count of the requests the router saw.
 */
async function laneApp(t: TestContext) {
  const { app, config } = await buildTestApp(t, {
    forwardAuthSecret: SECRET,
    forwardAuthMetadata: 'plan,team=x-team',
    trustProxy: '127.0.0.1',
  })
  const routed: string[] = []
  app.addHook('onRequest', (request, _reply, done) => {
    routed.push(`${request.method} ${request.url}`)
    done()
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  assert.ok(address && typeof address === 'object')
  return { app, config, routed, base: `http://127.0.0.1:${address.port}` }
}

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

/** A gateway's sub-request over HTTP: status and headers. */
async function overHttp(base: string, call: Call) {
  const res = await fetch(`${base}${call.path ?? '/v1/forward-auth'}`, {
    method: call.method ?? 'GET',
    headers: gatewayHeaders(call),
    ...(call.body === undefined ? {} : { body: call.body }),
  })
  return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() }
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

  // Revoked through the API: the next sub-request is refused, by the route.
  const revoke = await revokeSession(app, revoked.session.id)
  assert.equal(revoke.statusCode, 200, revoke.body)
  seen.length = 0
  const afterRevoke = await overHttp(base, { token: revoked.token })
  assert.equal(afterRevoke.status, 401)
  assert.match(afterRevoke.headers['www-authenticate'] ?? '', /invalid_token/)
  assert.equal(seen.length, 1)

  // Another browser: drift, judged by the route, which suspends the session (the default policy).
  seen.length = 0
  assert.equal(
    (await overHttp(base, { token: drifting.token, headers: { 'user-agent': FIREFOX } })).status,
    401,
  )
  assert.equal(seen.length, 1)
  assert.equal((await overHttp(base, { token: drifting.token })).status, 401, 'suspended stays suspended')
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
