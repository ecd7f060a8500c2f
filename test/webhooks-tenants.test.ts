import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../src/config.ts'
import { startCli } from './fixtures/process.ts'
import { type ReceivedRequest, type Receiver, signedByHand, startReceiver } from './fixtures/receiver.ts'
import {
  ADMIN_KEY,
  auth,
  buildTestApp,
  DATABASE_URL,
  dropSchema,
  eventually,
  TEST_KEK,
  uniqueSchema,
} from './helper.ts'

/**
 * Webhook subscriptions belong to a tenant: each receives its own tenant's
 * events only, and another tenant's admin finds neither it nor its deliveries.
 */

// The receiver listens on loopback, which webhooks may reach only when allowed (test/webhook-ssrf.test.ts).
const HOOKS: Partial<Config> = {
  webhookPollMs: 20,
  webhookBackoffMs: 10,
  webhookTimeoutMs: 1000,
  webhookAllowedCidrs: '127.0.0.0/8',
}

interface WebhookView {
  id: string
  tenant_id: string
  url: string
  event_types: string[]
  enabled: boolean
}

interface DeliveryView {
  id: string
  event_id: string
  event_type: string
  status: 'pending' | 'delivered' | 'dead'
  attempts: number
}

async function receiver(t: TestContext): Promise<Receiver> {
  const r = await startReceiver()
  t.after(() => r.close())
  return r
}

/** A new tenant and an admin key of it (made with the test's platform key). */
async function tenantWithAdmin(app: FastifyInstance, id: string): Promise<string> {
  const tenant = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(),
    payload: { id, name: `Tenant ${id}` },
  })
  assert.equal(tenant.statusCode, 201, tenant.body)
  const key = await app.inject({
    method: 'POST',
    url: '/v1/api-keys',
    headers: auth(),
    payload: { name: `${id} admin`, scopes: ['admin'], tenant_id: id },
  })
  assert.equal(key.statusCode, 201, key.body)
  return (key.json() as { key: string }).key
}

async function subscribe(app: FastifyInstance, key: string, url: string) {
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(key), payload: { url } })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as { webhook: WebhookView; secret: string }
}

async function openSession(app: FastifyInstance, key: string, userId: string) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(key),
    payload: { user_id: userId, ip: '203.0.113.7' },
  })
  assert.equal(res.statusCode, 201, res.body)
  return (res.json() as { session: { id: string } }).session.id
}

async function deliveries(app: FastifyInstance, key: string, webhookId: string): Promise<DeliveryView[]> {
  const res = await app.inject({
    method: 'GET',
    url: `/v1/webhooks/${webhookId}/deliveries?limit=200`,
    headers: auth(key),
  })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { deliveries: DeliveryView[] }).deliveries
}

async function listed(app: FastifyInstance, headers: Record<string, string>): Promise<string[]> {
  const res = await app.inject({ method: 'GET', url: '/v1/webhooks', headers })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { webhooks: WebhookView[] }).webhooks.map((w) => w.id).sort()
}

const sessionOf = (request: ReceivedRequest) =>
  (JSON.parse(request.body) as { data: { session_id: string } }).data.session_id

test("a tenant's events go to its own subscriptions only", async (t) => {
  const hooks = await receiver(t)
  const { app } = await buildTestApp(t, HOOKS)
  const keyA = await tenantWithAdmin(app, 'ta')
  const keyB = await tenantWithAdmin(app, 'tb')
  const a = await subscribe(app, keyA, hooks.url('/a'))
  const b = await subscribe(app, keyB, hooks.url('/b'))
  // The platform key makes one for its own tenant, the default one.
  const other = (await subscribe(app, ADMIN_KEY, hooks.url('/default'))).webhook
  assert.equal(a.webhook.tenant_id, 'ta')
  assert.equal(b.webhook.tenant_id, 'tb')
  assert.equal(other.tenant_id, 'default')

  const sessionA = await openSession(app, keyA, 'alice')
  const sessionB = await openSession(app, keyB, 'bob')

  // Deliveries are queued with the event, in its transaction: what each subscription will get is known now.
  const onlyA = await deliveries(app, keyA, a.webhook.id)
  assert.equal(onlyA.length, 1, JSON.stringify(onlyA))
  const onlyB = await deliveries(app, keyB, b.webhook.id)
  assert.equal(onlyB.length, 1, JSON.stringify(onlyB))
  assert.notEqual(onlyA[0]?.event_id, onlyB[0]?.event_id)
  assert.deepEqual(await deliveries(app, ADMIN_KEY, other.id), [], "the default tenant's gets neither")

  await hooks.waitFor(
    () => hooks.to('/a').some((r) => r.status === 200) && hooks.to('/b').some((r) => r.status === 200),
    10_000,
    'one delivery to each tenant',
  )
  assert.deepEqual([...new Set(hooks.to('/a').map(sessionOf))], [sessionA])
  assert.deepEqual([...new Set(hooks.to('/b').map(sessionOf))], [sessionB])
  assert.deepEqual(hooks.to('/default'), [])
  for (const r of hooks.to('/a')) assert.equal(signedByHand(a.secret, r), true)
  for (const r of hooks.to('/b')) assert.equal(signedByHand(b.secret, r), true)
})

test("another tenant's admin finds neither a subscription nor its deliveries (404), and lists its own only", async (t) => {
  const hooks = await receiver(t)
  const { app } = await buildTestApp(t, HOOKS)
  const keyA = await tenantWithAdmin(app, 'ta')
  const keyB = await tenantWithAdmin(app, 'tb')
  const a = await subscribe(app, keyA, hooks.url('/a'))
  const b = await subscribe(app, keyB, hooks.url('/b'))
  await openSession(app, keyA, 'alice')
  await eventually(
    async () => (await deliveries(app, keyA, a.webhook.id))[0]?.status === 'delivered',
    10_000,
    "A's delivery recorded",
  )
  const [delivery] = await deliveries(app, keyA, a.webhook.id)
  assert.ok(delivery)

  assert.deepEqual(await listed(app, auth(keyA)), [a.webhook.id])
  assert.deepEqual(await listed(app, auth(keyB)), [b.webhook.id])
  // The platform key sees every tenant's, or the one tenant it names.
  assert.deepEqual(await listed(app, auth()), [a.webhook.id, b.webhook.id].sort())
  assert.deepEqual(await listed(app, { ...auth(), 'x-tenant-id': 'tb' }), [b.webhook.id])

  const asB = (method: 'GET' | 'PATCH' | 'DELETE' | 'POST', url: string, payload?: object) =>
    app.inject({ method, url, headers: auth(keyB), ...(payload && { payload }) })
  const refused: Array<[Awaited<ReturnType<typeof asB>>, string]> = [
    [await asB('GET', `/v1/webhooks/${a.webhook.id}`), 'WEBHOOK_NOT_FOUND'],
    [await asB('PATCH', `/v1/webhooks/${a.webhook.id}`, { enabled: false }), 'WEBHOOK_NOT_FOUND'],
    [await asB('DELETE', `/v1/webhooks/${a.webhook.id}`), 'WEBHOOK_NOT_FOUND'],
    [await asB('GET', `/v1/webhooks/${a.webhook.id}/deliveries`), 'WEBHOOK_NOT_FOUND'],
    [await asB('POST', `/v1/webhooks/deliveries/${delivery.id}/retry`), 'DELIVERY_NOT_FOUND'],
  ]
  for (const [res, code] of refused) {
    assert.equal(res.statusCode, 404, res.body)
    assert.equal(res.json().error.code, code)
  }

  // None of it changed anything of A's.
  const still = await app.inject({ method: 'GET', url: `/v1/webhooks/${a.webhook.id}`, headers: auth(keyA) })
  assert.equal(still.statusCode, 200, still.body)
  assert.deepEqual(still.json(), a.webhook)
  const [unchanged] = await deliveries(app, keyA, a.webhook.id)
  assert.equal(unchanged?.status, 'delivered')
  assert.equal(unchanged?.attempts, 1)

  // A's own admin may do each of them.
  const retried = await app.inject({
    method: 'POST',
    url: `/v1/webhooks/deliveries/${delivery.id}/retry`,
    headers: auth(keyA),
  })
  assert.equal(retried.statusCode, 200, retried.body)
  assert.equal(retried.json().id, delivery.id)
  const patched = await app.inject({
    method: 'PATCH',
    url: `/v1/webhooks/${a.webhook.id}`,
    headers: auth(keyA),
    payload: { enabled: false },
  })
  assert.equal(patched.statusCode, 200, patched.body)
  assert.equal(patched.json().enabled, false)
  const deleted = await app.inject({
    method: 'DELETE',
    url: `/v1/webhooks/${a.webhook.id}`,
    headers: auth(keyA),
  })
  assert.equal(deleted.statusCode, 204, deleted.body)
  assert.deepEqual(await listed(app, auth(keyA)), [])
  assert.deepEqual(await listed(app, auth(keyB)), [b.webhook.id])

  // A tenant that does not exist has no subscriptions to make.
  const nowhere = await app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: { ...auth(), 'x-tenant-id': 'nope' },
    payload: { url: hooks.url('/nowhere') },
  })
  assert.equal(nowhere.statusCode, 404, nowhere.body)
  assert.equal(nowhere.json().error.code, 'TENANT_NOT_FOUND')
})

async function cli(args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  const [code] = await once(run.child, 'exit')
  return { code: code as number, output: run.output() }
}

test('CLI: webhooks create --tenant subscribes for that tenant; list shows each tenant', async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = {
    DATABASE_URL,
    DB_SCHEMA: schema,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    LOG_LEVEL: 'warn',
    WEBHOOK_ALLOWED_CIDRS: '127.0.0.0/8',
  }
  assert.equal((await cli(['tenants', 'create', '--id', 't2', '--name', 'Two'], env)).code, 0)
  const created = await cli(['webhooks', 'create', '--url', 'http://127.0.0.1:9/t2', '--tenant', 't2'], env)
  assert.equal(created.code, 0, created.output)
  const id = created.output.match(/\bwh_[0-9a-f]{16}\b/)?.[0]
  assert.ok(id, created.output)
  const plain = await cli(['webhooks', 'create', '--url', 'http://127.0.0.1:9/default'], env)
  assert.equal(plain.code, 0, plain.output)
  const defaultId = plain.output.match(/\bwh_[0-9a-f]{16}\b/)?.[0]
  assert.ok(defaultId, plain.output)
  const missing = await cli(['webhooks', 'create', '--url', 'http://127.0.0.1:9/x', '--tenant', 'nope'], env)
  assert.equal(missing.code, 1, missing.output)
  assert.match(missing.output.trim(), /^session-authority: tenant nope not found$/)

  const list = await cli(['webhooks', 'list'], env)
  assert.equal(list.code, 0, list.output)
  const lines = list.output.trim().split('\n').sort()
  assert.deepEqual(
    lines,
    [
      `${id}\thttp://127.0.0.1:9/t2\t*\tenabled\tt2`,
      `${defaultId}\thttp://127.0.0.1:9/default\t*\tenabled\tdefault`,
    ].sort(),
  )
})
