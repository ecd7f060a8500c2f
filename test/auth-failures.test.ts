import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../src/config.ts'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'
import { ADMIN_KEY, buildTestApp, createKey, eventually, redisSettings, twoReplicas } from './helper.ts'

/**
 * Failed API-key authentications are limited per client address and per
 * claimed key id (AUTH_FAILURE_LIMIT per AUTH_FAILURE_WINDOW_SECONDS): past the
 * budget a client gets 429 RATE_LIMITED with Retry-After before its key is
 * looked up, while a key the service has seen valid is never counted nor held
 * back. Apps here trust 127.0.0.1 as a proxy, so a test can speak from many
 * addresses with X-Forwarded-For.
 */

const LIMIT = 5
const limited = (extra: Partial<Config> = {}): Partial<Config> => ({
  authFailureLimit: LIMIT,
  trustProxy: '127.0.0.1',
  ...extra,
})

const guess = () => `sak_${randomBytes(32).toString('base64url')}`
const basic = (id: string, key: string) => `Basic ${Buffer.from(`${id}:${key}`).toString('base64')}`

function list(app: FastifyInstance, authorization: string, from = '198.51.100.1') {
  return app.inject({
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization, 'x-forwarded-for': from },
  })
}

/** Spends the budget of an address with random keys: every one of them is a 401. */
async function failUpToTheLimit(app: FastifyInstance, from: string) {
  for (let i = 0; i < LIMIT; i++) {
    const res = await list(app, `Bearer ${guess()}`, from)
    assert.equal(res.statusCode, 401, `failure ${i + 1} of ${LIMIT}`)
  }
}

function assertRateLimited(res: Awaited<ReturnType<typeof list>>, blockSeconds = 300) {
  assert.equal(res.statusCode, 429, res.body)
  assert.equal(res.json().error.code, 'RATE_LIMITED')
  const retryAfter = Number(res.headers['retry-after'])
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= blockSeconds, `${retryAfter}`)
}

/** An app whose Postgres is reached through a proxy the test can cut. */
async function appBehindPostgresProxy(t: TestContext, overrides: Partial<Config>) {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 })
  t.after(() => proxy.close())
  const built = await buildTestApp(t, {
    ...overrides,
    databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
  })
  return { ...built, proxy }
}

test('an address past the budget of failed keys gets 429 with Retry-After, before any lookup; its good keys still pass', async (t) => {
  const { app, proxy, logs } = await appBehindPostgresProxy(t, limited())
  const { key } = await createKey(app, ['sessions:read'])
  const attacker = '198.51.100.7'
  await failUpToTheLimit(app, attacker)
  assertRateLimited(await list(app, `Bearer ${guess()}`, attacker))
  // Another address is not held back.
  assert.equal((await list(app, `Bearer ${guess()}`, '198.51.100.8')).statusCode, 401)

  // With Postgres gone, a lookup would be a 503: the blocked address is answered without one.
  await proxy.cut()
  try {
    for (let i = 0; i < 50; i++) assertRateLimited(await list(app, `Bearer ${guess()}`, attacker))
    assertRateLimited(await list(app, basic('env-admin', guess()), attacker))
  } finally {
    await proxy.restore()
  }
  await eventually(async () => (await app.inject('/readyz')).statusCode === 200, 10_000, 'Postgres is back')

  // Blocking is for guessing: good keys from that address (a shared NAT) pass, the admin key and a new one.
  assert.equal((await list(app, `Bearer ${ADMIN_KEY}`, attacker)).statusCode, 200)
  assert.equal((await list(app, `Bearer ${key}`, attacker)).statusCode, 200)
  assert.equal((await list(app, basic('env-admin', ADMIN_KEY), attacker)).statusCode, 200)

  // One warning when the address was blocked; no key in the logs.
  const warnings = logs.lines.filter((l) => l.includes('too many failed API-key authentications'))
  assert.equal(warnings.length, 1, warnings.join('\n'))
  assert.match(warnings[0] as string, /"address":"198\.51\.100\.7"/)
  assert.doesNotMatch(logs.text(), /sak_[A-Za-z0-9_-]{43}/)
  assert.ok(!logs.text().includes(ADMIN_KEY))
})

test('a key id guessed from many addresses is blocked; its holder still gets in, by Basic and by form', async (t) => {
  const { app } = await buildTestApp(t, limited())
  // Each guess from its own address: only the key id's budget is spent.
  for (let i = 0; i < LIMIT; i++) {
    assert.equal((await list(app, basic('env-admin', guess()), `203.0.113.${i + 1}`)).statusCode, 401)
  }
  assertRateLimited(await list(app, basic('env-admin', guess()), '203.0.113.200'))
  // OAuth's client_secret_post counts against the same id.
  const form = (secret: string) =>
    app.inject({
      method: 'POST',
      url: '/oauth2/introspect',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': '203.0.113.201' },
      payload: new URLSearchParams({ token: 'x', client_id: 'env-admin', client_secret: secret }).toString(),
    })
  assertRateLimited(await form(guess()))

  assert.equal((await list(app, basic('env-admin', ADMIN_KEY), '203.0.113.202')).statusCode, 200)
  const good = await form(ADMIN_KEY)
  assert.equal(good.statusCode, 200, good.body)
  assert.deepEqual(good.json(), { active: false })
  // Other ids are untouched.
  assert.equal((await list(app, basic('key_0123456789abcdef', guess()), '203.0.113.203')).statusCode, 401)
})

test('good keys are never counted: a burst of them leaves the whole budget of failures', async (t) => {
  const { app } = await buildTestApp(t, limited())
  const { key } = await createKey(app, ['sessions:read'])
  const from = '198.51.100.20'
  for (let i = 0; i < 100; i++) assert.equal((await list(app, `Bearer ${key}`, from)).statusCode, 200)
  // Scope refusals are not failed authentications either.
  const { key: gateway } = await createKey(app, ['introspect'])
  for (let i = 0; i < 20; i++) assert.equal((await list(app, `Bearer ${gateway}`, from)).statusCode, 403)
  await failUpToTheLimit(app, from)
  assertRateLimited(await list(app, `Bearer ${guess()}`, from))
})

test('failures counted on one replica count on the other through Redis', async (t) => {
  const [a, b] = await twoReplicas(t, limited(redisSettings()))
  const { key } = await createKey(a.app, ['sessions:read'])
  const attacker = '198.51.100.30'
  await failUpToTheLimit(a.app, attacker)
  assertRateLimited(await list(b.app, `Bearer ${guess()}`, attacker))
  // The other way too, for a key id.
  for (let i = 0; i < LIMIT; i++) {
    assert.equal((await list(b.app, basic('env-admin', guess()), `192.0.2.${i + 1}`)).statusCode, 401)
  }
  assertRateLimited(await list(a.app, basic('env-admin', guess()), '192.0.2.100'))
  // Good keys from the blocked address pass on both.
  assert.equal((await list(b.app, `Bearer ${ADMIN_KEY}`, attacker)).statusCode, 200)
  assert.equal((await list(a.app, `Bearer ${key}`, attacker)).statusCode, 200)
})

test('with Redis away the counting goes on in-process, and good keys are never refused', async (t) => {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 6379 })
  t.after(() => proxy.close())
  const { app } = await buildTestApp(
    t,
    limited({ ...redisSettings(), redisUrl: `redis://127.0.0.1:${proxy.port}` }),
  )
  await proxy.cut()
  const attacker = '198.51.100.40'
  const started = Date.now()
  await failUpToTheLimit(app, attacker)
  assertRateLimited(await list(app, `Bearer ${guess()}`, attacker))
  assert.equal((await list(app, `Bearer ${ADMIN_KEY}`, attacker)).statusCode, 200)
  assert.equal((await list(app, `Bearer ${ADMIN_KEY}`, '198.51.100.41')).statusCode, 200)
  // Each failure answered at once, not after Redis timeouts.
  assert.ok(Date.now() - started < 5000, `${Date.now() - started} ms`)
})

test('a block ends after AUTH_FAILURE_BLOCK_SECONDS; AUTH_FAILURE_LIMIT=0 turns the limit off', async (t) => {
  const { app } = await buildTestApp(t, limited({ authFailureBlockSeconds: 1 }))
  const from = '198.51.100.50'
  await failUpToTheLimit(app, from)
  assertRateLimited(await list(app, `Bearer ${guess()}`, from), 1)
  await new Promise((r) => setTimeout(r, 1100))
  assert.equal((await list(app, `Bearer ${guess()}`, from)).statusCode, 401)

  const { app: open } = await buildTestApp(t, limited({ authFailureLimit: 0 }))
  for (let i = 0; i < 3 * LIMIT; i++) {
    assert.equal((await list(open, `Bearer ${guess()}`, from)).statusCode, 401)
  }
})

test('IPv6 clients are counted by /64: new addresses in the same network do not buy new guesses', async (t) => {
  const { app } = await buildTestApp(t, limited())
  for (let i = 0; i < LIMIT; i++) {
    assert.equal((await list(app, `Bearer ${guess()}`, `2001:db8:1:2::${i + 1}`)).statusCode, 401)
  }
  assertRateLimited(await list(app, `Bearer ${guess()}`, '2001:db8:1:2:ffff::9'))
  assert.equal((await list(app, `Bearer ${guess()}`, '2001:db8:1:3::1')).statusCode, 401)
})

test('the default budget: 20 failures in a row are 401, the 21st is 429', async (t) => {
  const { app } = await buildTestApp(t)
  for (let i = 0; i < 20; i++) assert.equal((await list(app, `Bearer ${guess()}`)).statusCode, 401)
  assertRateLimited(await list(app, `Bearer ${guess()}`))
  assert.equal((await list(app, `Bearer ${ADMIN_KEY}`)).statusCode, 200)
})
