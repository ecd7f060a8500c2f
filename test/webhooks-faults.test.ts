import assert from 'node:assert/strict'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { freePort, startCli, stop, waitForOk } from './fixtures/process.ts'
import { type ReceivedRequest, signedByHand, startReceiver } from './fixtures/receiver.ts'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'
import {
  ADMIN_KEY,
  auth,
  buildTestApp,
  DATABASE_URL,
  dropSchema,
  eventually,
  openSession,
  TEST_KEK,
  uniqueSchema,
} from './helper.ts'

/**
 * Webhook delivery through failures: a dispatcher process killed with a
 * request in flight, and Postgres going away under a polling dispatcher. The
 * promise is at least once (a receiver may see an event twice, never twice at
 * the same time) and no event lost.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const ms = (x: number) => `${Math.round(x)} ms`

interface EventView {
  id: string
  type: string
  session_id: string
}

interface DeliveryView {
  id: string | number
  event_id: string | number
  status: string
  attempts: number
}

const answered = (hooks: { requests: ReceivedRequest[] }) =>
  new Set(hooks.requests.filter((r) => r.status !== null && r.status < 300).map((r) => r.webhookId))

test('a dispatcher killed mid-delivery: another process delivers every event, the hung one again under its webhook-id', async (t) => {
  const hooks = await startReceiver()
  const schema = uniqueSchema()
  const children: Array<ReturnType<typeof startCli>> = []
  t.after(async () => {
    for (const { child } of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    await Promise.all(
      children.map(({ child }) =>
        child.exitCode === null && child.signalCode === null ? once(child, 'exit') : null,
      ),
    )
    await dropSchema(schema)
    await hooks.close()
  })
  const serve = async () => {
    const port = await freePort()
    const run = startCli(['serve'], {
      PORT: String(port),
      DATABASE_URL,
      DB_SCHEMA: schema,
      ADMIN_API_KEY: ADMIN_KEY,
      SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
      WEBHOOK_POLL_MS: '20',
      WEBHOOK_TIMEOUT_MS: '1000',
      WEBHOOK_ALLOWED_CIDRS: '127.0.0.0/8',
      LOG_LEVEL: 'warn',
    })
    children.push(run)
    const base = `http://127.0.0.1:${port}`
    await waitForOk(`${base}/readyz`, run.child, 30_000, run.output)
    return { ...run, base }
  }
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }
  const post = async (base: string, path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
    const text = await res.text()
    assert.equal(res.status, path === '/v1/webhooks' || path === '/v1/sessions' ? 201 : 200, text)
    return JSON.parse(text)
  }
  const get = async (base: string, path: string) => {
    const res = await fetch(`${base}${path}`, { headers })
    const text = await res.text()
    assert.equal(res.status, 200, text)
    return JSON.parse(text)
  }

  const first = await serve()
  hooks.queue([{ hang: true }])
  const { webhook, secret } = (await post(first.base, '/v1/webhooks', { url: hooks.url('/crash') })) as {
    webhook: { id: string }
    secret: string
  }
  for (const user of ['alice', 'bob', 'carol']) await post(first.base, '/v1/sessions', { user_id: user })
  // The first request hangs (the others may or may not have gone out by the kill).
  await hooks.waitFor((r) => r[0]?.completedAt === null, 10_000, 'the first request in flight')
  const hung = hooks.requests[0] as ReceivedRequest
  // The first process dies with the request in flight: no outcome is ever recorded for it.
  first.child.kill('SIGKILL')
  await once(first.child, 'exit')
  await hooks.waitFor(() => hung.completedAt !== null, 5000, 'the hung request dropped with its process')
  assert.equal(hung.aborted, true)
  hooks.releaseHung()

  const second = await serve()
  const events = (await get(second.base, '/v1/events?limit=200')).events as EventView[]
  assert.equal(events.length, 3)
  const expected = events.map((e) => `evt_${e.id}`).sort()
  assert.ok(expected.includes(hung.webhookId), `${hung.webhookId} is one of ${expected}`)
  await hooks.waitFor(
    () => answered(hooks).size === 3,
    20_000,
    'every event delivered after the crash (the lease is 2 × 1000 + 1000 ms)',
  )
  await eventually(
    async () => {
      const { deliveries } = (await get(second.base, `/v1/webhooks/${webhook.id}/deliveries`)) as {
        deliveries: DeliveryView[]
      }
      return deliveries.length === 3 && deliveries.every((d) => d.status === 'delivered')
    },
    5000,
    'all deliveries recorded delivered',
  )

  assert.deepEqual([...answered(hooks)].sort(), expected)
  const again = hooks.requests.filter((r) => r.webhookId === hung.webhookId)
  assert.equal(again.length, 2, 'the hung one is sent once more')
  const retried = again[1] as ReceivedRequest
  assert.equal(retried.status, 200)
  assert.equal(signedByHand(secret, retried), true)
  const gap = retried.arrivedAt - hung.arrivedAt
  // Not before its lease (claimed just before it arrived) ran out.
  assert.ok(gap >= 2500, `sent again ${ms(gap)} after the first try, within its 3000 ms lease`)
  assert.deepEqual(hooks.overlaps(), [], 'never two requests with one webhook-id at once')
  t.diagnostic(
    `the hung delivery was sent again ${ms(gap)} after its first try; ` +
      `${hooks.requests.length} requests for 3 events`,
  )
  assert.equal(await stop(second.child), 0, second.output())
})

test('no event lost across a Postgres outage under a polling dispatcher', async (t) => {
  const hooks = await startReceiver()
  t.after(() => hooks.close())
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 })
  let app: FastifyInstance
  let clock: { advance(ms: number): void }
  try {
    ;({ app, clock } = await buildTestApp(t, {
      webhookPollMs: 20,
      webhookBackoffMs: 10,
      webhookTimeoutMs: 1000,
      webhookAllowedCidrs: '127.0.0.0/8',
      databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
    }))
  } catch (err) {
    await proxy.close()
    throw err
  }
  // Registered after the app's teardown, so the app closes its pool while the proxy still runs.
  t.after(() => proxy.close())

  // Slow enough answers that requests are in flight when Postgres goes.
  hooks.respond(() => ({ status: 200, delayMs: 300 }))
  const created = await app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: auth(),
    payload: { url: hooks.url('/pg') },
  })
  assert.equal(created.statusCode, 201, created.body)
  const webhookId = created.json().webhook.id as string

  for (let i = 0; i < 5; i++) await openSession(app, { user_id: `early${i}` })
  await hooks.waitFor((r) => r.some((x) => x.completedAt === null), 5000, 'a delivery in flight')
  // Committed right before the cut, most likely not yet claimed.
  for (let i = 0; i < 2; i++) await openSession(app, { user_id: `last${i}` })
  const cutAt = performance.now()
  await proxy.cut()
  const inFlightAtCut = hooks.inFlight().length
  await sleep(800)
  await proxy.restore()
  const restoredAt = performance.now()

  // The app reaches Postgres again by itself.
  await eventually(
    async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200,
    10_000,
    'ready again',
  )
  for (let i = 0; i < 3; i++) await openSession(app, { user_id: `after${i}` })

  const res = await app.inject({ method: 'GET', url: '/v1/events?limit=200', headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  const events = res.json().events as EventView[]
  assert.equal(events.length, 10)
  const expected = events.map((e) => `evt_${e.id}`).sort()

  const deliveredRows = async () => {
    const list = await app.inject({
      method: 'GET',
      url: `/v1/webhooks/${webhookId}/deliveries?limit=100`,
      headers: auth(),
    })
    if (list.statusCode !== 200) return -1
    return (list.json().deliveries as DeliveryView[]).filter((d) => d.status === 'delivered').length
  }
  // A delivery whose outcome could not be written stays leased (2 × 1000 + 1000 ms of
  // service time); the clock moves at twice real time, never past a request in flight.
  const deadline = Date.now() + 30_000
  while (answered(hooks).size < 10 || (await deliveredRows()) !== 10) {
    assert.ok(
      Date.now() < deadline,
      `not all delivered: ${answered(hooks).size}/10 answered, ${await deliveredRows()} recorded`,
    )
    clock.advance(20)
    await sleep(10)
  }

  assert.deepEqual(
    [...answered(hooks)].sort(),
    expected,
    'every event delivered, those right before the cut too',
  )
  assert.deepEqual(hooks.overlaps(), [], 'never two requests with one webhook-id at once')
  const duplicates = hooks.requests.length - new Set(hooks.requests.map((r) => r.webhookId)).size
  t.diagnostic(
    `${inFlightAtCut} requests in flight at the cut; Postgres away ${ms(restoredAt - cutAt)}; ` +
      `${hooks.requests.length} requests for 10 events (${duplicates} sent again)`,
  )
})
