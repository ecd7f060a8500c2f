import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { auth, buildTestApp, CHROME_WINDOWS, SAFARI_IPHONE } from './helper.ts'

// The self-service API (/v1/me): the end user's own sessions, authorised by the user's own token.

const HERE = '127.0.0.1' // where app.inject's requests come from
const PAGE = 'https://app.example.com'

/** Opens a session for `user` from this test's address, as a backend would at login. */
async function login(app: FastifyInstance, user: string, userAgent = CHROME_WINDOWS, extra = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: user, ip: HERE, user_agent: userAgent, ...extra },
  })
  assert.equal(res.statusCode, 201, res.body)
  const body = res.json()
  return { token: (body.token ?? body.access_token) as string, id: body.session.id as string, body }
}

/** A call of the self-service API with a token, from the browser that logged in. */
function asUser(app: FastifyInstance, token: string | null, options: InjectOptions & { ua?: string } = {}) {
  const { ua = CHROME_WINDOWS, headers, ...rest } = options
  const post = rest.method === 'POST'
  return app.inject({
    method: 'GET',
    ...rest,
    headers: {
      'user-agent': ua,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(post ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    ...(post && rest.payload === undefined ? { payload: '{}' } : {}),
  })
}

function assertInactive(
  res: { statusCode: number; json(): { error: { code: string; reason?: string } } },
  reason: string,
) {
  assert.equal(res.statusCode, 401)
  assert.equal(res.json().error.code, 'SESSION_INACTIVE')
  assert.equal(res.json().error.reason, reason)
}

test('my sessions: only mine, this one marked current, with device, address and times; nothing else of the session', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const phone = await login(app, 'alice', SAFARI_IPHONE)
  clock.advance(1000) // newest first: the laptop signed in later
  const laptop = await login(app, 'alice')
  await login(app, 'bob')
  const res = await asUser(app, laptop.token, { url: '/v1/me/sessions' })
  assert.equal(res.statusCode, 200, res.body)
  const { sessions, total, next_cursor } = res.json()
  assert.equal(total, 2)
  assert.equal(next_cursor, null)
  assert.deepEqual(
    sessions.map((s: { id: string; current: boolean }) => [s.id, s.current]),
    [
      [laptop.id, true],
      [phone.id, false],
    ],
  )
  assert.deepEqual(Object.keys(sessions[0]).sort(), [
    'created_at',
    'current',
    'device',
    'expires_at',
    'id',
    'ip',
    'last_seen_at',
  ])
  assert.equal(sessions[1].device.os, 'iOS')
  assert.equal(sessions[1].ip, HERE)
  // Paged like every list.
  const first = await asUser(app, laptop.token, { url: '/v1/me/sessions?limit=1' })
  const second = await asUser(app, laptop.token, {
    url: `/v1/me/sessions?limit=1&cursor=${first.json().next_cursor}`,
  })
  assert.deepEqual(
    second.json().sessions.map((s: { id: string }) => s.id),
    [phone.id],
  )
})

test('my sessions page by position: a session purged between two pages does not end the list', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const oldest = await login(app, 'alice', SAFARI_IPHONE)
  clock.advance(1000)
  const purged = await login(app, 'alice')
  clock.advance(1000)
  const current = await login(app, 'alice')
  const first = await asUser(app, current.token, { url: '/v1/me/sessions?limit=2' })
  assert.deepEqual(
    first.json().sessions.map((s: { id: string }) => s.id),
    [current.id, purged.id],
  )
  // The last session of the page goes, as the purge deletes a row.
  await app.db.sql`delete from sessions where id = ${purged.id}`
  const next = await asUser(app, current.token, {
    url: `/v1/me/sessions?limit=2&cursor=${first.json().next_cursor}`,
  })
  assert.equal(next.statusCode, 200, next.body)
  assert.deepEqual(
    next.json().sessions.map((s: { id: string }) => s.id),
    [oldest.id],
  )
  assert.equal(next.json().next_cursor, null)
})

test('an access JWT works as well as an opaque token, and so does the forward-auth cookie', async (t) => {
  const { app, clock } = await buildTestApp(t, { forwardAuthCookie: 'sa_session' })
  const jwt = await login(app, 'alice', CHROME_WINDOWS, { token_type: 'jwt' })
  clock.advance(1000)
  const byJwt = await asUser(app, jwt.token, { url: '/v1/me/sessions' })
  assert.equal(byJwt.statusCode, 200, byJwt.body)
  assert.equal(byJwt.json().sessions[0].current, true)
  const opaque = await login(app, 'alice')
  const byCookie = await asUser(app, null, {
    url: '/v1/me/sessions',
    headers: { cookie: `sa_session=${opaque.token}` },
  })
  assert.equal(byCookie.statusCode, 200, byCookie.body)
  assert.deepEqual(
    byCookie.json().sessions.map((s: { id: string; current: boolean }) => [s.id, s.current]),
    [
      [opaque.id, true],
      [jwt.id, false],
    ],
  )
})

test("sign out one of mine, the others, or everywhere; never another user's session", async (t) => {
  const { app } = await buildTestApp(t)
  const [a, b, c, d] = [
    await login(app, 'alice'),
    await login(app, 'alice'),
    await login(app, 'alice'),
    await login(app, 'alice'),
  ]
  const bob = await login(app, 'bob')

  const one = await asUser(app, a.token, { method: 'POST', url: `/v1/me/sessions/${b.id}/revoke` })
  assert.deepEqual(one.json(), { revoked: 1 })
  assertInactive(await asUser(app, b.token, { url: '/v1/me/sessions' }), 'revoked')
  // Again: nothing more to end.
  assert.deepEqual(
    (await asUser(app, a.token, { method: 'POST', url: `/v1/me/sessions/${b.id}/revoke` })).json(),
    {
      revoked: 0,
    },
  )
  // Bob's session is not mine: as if it did not exist, and it stays active.
  const notMine = await asUser(app, a.token, { method: 'POST', url: `/v1/me/sessions/${bob.id}/revoke` })
  assert.equal(notMine.statusCode, 404)
  assert.equal(notMine.json().error.code, 'SESSION_NOT_FOUND')
  assert.equal((await asUser(app, bob.token, { url: '/v1/me/sessions' })).statusCode, 200)

  const others = await asUser(app, a.token, { method: 'POST', url: '/v1/me/sessions/revoke-others' })
  assert.deepEqual(others.json(), { revoked: 2 })
  assertInactive(await asUser(app, c.token, { url: '/v1/me/sessions' }), 'revoked')
  assertInactive(await asUser(app, d.token, { url: '/v1/me/sessions' }), 'revoked')
  assert.equal((await asUser(app, a.token, { url: '/v1/me/sessions' })).json().total, 1)

  const e = await login(app, 'alice')
  const everywhere = await asUser(app, e.token, { method: 'POST', url: '/v1/me/sessions/revoke-all' })
  assert.deepEqual(everywhere.json(), { revoked: 2 })
  assertInactive(await asUser(app, e.token, { url: '/v1/me/sessions' }), 'revoked')
  assertInactive(await asUser(app, a.token, { url: '/v1/me/sessions' }), 'revoked')
  assert.equal((await asUser(app, bob.token, { url: '/v1/me/sessions' })).json().total, 1)

  // Each ended with the reason self_service, in the user's history.
  const events = await app.inject({ url: '/v1/users/alice/events?type=session.revoked', headers: auth() })
  const reasons = new Set(
    events.json().events.map((event: { data: { reason: string } }) => event.data.reason),
  )
  assert.deepEqual([...reasons], ['self_service'])
})

test("my recent activity: my sessions' sign-ins, suspensions and sign-outs, with device and reason, and no one else's", async (t) => {
  const { app } = await buildTestApp(t)
  const laptop = await login(app, 'alice')
  const phone = await login(app, 'alice', SAFARI_IPHONE)
  await login(app, 'bob')
  await app.inject({
    method: 'POST',
    url: `/v1/sessions/${phone.id}/suspend`,
    headers: auth(),
    payload: { reason: 'support' },
  })
  await app.inject({
    method: 'POST',
    url: `/v1/sessions/${phone.id}/revoke`,
    headers: auth(),
    payload: { reason: 'lost_phone' },
  })
  const res = await asUser(app, laptop.token, { url: '/v1/me/events' })
  assert.equal(res.statusCode, 200, res.body)
  const events = res.json().events as Array<{
    type: string
    session_id: string
    current: boolean
    device: { os: string | null }
    reason: string | null
  }>
  assert.ok(
    events.every((e) => e.session_id === laptop.id || e.session_id === phone.id),
    'only mine',
  )
  const summary = events.map((e) => [
    e.type,
    e.session_id === phone.id ? 'phone' : 'laptop',
    e.current,
    e.reason,
  ])
  assert.deepEqual(
    summary.filter(([type]) => type !== 'session.new_device'),
    [
      ['session.revoked', 'phone', false, 'lost_phone'],
      ['session.suspended', 'phone', false, 'support'],
      ['session.created', 'phone', false, null],
      ['session.created', 'laptop', true, null],
    ],
  )
  const signIn = events.find((e) => e.type === 'session.created' && e.session_id === phone.id)
  assert.equal(signIn?.device.os, 'iOS')
  const paged = await asUser(app, laptop.token, { url: '/v1/me/events?limit=1' })
  assert.equal(paged.json().events.length, 1)
  assert.ok(paged.json().next_cursor)
})

test('a revoked, suspended, expired, unknown or missing token, or an API key, manages nothing: 401 SESSION_INACTIVE with why', async (t) => {
  const { app, clock } = await buildTestApp(t, { idleTimeoutSeconds: 600 })
  const revoked = await login(app, 'alice')
  await app.inject({ method: 'POST', url: `/v1/sessions/${revoked.id}/revoke`, headers: auth() })
  const suspended = await login(app, 'alice')
  await app.inject({ method: 'POST', url: `/v1/sessions/${suspended.id}/suspend`, headers: auth() })
  const victim = await login(app, 'alice')

  for (const [token, reason] of [
    [revoked.token, 'revoked'],
    [suspended.token, 'suspended'],
    [`sat_${'A'.repeat(43)}`, 'unknown'],
    ['not a token', 'unknown'],
    [auth().authorization.slice(7), 'unknown'],
  ] as const) {
    for (const call of [
      { url: '/v1/me/sessions' },
      { url: '/v1/me/events' },
      { method: 'POST' as const, url: '/v1/me/sessions/revoke-others' },
      { method: 'POST' as const, url: `/v1/me/sessions/${victim.id}/revoke` },
    ]) {
      const res = await asUser(app, token, call)
      assertInactive(res, reason)
      assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
    }
  }
  const none = await asUser(app, null, { url: '/v1/me/sessions' })
  assertInactive(none, 'unknown')
  assert.equal(none.headers['www-authenticate'], 'Bearer')
  // Nothing of the victim's was touched by any of them (the suspended session is still alice's too).
  assert.equal((await asUser(app, victim.token, { url: '/v1/me/sessions' })).json().total, 2)

  clock.advance(601_000)
  assertInactive(await asUser(app, victim.token, { url: '/v1/me/sessions' }), 'expired')
})

test('drift: a token used from another browser is judged as introspection judges it, and the session is suspended', async (t) => {
  const { app } = await buildTestApp(t)
  const mine = await login(app, 'alice')
  const other = await login(app, 'alice', SAFARI_IPHONE)
  const stolen = await asUser(app, mine.token, {
    method: 'POST',
    url: '/v1/me/sessions/revoke-others',
    ua: SAFARI_IPHONE,
  })
  assertInactive(stolen, 'suspended')
  // The other device was not signed out, and the real owner now finds this session suspended.
  assert.equal(
    (await asUser(app, other.token, { url: '/v1/me/sessions', ua: SAFARI_IPHONE })).json().total,
    2,
  )
  assertInactive(await asUser(app, mine.token, { url: '/v1/me/sessions' }), 'suspended')
})

test("a tenant's user: the same user id in another tenant is another person", async (t) => {
  const { app } = await buildTestApp(t)
  const created = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(),
    payload: { id: 'shop', name: 'Shop' },
  })
  assert.equal(created.statusCode, 201, created.body)
  const inDefault = await login(app, 'alice')
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { ...auth(), 'x-tenant-id': 'shop' },
    payload: { user_id: 'alice', ip: HERE, user_agent: CHROME_WINDOWS },
  })
  const inShop = { token: res.json().token as string, id: res.json().session.id as string }
  const listed = await asUser(app, inShop.token, { url: '/v1/me/sessions' })
  assert.deepEqual(
    listed.json().sessions.map((s: { id: string }) => s.id),
    [inShop.id],
  )
  const cross = await asUser(app, inShop.token, {
    method: 'POST',
    url: `/v1/me/sessions/${inDefault.id}/revoke`,
  })
  assert.equal(cross.statusCode, 404)
  const revokedAll = await asUser(app, inShop.token, { method: 'POST', url: '/v1/me/sessions/revoke-all' })
  assert.deepEqual(revokedAll.json(), { revoked: 1 })
  assert.equal((await asUser(app, inDefault.token, { url: '/v1/me/sessions' })).statusCode, 200)
})

test('CSRF: POSTs must be JSON, and a cookie cannot act from another site; a Bearer token can', async (t) => {
  const { app } = await buildTestApp(t, { forwardAuthCookie: 'sa_session', selfServiceOrigins: PAGE })
  const mine = await login(app, 'alice')
  await login(app, 'alice')
  const cookie = { cookie: `sa_session=${mine.token}` }
  const form = await asUser(app, null, {
    method: 'POST',
    url: '/v1/me/sessions/revoke-others',
    headers: { ...cookie, 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'a=b',
  })
  assert.equal(form.statusCode, 415)
  const evil = await asUser(app, null, {
    method: 'POST',
    url: '/v1/me/sessions/revoke-others',
    headers: { ...cookie, origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
  })
  assert.equal(evil.statusCode, 403)
  assert.equal(evil.headers['access-control-allow-origin'], undefined)
  assert.equal(
    (await asUser(app, mine.token, { url: '/v1/me/sessions' })).json().total,
    2,
    'nothing was signed out',
  )
  // The page's own origin, and an allowed one, may.
  const own = await asUser(app, null, {
    method: 'POST',
    url: '/v1/me/sessions/revoke-others',
    headers: { ...cookie, origin: 'https://auth.example.org', 'sec-fetch-site': 'same-origin' },
  })
  assert.deepEqual(own.json(), { revoked: 1 })
  const allowed = await asUser(app, null, {
    method: 'POST',
    url: '/v1/me/sessions/revoke-others',
    headers: { ...cookie, origin: PAGE, 'sec-fetch-site': 'cross-site' },
  })
  assert.equal(allowed.statusCode, 200)
  assert.equal(allowed.headers['access-control-allow-origin'], PAGE)
})

test('CORS: exact allowed origins only, with credentials, from the setting or the tenant; preflight cached', async (t) => {
  const { app } = await buildTestApp(t, { selfServiceOrigins: PAGE })
  const shop = 'https://shop.example.com'
  await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(),
    payload: { id: 'shop', name: 'Shop', settings: { self_service_origins: [shop] } },
  })
  const preflight = (origin: string) =>
    app.inject({
      method: 'OPTIONS',
      url: '/v1/me/sessions/revoke-others',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    })
  const ok = await preflight(PAGE)
  assert.equal(ok.statusCode, 204)
  assert.equal(ok.headers['access-control-allow-origin'], PAGE)
  assert.equal(ok.headers['access-control-allow-credentials'], 'true')
  assert.match(String(ok.headers['access-control-allow-methods']), /POST/)
  assert.match(String(ok.headers['access-control-allow-headers']), /content-type/)
  assert.equal(ok.headers['access-control-max-age'], '600')
  for (const origin of [
    'https://evil.example',
    `${PAGE}.evil.example`,
    'http://app.example.com',
    '*',
    'null',
  ]) {
    assert.equal((await preflight(origin)).headers['access-control-allow-origin'], undefined, origin)
  }
  assert.equal((await preflight(shop)).headers['access-control-allow-origin'], shop)

  const mine = await login(app, 'alice')
  const read = (origin: string) => asUser(app, mine.token, { url: '/v1/me/sessions', headers: { origin } })
  const allowed = await read(PAGE)
  assert.equal(allowed.headers['access-control-allow-origin'], PAGE)
  assert.match(String(allowed.headers.vary), /Origin/)
  assert.equal((await read('https://evil.example')).headers['access-control-allow-origin'], undefined)
  // Another tenant's page may not read this (default-tenant) user's sessions, though it passes a preflight.
  assert.equal((await read(shop)).headers['access-control-allow-origin'], undefined)
})

test('rate limited per client address: past SELF_SERVICE_RATE_LIMIT a minute, 429 with Retry-After', async (t) => {
  const { app } = await buildTestApp(t, { selfServiceRateLimit: 3 })
  const mine = await login(app, 'alice')
  for (let i = 0; i < 3; i++)
    assert.equal((await asUser(app, mine.token, { url: '/v1/me/sessions' })).statusCode, 200)
  const limited = await asUser(app, mine.token, { url: '/v1/me/sessions' })
  assert.equal(limited.statusCode, 429)
  assert.equal(limited.json().error.code, 'RATE_LIMITED')
  assert.ok(Number(limited.headers['retry-after']) >= 1)
})
