import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import {
  changeTenant,
  createTenant,
  eventsOf,
  introspectAs,
  lifetimes,
  openAs,
  readAs,
  tenantKey,
} from './fixtures/tenants.ts'
import {
  ADMIN_KEY,
  buildTestApp,
  CHROME_WINDOWS,
  eventually,
  introspect,
  openSession,
  SAFARI_IPHONE,
  twoReplicas,
} from './helper.ts'

/**
 * Each tenant's sessions follow its own overrides of the global policy, side by
 * side on one replica; a change reaches every replica without a restart; and a
 * tenant without overrides, like the default one, follows the app's settings.
 */

const SECOND = 1000
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Two tenants that differ in idle timeout and in what a change of browser does. */
async function strictAndLax(app: FastifyInstance) {
  await createTenant(app, 'strict', { idle_timeout: 60, ua_drift_policy: 'suspend' })
  await createTenant(app, 'lax', { idle_timeout: 3600, ua_drift_policy: 'ignore' })
  return { strict: await tenantKey(app, 'strict'), lax: await tenantKey(app, 'lax') }
}

async function statusAs(app: FastifyInstance, key: string, sessionId: string) {
  const res = await readAs(app, key, sessionId)
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { status: string; end_reason: string | null; suspension_reason: string | null }
}

test('two tenants on one replica: each session idles out after its own tenant’s idle timeout', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const keys = await strictAndLax(app)
  const strict = await openAs(app, keys.strict)
  const lax = await openAs(app, keys.lax)
  const openedAt = new Date(clock.now()).toISOString()
  assert.equal(strict.session.created_at, openedAt)
  assert.equal(lax.session.created_at, openedAt)
  assert.equal(lifetimes(strict).idle, 60)
  assert.equal(lifetimes(lax).idle, 3600)

  clock.advance(61 * SECOND)
  assert.equal((await introspectAs(app, keys.strict, strict.token)).active, false)
  const answer = await introspectAs(app, keys.lax, lax.token)
  assert.equal(answer.active, true)
  // A use slides lax's idle expiry by its own timeout from now.
  assert.equal(answer.expires_at, new Date(clock.now() + 3600 * SECOND).toISOString())
  // The expiry is recorded behind the answer.
  await eventually(
    async () => (await statusAs(app, keys.strict, strict.session.id)).status === 'expired',
    10_000,
    "strict's session recorded as expired",
  )
  const expired = await statusAs(app, keys.strict, strict.session.id)
  assert.equal(expired.end_reason, 'idle_timeout')
  assert.equal((await statusAs(app, keys.lax, lax.session.id)).status, 'active')
})

test('two tenants on one replica: another browser suspends a session of the tenant that says so, not of the one that ignores it', async (t) => {
  const { app } = await buildTestApp(t)
  const keys = await strictAndLax(app)
  const strict = await openAs(app, keys.strict, { user_agent: CHROME_WINDOWS })
  const lax = await openAs(app, keys.lax, { user_agent: CHROME_WINDOWS })
  const elsewhere = { ip: '203.0.113.7', user_agent: SAFARI_IPHONE }

  assert.deepEqual(await introspectAs(app, keys.strict, strict.token, elsewhere), {
    active: false,
    reason: 'suspended',
  })
  assert.equal((await introspectAs(app, keys.lax, lax.token, elsewhere)).active, true)
  // And again: lax's is not suspended a moment later either, strict's stays suspended.
  assert.equal((await introspectAs(app, keys.lax, lax.token, elsewhere)).active, true)
  assert.equal((await introspectAs(app, keys.strict, strict.token)).active, false)

  const suspended = await statusAs(app, keys.strict, strict.session.id)
  assert.equal(suspended.status, 'suspended')
  assert.equal(suspended.suspension_reason, 'user_agent_drift')
  assert.equal((await statusAs(app, keys.lax, lax.session.id)).status, 'active')
})

test('two tenants on one replica: a limit of one session per user evicts the oldest in one tenant only', async (t) => {
  const { app } = await buildTestApp(t)
  await createTenant(app, 'single', { max_sessions_per_user: 1, session_limit_action: 'evict_oldest' })
  await createTenant(app, 'many', { max_sessions_per_user: 0 })
  const single = await tenantKey(app, 'single')
  const many = await tenantKey(app, 'many')

  // The same user id in both tenants: two users, one limit each.
  const many1 = await openAs(app, many, { user_id: 'alice' })
  const single1 = await openAs(app, single, { user_id: 'alice' })
  const single2 = await openAs(app, single, { user_id: 'alice' })
  const many2 = await openAs(app, many, { user_id: 'alice' })
  const many3 = await openAs(app, many, { user_id: 'alice' })

  assert.equal((await introspectAs(app, single, single1.token)).active, false)
  const evicted = await statusAs(app, single, single1.session.id)
  assert.equal(evicted.status, 'revoked')
  assert.equal(evicted.end_reason, 'session_limit')
  assert.equal((await introspectAs(app, single, single2.token)).active, true)
  for (const opened of [many1, many2, many3]) {
    assert.equal((await introspectAs(app, many, opened.token)).active, true)
  }
})

test('a tenant without overrides, and the default tenant, follow the app’s settings; clearing overrides returns to them', async (t) => {
  const settings = {
    idleTimeoutSeconds: 900,
    absoluteLifetimeSeconds: 7200,
    uaDriftPolicy: 'record' as const,
  }
  const { app } = await buildTestApp(t, settings)
  await createTenant(app, 'plain')
  await createTenant(app, 'strict', { idle_timeout: 60, absolute_lifetime: 600, ua_drift_policy: 'suspend' })
  const plain = await tenantKey(app, 'plain')
  const strict = await tenantKey(app, 'strict')

  const global = { idle: 900, absolute: 7200 }
  // The tests' admin key belongs to the default tenant.
  const byDefault = await openSession(app)
  assert.deepEqual(lifetimes(byDefault), global)
  const byPlain = await openAs(app, plain)
  assert.deepEqual(lifetimes(byPlain), global)
  const byStrict = await openAs(app, strict)
  assert.deepEqual(lifetimes(byStrict), { idle: 60, absolute: 600 })

  // A change of browser is recorded (UA_DRIFT_POLICY=record), not suspended, outside strict.
  const elsewhere = { ip: '203.0.113.7', user_agent: SAFARI_IPHONE }
  assert.equal((await introspect(app, byDefault.token, elsewhere)).active, true)
  assert.equal((await introspectAs(app, plain, byPlain.token, elsewhere)).active, true)
  assert.equal((await introspectAs(app, strict, byStrict.token, elsewhere)).active, false)
  const moved = await readAs(app, plain, byPlain.session.id)
  assert.equal(moved.json().user_agent, SAFARI_IPHONE, 'rebound to the new browser, as record does')
  assert.equal((await readAs(app, ADMIN_KEY, byDefault.session.id)).json().user_agent, SAFARI_IPHONE)

  // Overrides replaced by none: strict's next session follows the app's settings, at once on this replica.
  await changeTenant(app, 'strict', {})
  const cleared = await openAs(app, strict)
  assert.deepEqual(lifetimes(cleared), global)
  assert.equal((await introspectAs(app, strict, cleared.token, elsewhere)).active, true)
})

test('a tenant’s changed policy reaches every replica without a restart', async (t) => {
  const [a, b] = await twoReplicas(t, { tenantReloadMs: 200 })
  await createTenant(a.app, 'acme', { idle_timeout: 600 })
  const key = await tenantKey(a.app, 'acme')
  const elsewhere = { ip: '203.0.113.7', user_agent: SAFARI_IPHONE }

  /** The idle timeout `replica` gives a new session of acme (each call opens one). */
  const idleOn = async (replica: FastifyInstance) => lifetimes(await openAs(replica, key)).idle
  /** Waits until `replica` opens acme's sessions with `seconds` of idle timeout, asking every 25 ms. */
  const until = (replica: FastifyInstance, seconds: number, what: string) =>
    eventually(
      async () => {
        if ((await idleOn(replica)) === seconds) return true
        await sleep(25)
        return false
      },
      15_000,
      what,
    )

  assert.equal(await idleOn(a.app), 600, 'A made the tenant: it applies at once there')
  // B had not heard of acme when it started: it learns of it by rereading the tenants.
  await until(b.app, 600, 'B applies the new tenant')
  const before = await openAs(b.app, key)
  assert.deepEqual(await introspectAs(b.app, key, before.token, elsewhere), {
    active: false,
    reason: 'suspended',
  })

  await changeTenant(a.app, 'acme', { idle_timeout: 120, ua_drift_policy: 'ignore' })
  assert.equal(await idleOn(a.app), 120, 'A applies its own change at once')
  await until(b.app, 120, 'B applies the change made through A')
  // The whole change arrived with it, not only the idle timeout.
  const after = await openAs(b.app, key)
  assert.equal(lifetimes(after).idle, 120)
  assert.equal((await introspectAs(b.app, key, after.token, elsewhere)).active, true)
  // The default tenant was not touched by acme's change.
  assert.equal(lifetimes(await openSession(b.app)).idle, b.config.idleTimeoutSeconds)
})

test('purge expires each tenant’s unseen sessions, and records each expiry in its own tenant’s history', async (t) => {
  const { app, clock, config } = await buildTestApp(t, { purgeIntervalMs: 0 })
  const keys = await strictAndLax(app)
  const byDefault = await tenantKey(app, 'default')
  const theirs = await openAs(app, keys.strict, { user_id: 'carol' })
  const ours = await openAs(app, byDefault, { user_id: 'carol', idle_timeout: 60 })
  // Purge allows another replica's unwritten use one write-behind interval.
  clock.advance(61 * SECOND + config.writeBehindIntervalMs)
  const purged = await app.inject({
    method: 'POST',
    url: '/v1/admin/purge',
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
  })
  assert.equal(purged.statusCode, 200, purged.body)
  assert.equal(purged.json().expired, 2)
  const history = async (key: string) =>
    (await eventsOf(app, key, 'carol')).map((e) => [e.session_id, e.type])
  assert.deepEqual(await history(keys.strict), [
    [theirs.session.id, 'session.expired'],
    [theirs.session.id, 'session.created'],
  ])
  assert.deepEqual(await history(byDefault), [
    [ours.session.id, 'session.expired'],
    [ours.session.id, 'session.created'],
  ])
  assert.deepEqual(await history(keys.lax), [])
  const [mismatched] = await app.db.sql`
    select count(*)::int as n from session_events e join sessions s on s.id = e.session_id
    where e.tenant_id <> s.tenant_id`
  assert.equal(mismatched?.n, 0, 'every event is its session’s tenant’s')
})
