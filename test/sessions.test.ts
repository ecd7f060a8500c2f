import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'
import { adminSql, auth, buildTestApp, CHROME_WINDOWS, createKey, introspect, openSession } from './helper.ts'

const MINUTE = 60_000

test('opening a session returns a prefixed 256-bit opaque token and the session, never a hash', async (t) => {
  const { app } = await buildTestApp(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', ip: '203.0.113.7', user_agent: CHROME_WINDOWS, metadata: { plan: 'pro' } },
  })
  assert.equal(res.statusCode, 201)
  const body = res.json()
  assert.match(body.token, /^sat_[A-Za-z0-9_-]{43}$/)
  assert.equal(Buffer.from(body.token.slice(4), 'base64url').length, 32)
  assert.equal(body.token_type, 'opaque')
  assert.equal(body.session.user_id, 'alice')
  assert.equal(body.session.status, 'active')
  assert.equal(body.session.ip, '203.0.113.7')
  assert.deepEqual(body.session.device, {
    browser: 'Chrome',
    browser_version: '120.0.0.0',
    os: 'Windows',
    os_version: '10',
    type: 'desktop',
  })
  assert.deepEqual(body.session.metadata, { plan: 'pro' })
  assert.equal(body.session.token_hash, undefined)
  assert.doesNotMatch(res.body, /hash/)

  const other = await openSession(app)
  assert.notEqual(other.token, body.token)
})

test('only a SHA-256 hash of the token is stored: the raw token is nowhere in the database', async (t) => {
  const { app, config } = await buildTestApp(t)
  const { token } = await openSession(app)
  await introspect(app, token)
  const sql = adminSql()
  t.after(() => sql.end())
  const [dump] = await sql`
    select (select coalesce(string_agg(s::text, ''), '') from ${sql(config.dbSchema)}.sessions s)
      || (select coalesce(string_agg(e::text, ''), '') from ${sql(config.dbSchema)}.session_events e) as all`
  assert.ok(!dump?.all.includes(token))
  assert.ok(!dump?.all.includes(token.slice(4)))
  const [row] = await sql`select encode(token_hash, 'hex') as h from ${sql(config.dbSchema)}.sessions`
  const { createHash } = await import('node:crypto')
  assert.equal(row?.h, createHash('sha256').update(token).digest('hex'))
})

test('introspection of a live token says who it belongs to and when it expires', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const { token, session } = await openSession(app, { metadata: { tenant: 't1' } })
  const result = await introspect(app, token)
  assert.equal(result.active, true)
  assert.equal(result.session_id, session.id)
  assert.equal(result.user_id, 'alice')
  assert.equal(result.token_type, 'opaque')
  assert.deepEqual(result.metadata, { tenant: 't1' })
  assert.equal(result.expires_at, new Date(clock.now() + 30 * MINUTE).toISOString())
})

test('unknown, malformed and empty tokens are a normal inactive answer', async (t) => {
  const { app } = await buildTestApp(t)
  const { key: gatewayKey } = await createKey(app, ['introspect'])
  for (const token of [
    '',
    'nope',
    `sat_${'A'.repeat(43)}`,
    `sat_${'A'.repeat(42)}!`,
    'Bearer x',
    '😀'.repeat(10),
  ]) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions/introspect',
      headers: auth(),
      payload: { token },
    })
    assert.equal(res.statusCode, 200, token)
    // The admin key may read sessions, so it learns the token is unknown; a gateway's key only that it is inactive.
    assert.deepEqual(res.json(), { active: false, reason: 'unknown' }, token)
    const gateway = await app.inject({
      method: 'POST',
      url: '/v1/sessions/introspect',
      headers: auth(gatewayKey),
      payload: { token },
    })
    assert.deepEqual(gateway.json(), { active: false }, token)
  }
})

test('a successful introspection slides the idle expiry, bounded by the absolute lifetime', async (t) => {
  const { app, clock } = await buildTestApp(t, { idleTimeoutSeconds: 600, absoluteLifetimeSeconds: 1800 })
  const { token } = await openSession(app)
  for (let i = 0; i < 2; i++) {
    clock.advance(9 * MINUTE)
    const r = await introspect(app, token)
    assert.equal(r.active, true, `use ${i}`)
    assert.equal(r.expires_at, new Date(clock.now() + 10 * MINUTE).toISOString())
  }
  // 23 min in, absolute lifetime 30 min: the next slide is capped at the absolute expiry.
  clock.advance(5 * MINUTE)
  const capped = await introspect(app, token)
  assert.equal(capped.active, true)
  assert.equal(capped.expires_at, capped.absolute_expires_at)
})

test('idle timeout: a session unused for longer than its idle timeout is inactive', async (t) => {
  const { app, clock } = await buildTestApp(t, { idleTimeoutSeconds: 600 })
  const { token, session } = await openSession(app)
  clock.advance(10 * MINUTE - 1)
  assert.equal((await introspect(app, token)).active, true)
  clock.advance(10 * MINUTE)
  assert.equal((await introspect(app, token)).active, false)
  // It stays inactive, and the expiry is recorded in the history.
  clock.advance(1000)
  assert.equal((await introspect(app, token)).active, false)
  const events = await waitForEvent(app, 'alice', 'session.expired')
  assert.equal(events.session_id, session.id)
  assert.deepEqual(events.data, { reason: 'idle_timeout' })
})

test('absolute lifetime: a session in constant use still ends at its absolute expiry', async (t) => {
  const { app, clock } = await buildTestApp(t, { idleTimeoutSeconds: 600, absoluteLifetimeSeconds: 3600 })
  const { token } = await openSession(app)
  for (let minute = 5; minute < 60; minute += 5) {
    clock.advance(5 * MINUTE)
    assert.equal((await introspect(app, token)).active, true, `minute ${minute}`)
  }
  clock.advance(5 * MINUTE)
  assert.equal((await introspect(app, token)).active, false)
})

test('per-session idle_timeout and absolute_lifetime override the defaults', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const { token, session } = await openSession(app, { idle_timeout: 60, absolute_lifetime: 120 })
  assert.equal(session.idle_expires_at, new Date(clock.now() + MINUTE).toISOString())
  assert.equal(session.absolute_expires_at, new Date(clock.now() + 2 * MINUTE).toISOString())
  clock.advance(61_000)
  assert.equal((await introspect(app, token)).active, false)
})

test('GET /v1/sessions/:id returns the session; an unknown id is SESSION_NOT_FOUND', async (t) => {
  const { app } = await buildTestApp(t)
  const { session } = await openSession(app)
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(res.statusCode, 200)
  assert.equal(res.json().id, session.id)
  assert.equal(res.json().user_agent, CHROME_WINDOWS)

  const missing = await app.inject({
    method: 'GET',
    url: '/v1/sessions/00000000-0000-4000-8000-000000000000',
    headers: auth(),
  })
  assert.equal(missing.statusCode, 404)
  assert.equal(missing.json().error.code, 'SESSION_NOT_FOUND')
})

test('metadata comes back as it went in, whatever its keys: line breaks, U+2028, U+2029 and control characters too', async (t) => {
  const { app } = await buildTestApp(t)
  // Free-form JSON: any key Postgres stores is kept, and what is kept is answered (none silently dropped).
  const metadata = {
    plan: 'pro',
    'a\nb': 1,
    'c\rd': 2,
    'e\u2028f': 3,
    'g\u2029h': 4,
    'tab\there': 5,
    'bell\u0007': 6,
  }
  const { token, session } = await openSession(app, { metadata })
  assert.deepEqual(session.metadata, metadata, 'the login answer')
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.deepEqual(res.json().metadata, metadata, 'the session view')
  assert.deepEqual((await introspect(app, token)).metadata, metadata, 'introspection')
  const users = await app.inject({ url: `/v1/users/${session.user_id}/sessions`, headers: auth() })
  assert.deepEqual(users.json().sessions[0].metadata, metadata, "the user's sessions")
})

test('revocation is visible to the very next introspection, is idempotent and keeps its reason', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token)).active, true)

  const res = await app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${session.id}?reason=user_logout`,
    headers: auth(),
  })
  assert.equal(res.statusCode, 200)
  assert.equal(res.json().status, 'revoked')
  assert.equal(res.json().end_reason, 'user_logout')
  assert.equal((await introspect(app, token)).active, false)

  const again = await app.inject({ method: 'DELETE', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(again.statusCode, 200)
  assert.equal(again.json().end_reason, 'user_logout')
  assert.equal(again.json().ended_at, res.json().ended_at)

  const unknown = await app.inject({
    method: 'DELETE',
    url: '/v1/sessions/00000000-0000-4000-8000-000000000000',
    headers: auth(),
  })
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error.code, 'SESSION_NOT_FOUND')
})

test('when Postgres goes away introspection answers 503, never active; when it returns, service resumes', async (t) => {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 })
  t.after(() => proxy.close())
  const { app } = await buildTestApp(t, {
    databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
    l1TtlMs: 200,
  })
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token)).active, true)

  await proxy.cut()
  // An in-process cache entry may answer for at most its TTL; after that, only Postgres can.
  await new Promise((r) => setTimeout(r, 250))
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions/introspect',
      headers: auth(),
      payload: { token },
    })
    assert.equal(res.statusCode, 503)
    assert.equal(res.json().error.code, 'SERVICE_UNAVAILABLE')
  }
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  assert.equal(ready.statusCode, 503)
  assert.equal(ready.json().postgres, 'down')

  await proxy.restore()
  assert.equal((await introspect(app, token)).active, true)
  assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
  const revoke = await app.inject({ method: 'DELETE', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(revoke.statusCode, 200)
  assert.equal((await introspect(app, token)).active, false)
})

async function waitForEvent(
  app: Awaited<ReturnType<typeof buildTestApp>>['app'],
  userId: string,
  type: string,
) {
  for (let i = 0; i < 50; i++) {
    const res = await app.inject({
      method: 'GET',
      url: `/v1/users/${userId}/events?type=${type}`,
      headers: auth(),
    })
    const [event] = res.json().events
    if (event) return event
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`no ${type} event`)
}

test('POST /v1/sessions/{id}/revoke takes the reason in the body; the older DELETE with ?reason still works', async (t) => {
  const { app } = await buildTestApp(t)
  const [posted, deleted, everywhere] = [
    await openSession(app),
    await openSession(app),
    await openSession(app),
  ]
  const post = await app.inject({
    method: 'POST',
    url: `/v1/sessions/${posted.session.id}/revoke`,
    headers: auth(),
    payload: { reason: 'user_logout' },
  })
  assert.equal(post.statusCode, 200, post.body)
  assert.equal(post.json().status, 'revoked')
  assert.equal(post.json().end_reason, 'user_logout')
  assert.deepEqual(await introspect(app, posted.token), { active: false, reason: 'revoked' })

  // No body at all is a revocation with the default reason.
  const bare = await app.inject({
    method: 'POST',
    url: `/v1/sessions/${deleted.session.id}/revoke`,
    headers: auth(),
  })
  assert.equal(bare.json().end_reason, 'api')

  const old = await app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${everywhere.session.id}?reason=old_form`,
    headers: auth(),
  })
  assert.equal(old.json().end_reason, 'old_form')

  const unknownField = await app.inject({
    method: 'POST',
    url: `/v1/sessions/${everywhere.session.id}/revoke`,
    headers: auth(),
    payload: { reasn: 'typo' },
  })
  assert.equal(unknownField.statusCode, 400)
  assert.equal(unknownField.json().error.code, 'VALIDATION_FAILED')
})

test('POST /v1/sessions/revoke ends the session of an opaque token, an access JWT or a refresh token', async (t) => {
  const { app } = await buildTestApp(t)
  const revokeToken = (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/sessions/revoke', headers: auth(), payload })

  const opaque = await openSession(app)
  const byOpaque = await revokeToken({ token: opaque.token, reason: 'user_logout' })
  assert.equal(byOpaque.statusCode, 200, byOpaque.body)
  assert.equal(byOpaque.json().id, opaque.session.id)
  assert.equal(byOpaque.json().end_reason, 'user_logout')
  assert.deepEqual(await introspect(app, opaque.token), { active: false, reason: 'revoked' })
  // Idempotent: the same token again answers with the session, still revoked for the first reason.
  const again = await revokeToken({ token: opaque.token, reason: 'second' })
  assert.equal(again.statusCode, 200)
  assert.equal(again.json().end_reason, 'user_logout')

  for (const field of ['access_token', 'refresh_token'] as const) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: auth(),
      payload: { user_id: 'alice', token_type: 'jwt', ip: '203.0.113.7', user_agent: CHROME_WINDOWS },
    })
    const pair = res.json()
    const revoked = await revokeToken({ token: pair[field] })
    assert.equal(revoked.statusCode, 200, `${field}: ${revoked.body}`)
    assert.equal(revoked.json().id, pair.session.id, field)
    assert.equal((await introspect(app, pair.access_token)).active, false, field)
  }

  // scope: user logs the token's user out everywhere.
  const [first, second] = [
    await openSession(app, { user_id: 'bob' }),
    await openSession(app, { user_id: 'bob' }),
  ]
  await revokeToken({ token: first.token, scope: 'user' })
  assert.equal((await introspect(app, second.token)).active, false)

  // An unknown token is SESSION_NOT_FOUND, and the answer never repeats the token.
  const unknown = await revokeToken({ token: `sat_${'A'.repeat(43)}` })
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error.code, 'SESSION_NOT_FOUND')
  assert.doesNotMatch(unknown.body, /AAAA/)
})
