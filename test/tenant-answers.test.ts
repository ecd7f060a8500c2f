import assert from 'node:assert/strict'
import { createHash, createHmac } from 'node:crypto'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Config } from '../src/config.ts'
import { keyEncryptionKey } from '../src/keys/key-encryption.ts'
import { createTenant, introspectAs, lifetimes, openAs, tenantKey } from './fixtures/tenants.ts'
import {
  ADMIN_KEY,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  createKey,
  eventually,
  introspect,
  openSession,
  REDIS_URL,
  redisSettings,
  TEST_KEK,
  twoReplicas,
} from './helper.ts'

/**
 * What the review of tenants asked for: every answer that names a user names
 * its tenant too; a Redis copy from before tenants is not an answer; a
 * platform key's user-keyed calls act in one tenant; only the operator revokes
 * a platform key; and a login for a tenant a replica has not read yet gets
 * that tenant's policy, not the global one.
 */

const SECRET = 'gateway-secret-0123456789abcdef'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The claims of a JWT, read without verifying it (what is in it, not whether it is genuine). */
function jwtPayload(token: string): Record<string, unknown> {
  const [, payload] = token.split('.')
  return JSON.parse(Buffer.from(payload ?? '', 'base64url').toString('utf8'))
}

/** Sum of a metric's samples whose label text includes `labels`. */
async function metric(app: FastifyInstance, name: string, labels = ''): Promise<number> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  let sum = 0
  for (const line of text.split('\n')) {
    const [series, value] = line.split(' ')
    if (!series || line.startsWith('#')) continue
    if ((series === name || series.startsWith(`${name}{`)) && series.includes(labels)) sum += Number(value)
  }
  return sum
}

function forward(app: FastifyInstance, token: string) {
  return app.inject({
    method: 'GET',
    url: '/v1/forward-auth',
    headers: {
      'user-agent': CHROME_WINDOWS,
      'x-forward-auth-secret': SECRET,
      authorization: `Bearer ${token}`,
    },
  })
}

async function openJwtAs(app: FastifyInstance, key: string, body: Record<string, unknown> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(key),
    payload: { user_id: 'alice', token_type: 'jwt', ip: '203.0.113.7', user_agent: CHROME_WINDOWS, ...body },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as { access_token: string; session: { id: string } }
}

test('answers name the tenant: introspection tenant_id, the JWT tid claim (metadata cannot set it), forward-auth x-auth-tenant-id', async (t) => {
  const { app } = await buildTestApp(t, { forwardAuthSecret: SECRET, forwardAuthTenants: 'default,t2' })
  await createTenant(app, 't2')
  const t2 = await tenantKey(app, 't2')

  // Opaque: the same user id in two tenants, each answer says which.
  const mine = await openSession(app)
  const theirs = await openAs(app, t2)
  const ownAnswer = await introspect(app, mine.token)
  assert.equal(ownAnswer.active, true)
  assert.equal(ownAnswer.tenant_id, 'default')
  const t2Answer = await introspectAs(app, t2, theirs.token)
  assert.equal(t2Answer.active, true)
  assert.equal(t2Answer.user_id, 'alice')
  assert.equal(t2Answer.tenant_id, 't2')

  // JWT: tid is the session's tenant, in the token and in its introspection.
  const jwt = await openJwtAs(app, t2)
  assert.equal(jwtPayload(jwt.access_token).tid, 't2')
  assert.equal(jwtPayload(jwt.access_token).sub, 'alice')
  const jwtAnswer = await introspectAs(app, t2, jwt.access_token)
  assert.equal(jwtAnswer.active, true)
  assert.equal(jwtAnswer.tenant_id, 't2')
  assert.equal(jwtPayload((await openJwtAs(app, ADMIN_KEY)).access_token).tid, 'default')

  // A tenant cannot pass itself off as another through metadata copied into the token.
  const spoof = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(t2),
    payload: {
      user_id: 'alice',
      token_type: 'jwt',
      metadata: { tid: 'default' },
      access_token_claims: ['tid'],
    },
  })
  assert.equal(spoof.statusCode, 400, spoof.body)
  assert.equal(spoof.json().error.code, 'VALIDATION_FAILED')

  // Forward-auth tells the upstream the tenant beside the user.
  for (const [token, tenant] of [
    [mine.token, 'default'],
    [theirs.token, 't2'],
    [jwt.access_token, 't2'],
  ] as const) {
    const res = await forward(app, token)
    assert.equal(res.statusCode, 200, `${tenant}: ${res.body}`)
    assert.equal(res.headers['x-auth-user-id'], 'alice')
    assert.equal(res.headers['x-auth-tenant-id'], tenant)
  }
})

test("another tenant's access JWT is unknown, expired or not: the tenant is checked before the expiry", async (t) => {
  const { app, clock, config } = await buildTestApp(t, { accessTokenTtlSeconds: 60 })
  await createTenant(app, 't2')
  await createTenant(app, 't3')
  const [t2, t3] = [await tenantKey(app, 't2'), await tenantKey(app, 't3')]
  const jwt = await openJwtAs(app, t2)
  assert.deepEqual(await introspectAs(app, t3, jwt.access_token), { active: false, reason: 'unknown' })
  // Past its exp and the tolerated skew; the session itself lives on.
  clock.advance((config.accessTokenTtlSeconds + config.jwtClockSkewSeconds + 1) * 1000)
  assert.deepEqual(await introspectAs(app, t3, jwt.access_token), { active: false, reason: 'unknown' })
  // Its own tenant, and the operator, are told why.
  assert.deepEqual(await introspectAs(app, t2, jwt.access_token), { active: false, reason: 'expired' })
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, jwt.access_token), { active: false, reason: 'expired' })
})

test('a Redis copy written before tenants (no tenant_id, a valid MAC) is a miss: the session stays active for its tenant', async (t) => {
  const settings: Partial<Config> = { ...redisSettings(), l1TtlMs: 200 }
  const prefix = settings.redisKeyPrefix as string
  const { app } = await buildTestApp(t, settings)
  await eventually(
    async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().invalidation_feed === 'live',
    15_000,
    'the invalidation feed is live',
  )
  const redis = new Redis(REDIS_URL)
  t.after(() => redis.disconnect())
  // A key of the default tenant only: a platform key sees every tenant, so it would not notice.
  const own = await tenantKey(app, 'default', ['introspect'])

  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token)).active, true)
  const key = `${prefix}tok2:${createHash('sha256').update(token).digest('hex')}`
  await eventually(async () => (await redis.exists(key)) === 1, 5000, 'the session is in Redis')
  const genuine = (await redis.get(key)) as string
  const [readAt, givenMac, ...rest] = genuine.split(':')
  const body = rest.join(':')

  // The MAC as src/sessions/cache.ts computes it, from the tests' key-encryption key.
  const macKey = keyEncryptionKey(TEST_KEK).derive('session cache values')
  const mac = (text: string) =>
    createHmac('sha256', macKey).update(`${key}\n${readAt}\n${text}`).digest('base64url').slice(0, 22)
  assert.equal(
    mac(body),
    givenMac,
    'the MAC is reproduced: the old-format value below is genuine but for its format',
  )

  const row = JSON.parse(body)
  assert.equal(row.tenant_id, 'default')
  assert.equal(row.id, session.id)
  delete row.tenant_id
  const old = JSON.stringify(row)
  const oldValue = `${readAt}:${mac(old)}:${old}`

  // Redis is asked only while the feed is live: ask until it was, and refused the copy; every answer is active.
  const before = await metric(app, 'session_cache_l2_rejected_total', 'reason="forged"')
  await eventually(
    async () => {
      await redis.set(key, oldValue, 'PX', 60_000)
      // Past the L1 entry of the last answer (L1_TTL_MS is 200 ms here).
      await sleep(250)
      const answer = await introspectAs(app, own, token)
      assert.equal(answer.active, true, JSON.stringify(answer))
      assert.equal(answer.tenant_id, 'default')
      return (await metric(app, 'session_cache_l2_rejected_total', 'reason="forged"')) > before
    },
    15_000,
    'the old-format copy is asked for and passed over',
  )
})

test('a tenant admin cannot revoke a platform key of its tenant; the operator can', async (t) => {
  const { app } = await buildTestApp(t)
  const tenantAdmin = await tenantKey(app, 'default', ['admin'])
  const platform = await createKey(app, ['platform'])
  const revoke = (id: string, headers: Record<string, string>) =>
    app.inject({ method: 'DELETE', url: `/v1/api-keys/${id}`, headers })

  for (const id of ['env-admin', platform.api_key.id]) {
    const res = await revoke(id, auth(tenantAdmin))
    assert.equal(res.statusCode, 404, `${id}: ${res.body}`)
    assert.equal(res.json().error.code, 'API_KEY_NOT_FOUND')
    // Nor a platform key acting for one tenant (x-tenant-id): only the operator's view spans them.
    const named = await revoke(id, { ...auth(), 'x-tenant-id': 'default' })
    assert.equal(named.statusCode, 404, `${id} with x-tenant-id: ${named.body}`)
  }
  // Both still work, and nothing was recorded as revoked.
  const listed = await app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })
  assert.equal(listed.statusCode, 200, listed.body)
  const keys = listed.json().api_keys as { id: string; revoked_at: string | null }[]
  assert.equal(keys.find((k) => k.id === 'env-admin')?.revoked_at, null)
  assert.equal(keys.find((k) => k.id === platform.api_key.id)?.revoked_at, null)
  const byPlatform = await app.inject({ method: 'GET', url: '/v1/tenants', headers: auth(platform.key) })
  assert.equal(byPlatform.statusCode, 200, byPlatform.body)

  // The operator's key revokes a created platform key; it no longer works.
  const res = await revoke(platform.api_key.id, auth())
  assert.equal(res.statusCode, 200, res.body)
  assert.notEqual(res.json().revoked_at, null)
  const after = await app.inject({ method: 'GET', url: '/v1/tenants', headers: auth(platform.key) })
  assert.equal(after.statusCode, 401, after.body)
  assert.equal((await app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })).statusCode, 200)
})

test("a platform key's user-keyed calls act in one tenant: its own, or the one x-tenant-id names", async (t) => {
  const { app } = await buildTestApp(t)
  await createTenant(app, 't2')
  const t2 = await tenantKey(app, 't2')
  const mine = await openSession(app, { user_id: 'alice' })
  const theirs = await openAs(app, t2, { user_id: 'alice' })
  const forT2 = { ...auth(), 'x-tenant-id': 't2' }

  const list = async (headers: Record<string, string>) => {
    const res = await app.inject({ method: 'GET', url: '/v1/users/alice/sessions', headers })
    assert.equal(res.statusCode, 200, res.body)
    return (res.json().sessions as { id: string }[]).map((s) => s.id)
  }
  assert.deepEqual(await list(auth()), [mine.session.id])
  assert.deepEqual(await list(forT2), [theirs.session.id])

  const revokeAll = async (headers: Record<string, string>) => {
    const res = await app.inject({ method: 'DELETE', url: '/v1/users/alice/sessions', headers })
    assert.equal(res.statusCode, 200, res.body)
    return res.json().revoked as number
  }
  assert.equal(await revokeAll(auth()), 1)
  assert.equal((await introspect(app, mine.token)).active, false)
  assert.equal((await introspectAs(app, t2, theirs.token)).active, true, "t2's alice is another user")
  assert.deepEqual(await list(forT2), [theirs.session.id])

  assert.equal(await revokeAll(forT2), 1)
  assert.equal((await introspectAs(app, t2, theirs.token)).active, false)
  assert.deepEqual(await list(forT2), [])
})

test('a login for a tenant this replica has not read yet gets that tenant’s policy at once', async (t) => {
  // A reread far beyond the test: only a read on demand can tell replica B of the new tenants.
  const [a, b] = await twoReplicas(t, { tenantReloadMs: 600_000 })
  assert.notEqual(b.config.idleTimeoutSeconds, 120, 'the global idle timeout is not the one tested for')

  // Through a key of the new tenant.
  await createTenant(a.app, 'x', { idle_timeout: 120 })
  const x = await tenantKey(a.app, 'x')
  const viaKey = await openAs(b.app, x)
  assert.equal(lifetimes(viaKey).idle, 120)

  // Through the platform key naming it.
  await createTenant(a.app, 'y', { idle_timeout: 120 })
  const res = await b.app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { ...auth(), 'x-tenant-id': 'y' },
    payload: { user_id: 'alice', ip: '203.0.113.7', user_agent: CHROME_WINDOWS },
  })
  assert.equal(res.statusCode, 201, res.body)
  assert.equal(lifetimes(res.json()).idle, 120)
  assert.equal((await introspect(b.app, res.json().token)).tenant_id, 'y')
})
