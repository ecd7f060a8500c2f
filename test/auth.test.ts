import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildConfig, ConfigError } from '../src/config.ts'
import {
  ADMIN_KEY,
  adminSql,
  auth,
  buildTestApp,
  createKey,
  eventually,
  openSession,
  TEST_KEK,
} from './helper.ts'

const SESSION = '00000000-0000-4000-8000-000000000000'

/** Every /v1 route with the scope it needs. */
const ROUTES = [
  { method: 'POST', url: '/v1/sessions', scope: 'sessions:write', payload: { user_id: 'alice' } },
  { method: 'POST', url: '/v1/sessions/introspect', scope: 'introspect', payload: { token: 'x' } },
  { method: 'GET', url: `/v1/sessions/${SESSION}`, scope: 'sessions:read' },
  { method: 'DELETE', url: `/v1/sessions/${SESSION}`, scope: 'sessions:write' },
  { method: 'GET', url: '/v1/users/alice/sessions', scope: 'sessions:read' },
  { method: 'DELETE', url: '/v1/users/alice/sessions', scope: 'sessions:write' },
  { method: 'GET', url: '/v1/users/alice/events', scope: 'sessions:read' },
  { method: 'GET', url: '/v1/api-keys', scope: 'admin' },
  { method: 'POST', url: '/v1/api-keys', scope: 'admin', payload: { name: 'x', scopes: ['introspect'] } },
  { method: 'DELETE', url: '/v1/api-keys/key_0000', scope: 'admin' },
] as const

const SCOPES = ['introspect', 'sessions:read', 'sessions:write', 'admin'] as const

test('every /v1 route refuses a missing or unknown key with 401', async (t) => {
  const { app } = await buildTestApp(t)
  for (const route of ROUTES) {
    for (const headers of [{}, auth('sak_not-a-real-key'), { authorization: 'Basic YWxpY2U6c2VjcmV0' }]) {
      const res = await app.inject({ ...route, headers })
      assert.equal(res.statusCode, 401, `${route.method} ${route.url}`)
      assert.equal(res.json().error.code, 'UNAUTHORIZED')
    }
  }
})

test('a key reaches exactly the routes of its scopes (403 elsewhere); admin reaches all', async (t) => {
  const { app } = await buildTestApp(t)
  const keys = Object.fromEntries(
    await Promise.all(SCOPES.map(async (scope) => [scope, (await createKey(app, [scope])).key] as const)),
  )
  for (const route of ROUTES) {
    for (const scope of SCOPES) {
      const res = await app.inject({ ...route, headers: auth(keys[scope]) })
      const allowed = scope === route.scope || scope === 'admin'
      if (allowed) assert.notEqual(res.statusCode, 403, `${scope} → ${route.method} ${route.url}`)
      else {
        assert.equal(res.statusCode, 403, `${scope} → ${route.method} ${route.url}`)
        assert.equal(res.json().error.code, 'FORBIDDEN')
        assert.match(res.json().error.message, new RegExp(route.scope))
      }
    }
  }
})

test('API keys are created once, listed without secrets, stored hashed, and stop working when revoked', async (t) => {
  const { app, config } = await buildTestApp(t)
  const { key, api_key } = await createKey(app, ['introspect', 'sessions:read'])
  assert.match(key, /^sak_[A-Za-z0-9_-]{43}$/)

  const list = await app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })
  assert.equal(list.statusCode, 200)
  assert.ok(!list.body.includes(key))
  const listed = list.json().api_keys.find((k: { id: string }) => k.id === api_key.id)
  assert.deepEqual(listed.scopes, ['introspect', 'sessions:read'])
  assert.equal(listed.revoked_at, null)

  const sql = adminSql()
  t.after(() => sql.end())
  const rows = await sql`select * from ${sql(config.dbSchema)}.api_keys`
  assert.ok(!JSON.stringify(rows).includes(key))

  const use = () => app.inject({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth(key) })
  assert.equal((await use()).statusCode, 200)
  const revoked = await app.inject({ method: 'DELETE', url: `/v1/api-keys/${api_key.id}`, headers: auth() })
  assert.equal(revoked.statusCode, 200)
  assert.ok(revoked.json().revoked_at)
  assert.equal((await use()).statusCode, 401)

  const unknown = await app.inject({ method: 'DELETE', url: '/v1/api-keys/key_missing', headers: auth() })
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error.code, 'API_KEY_NOT_FOUND')
})

test('ADMIN_API_KEY seeds one admin key; changing it replaces the old one; unsetting it disables it', async (t) => {
  const first = await buildTestApp(t)
  const schema = first.config.dbSchema
  assert.equal(
    (await first.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })).statusCode,
    200,
  )

  const otherKey = 'another-admin-key-0123456789abcdef0123456789'
  const second = await buildTestApp(t, { dbSchema: schema, adminApiKey: otherKey })
  assert.equal(
    (await second.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })).statusCode,
    401,
  )
  assert.equal(
    (await second.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth(otherKey) })).statusCode,
    200,
  )

  const third = await buildTestApp(t, { dbSchema: schema, adminApiKey: undefined })
  assert.equal(
    (await third.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth(otherKey) })).statusCode,
    401,
  )
})

test('health and readiness need no key; readiness reports Postgres', async (t) => {
  const { app } = await buildTestApp(t)
  const health = await app.inject({ method: 'GET', url: '/healthz' })
  assert.equal(health.statusCode, 200)
  assert.deepEqual(health.json(), { status: 'ok' })
  // The invalidation feed proves itself within a heartbeat or two of the start.
  let ready = await app.inject({ method: 'GET', url: '/readyz' })
  await eventually(
    async () => {
      ready = await app.inject({ method: 'GET', url: '/readyz' })
      return ready.json().invalidation_feed === 'live'
    },
    10_000,
    'the invalidation feed is live',
  )
  assert.equal(ready.statusCode, 200)
  const { invalidation_feed_lag_ms: lag, ...rest } = ready.json()
  assert.deepEqual(rest, { status: 'ready', postgres: 'up', redis: 'disabled', invalidation_feed: 'live' })
  // Live means the latest proof is younger than L1_TTL_MS (1000 by default).
  assert.ok(Number.isInteger(lag) && lag >= 0 && lag <= 1000, `lag ${lag}`)
})

test('an introspect-only key (a gateway) can check tokens but not open or list sessions', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  const { key } = await createKey(app, ['introspect'])
  const check = await app.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(key),
    payload: { token },
  })
  assert.equal(check.json().active, true)
  const list = await app.inject({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth(key) })
  assert.equal(list.statusCode, 403)
})

test('an ADMIN_API_KEY revoked through the API stays revoked across restarts (one warning); a replaced one never comes back', async (t) => {
  const first = await buildTestApp(t)
  const schema = first.config.dbSchema
  const { key: backup } = await createKey(first.app, ['admin'])
  const revoked = await first.app.inject({ method: 'DELETE', url: '/v1/api-keys/env-admin', headers: auth() })
  assert.equal(revoked.statusCode, 200)

  const restarted = await buildTestApp(t, { dbSchema: schema })
  const list = () => restarted.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })
  assert.equal((await list()).statusCode, 401)
  const warnings = restarted.logs.lines.filter((l) => l.includes('ADMIN_API_KEY is revoked'))
  assert.equal(warnings.length, 1)
  assert.match(warnings[0] as string, /"level":40/)
  assert.ok(!restarted.logs.text().includes(ADMIN_KEY))

  // A new value is the admin key again; the one it replaced stays revoked, listed under an id of its own.
  const otherKey = 'another-admin-key-0123456789abcdef0123456789'
  const rotated = await buildTestApp(t, { dbSchema: schema, adminApiKey: otherKey })
  assert.ok(!rotated.logs.text().includes('ADMIN_API_KEY is revoked'))
  const keys = await rotated.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth(otherKey) })
  assert.equal(keys.statusCode, 200)
  const retired = keys.json().api_keys.filter((k: { name: string }) => k.name === 'ADMIN_API_KEY (replaced)')
  assert.equal(retired.length, 1)
  assert.ok(retired[0].revoked_at)
  assert.match(retired[0].id, /^env-admin-replaced-[0-9a-f]{8}$/)

  // A deployment rolled back to the revoked value: refused, with the warning.
  const rolledBack = await buildTestApp(t, { dbSchema: schema })
  assert.equal(
    (await rolledBack.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })).statusCode,
    401,
  )
  assert.match(rolledBack.logs.text(), /ADMIN_API_KEY is revoked; unset it or set a new one/)
  assert.equal(
    (await rolledBack.app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth(backup) })).statusCode,
    200,
  )
})

test('METRICS_TOKEN: /metrics needs Authorization: Bearer <token>; without it /metrics stays open', async (t) => {
  const token = 'metrics-token-0123456789abcdef'
  const { app, logs } = await buildTestApp(t, { metricsToken: token })
  const scrape = (authorization?: string) =>
    app.inject({ method: 'GET', url: '/metrics', headers: authorization ? { authorization } : {} })
  for (const authorization of [
    undefined,
    'Bearer wrong-token-0123456789abcdef',
    `Basic ${token}`,
    `Bearer ${token}x`,
    auth().authorization,
  ]) {
    const res = await scrape(authorization)
    assert.equal(res.statusCode, 401, authorization)
    assert.equal(res.json().error.code, 'UNAUTHORIZED')
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="metrics"')
  }
  for (const authorization of [`Bearer ${token}`, `bearer ${token}`]) {
    const res = await scrape(authorization)
    assert.equal(res.statusCode, 200)
    assert.match(res.body, /http_request_duration_seconds/)
  }
  assert.ok(!logs.text().includes(token))

  const { app: open } = await buildTestApp(t)
  assert.equal((await open.inject({ method: 'GET', url: '/metrics' })).statusCode, 200)
})

test('development settings stay on the developer machine: DEV_MODE needs a loopback HOST, the README admin key needs DEV_MODE', () => {
  const example = 'dev-admin-key-change-me-0123456789abcdef'
  const kek = TEST_KEK
  // The README's "Run it", and the container (HOST=0.0.0.0, a key-encryption key, no DEV_MODE).
  assert.doesNotThrow(() => buildConfig({ devMode: true, adminApiKey: example }))
  for (const host of ['127.0.0.1', '127.0.0.2', '::1', '[::1]', 'localhost']) {
    assert.doesNotThrow(() => buildConfig({ devMode: true, host }), host)
  }
  assert.doesNotThrow(() => buildConfig({ host: '0.0.0.0', signingKeyEncryptionKey: kek }))

  for (const host of ['0.0.0.0', '::', '10.1.2.3', 'example.com']) {
    assert.throws(
      () => buildConfig({ devMode: true, host }),
      (err: Error) =>
        err instanceof ConfigError &&
        /DEV_MODE.*loopback HOST/.test(err.message) &&
        !err.message.includes('\n'),
      host,
    )
  }
  for (const adminApiKey of [example, 'dev-admin-key-change-me-but-longer-0123456789']) {
    assert.throws(
      () => buildConfig({ adminApiKey, signingKeyEncryptionKey: kek }),
      (err: Error) =>
        err instanceof ConfigError &&
        /ADMIN_API_KEY is the README example/.test(err.message) &&
        !err.message.includes(adminApiKey),
    )
  }
})
