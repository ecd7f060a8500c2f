import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../src/config.ts'
import { startCli } from './fixtures/process.ts'
import {
  type ReceivedRequest,
  type Receiver,
  signedByHand,
  startReceiver,
  verifiedByLibrary,
} from './fixtures/receiver.ts'
import {
  adminSql,
  auth,
  buildTestApp,
  createKey,
  DATABASE_URL,
  dropSchema,
  eventually,
  openSession,
  revokeSession,
  TEST_KEK,
  twoReplicas,
  uniqueSchema,
} from './helper.ts'

/**
 * Session events as signed webhooks (Standard Webhooks), delivered from an
 * outbox by a dispatcher in each replica, at least once and never twice at
 * the same time. The receiver is a real HTTP server on a local port
 * (test/fixtures/receiver.ts). Scheduling (due times, backoff, leases) runs on
 * each app's manual clock: a retry becomes due only when the test moves it.
 */

// The receivers listen on loopback, which webhooks may reach only when allowed (test/webhook-ssrf.test.ts).
const HOOKS: Partial<Config> = {
  webhookPollMs: 20,
  webhookBackoffMs: 10,
  webhookTimeoutMs: 1000,
  webhookAllowedCidrs: '127.0.0.0/8',
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface WebhookView {
  id: string
  url: string
  event_types: string[]
  enabled: boolean
  created_at: string
  updated_at: string
}

interface DeliveryView {
  id: string | number
  event_id: string | number
  event_type: string
  status: 'pending' | 'delivered' | 'dead'
  attempts: number
  next_attempt_at: string
  last_status: number | null
  last_error: string | null
  created_at: string
  delivered_at: string | null
}

interface EventView {
  id: string
  session_id: string
  type: string
  data: Record<string, unknown>
  created_at: string
}

interface Payload {
  type: string
  timestamp: string
  data: { event_id: string | number; session_id: string; user_id: string } & Record<string, unknown>
}

type Clock = { advance(ms: number): void }

/** A receiver closed after the test. */
async function receiver(t: TestContext): Promise<Receiver> {
  const r = await startReceiver()
  t.after(() => r.close())
  return r
}

/** The reply's object, whether the route answers it bare or wrapped as { [key]: ... }. */
function unwrap<T>(body: Record<string, unknown>, key: string): T {
  return (key in body && typeof body[key] === 'object' ? body[key] : body) as T
}

async function createWebhook(app: FastifyInstance, body: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: body })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as { webhook: WebhookView; secret: string }
}

async function patchWebhook(app: FastifyInstance, id: string, body: Record<string, unknown>) {
  const res = await app.inject({ method: 'PATCH', url: `/v1/webhooks/${id}`, headers: auth(), payload: body })
  assert.equal(res.statusCode, 200, res.body)
  return unwrap<WebhookView>(res.json(), 'webhook')
}

/** Every delivery of a webhook (all pages), optionally of one status. */
async function deliveries(app: FastifyInstance, webhookId: string, status?: string): Promise<DeliveryView[]> {
  const all: DeliveryView[] = []
  let before: string | null = null
  for (;;) {
    const query = new URLSearchParams({ limit: '100' })
    if (status) query.set('status', status)
    if (before) query.set('before', before)
    const res = await app.inject({
      method: 'GET',
      url: `/v1/webhooks/${webhookId}/deliveries?${query}`,
      headers: auth(),
    })
    assert.equal(res.statusCode, 200, res.body)
    const page = res.json() as { deliveries: DeliveryView[]; next_cursor: string | number | null }
    all.push(...page.deliveries)
    if (page.next_cursor === null || page.next_cursor === undefined || page.deliveries.length === 0)
      return all
    before = String(page.next_cursor)
  }
}

/** The only delivery of a webhook. */
async function onlyDelivery(app: FastifyInstance, webhookId: string): Promise<DeliveryView> {
  const list = await deliveries(app, webhookId)
  assert.equal(list.length, 1, JSON.stringify(list))
  return list[0] as DeliveryView
}

/** Every event matching an admin query on /v1/events (all pages), newest first. */
async function allEvents(app: FastifyInstance, query: Record<string, string> = {}): Promise<EventView[]> {
  const all: EventView[] = []
  let before: string | null = null
  for (;;) {
    const params = new URLSearchParams({ limit: '100', ...query })
    if (before) params.set('before', before)
    const res = await app.inject({ method: 'GET', url: `/v1/events?${params}`, headers: auth() })
    assert.equal(res.statusCode, 200, res.body)
    const page = res.json() as { events: EventView[]; next_cursor: string | null }
    all.push(...page.events)
    if (!page.next_cursor || page.events.length === 0) return all
    before = page.next_cursor
  }
}

async function userEvents(app: FastifyInstance, userId: string): Promise<EventView[]> {
  const res = await app.inject({
    method: 'GET',
    url: `/v1/users/${userId}/events?limit=200`,
    headers: auth(),
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().events
}

const payload = (request: ReceivedRequest) => JSON.parse(request.body) as Payload
const done = (r: ReceivedRequest) => r.completedAt !== null

/**
 * Waits for `check` while moving the manual clocks forward no faster than real
 * time, as a real clock would: a retry becomes due, while a lease (2 × the
 * request timeout + 1 s) never lapses under a request still in flight.
 */
async function pump(
  clocks: Clock[],
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    for (const clock of clocks) clock.advance(10)
    await sleep(10)
  }
  throw new Error(`${what} did not hold within ${timeoutMs} ms`)
}

/** Sum of the samples of a metric whose labels include all of `labels` (0 if absent). */
async function metric(app: FastifyInstance, name: string, labels: Record<string, string> = {}) {
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  assert.equal(res.statusCode, 200)
  let sum = 0
  for (const line of res.body.split('\n')) {
    const match = /^([a-zA-Z0-9_:]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const have = match[2] ?? ''
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) sum += Number(match[3])
  }
  return sum
}

/** Milliseconds from the clock's now to a delivery's next attempt. */
const waitOf = (d: DeliveryView, clock: { now(): number }) => Date.parse(d.next_attempt_at) - clock.now()

test('a webhook shows its secret once; a new session reaches the receiver signed (Standard Webhooks)', async (t) => {
  const hooks = await receiver(t)
  const { app, logs } = await buildTestApp(t, HOOKS)

  for (const bad of [{}, { url: 'ftp://example.com/x' }, { url: 'not a url' }]) {
    const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: bad })
    assert.equal(res.statusCode, 400, `${JSON.stringify(bad)}: ${res.body}`)
  }

  const url = hooks.url('/hooks/sessions?tenant=1')
  const { webhook, secret } = await createWebhook(app, { url })
  assert.match(webhook.id, /^wh_/)
  assert.equal(webhook.url, url)
  assert.deepEqual(webhook.event_types, [])
  assert.equal(webhook.enabled, true)
  assert.ok(!Number.isNaN(Date.parse(webhook.created_at)) && !Number.isNaN(Date.parse(webhook.updated_at)))
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/)
  const key = secret.slice('whsec_'.length)
  assert.equal(Buffer.from(key, 'base64').length, 32)

  // Never again: not in the list, not in the webhook, not in the logs.
  const list = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: auth() })
  assert.equal(list.statusCode, 200, list.body)
  assert.deepEqual(
    (list.json().webhooks as WebhookView[]).find((w) => w.id === webhook.id),
    webhook,
  )
  assert.ok(!list.body.includes(key), 'the secret is not listed')
  const one = await app.inject({ method: 'GET', url: `/v1/webhooks/${webhook.id}`, headers: auth() })
  assert.equal(one.statusCode, 200, one.body)
  assert.deepEqual(unwrap<WebhookView>(one.json(), 'webhook'), webhook)
  assert.ok(!one.body.includes(key))
  const missing = await app.inject({
    method: 'GET',
    url: '/v1/webhooks/wh_0000000000000000',
    headers: auth(),
  })
  assert.equal(missing.statusCode, 404, missing.body)
  assert.equal(missing.json().error.code, 'WEBHOOK_NOT_FOUND')

  const opened = await openSession(app, { user_id: 'alice' })
  await hooks.waitFor((r) => r.length >= 1 && r.every(done), 5000, 'the delivery')
  const [event] = await userEvents(app, 'alice')
  assert.ok(event)
  assert.equal(event.type, 'session.created')

  const [request] = hooks.requests
  assert.ok(request)
  assert.equal(request.method, 'POST')
  assert.equal(request.url, '/hooks/sessions?tenant=1')
  assert.match(String(request.headers['content-type']), /^application\/json/)
  const body = payload(request)
  assert.equal(body.type, 'session.created')
  assert.equal(Date.parse(body.timestamp), Date.parse(event.created_at), 'timestamp: the event time')
  assert.equal(String(body.data.event_id), event.id)
  assert.equal(body.data.session_id, opened.session.id)
  assert.equal(body.data.user_id, 'alice')

  assert.equal(request.webhookId, `evt_${event.id}`)
  const timestamp = String(request.headers['webhook-timestamp'])
  assert.match(timestamp, /^[0-9]+$/)
  const skew = Math.abs(Number(timestamp) - Date.now() / 1000)
  assert.ok(skew < 60, `webhook-timestamp is real unix time (off by ${skew} s)`)
  assert.match(String(request.headers['webhook-signature']), /^v1,[A-Za-z0-9+/]{43}=/)
  assert.equal(signedByHand(secret, request), true, 'HMAC-SHA256 by hand')
  assert.deepEqual(verifiedByLibrary(secret, request), body, 'standardwebhooks verifies it')

  // Sanity: the checks do reject a changed body or another secret.
  const tampered = request.body.replace('"alice"', '"alicf"')
  assert.notEqual(tampered, request.body)
  assert.equal(signedByHand(secret, request, tampered), false)
  assert.throws(() => verifiedByLibrary(secret, request, tampered))
  const other = `whsec_${Buffer.alloc(32, 7).toString('base64')}`
  assert.equal(signedByHand(other, request), false)
  assert.throws(() => verifiedByLibrary(other, request))

  const delivery = await eventually(
    async () => (await onlyDelivery(app, webhook.id)).status === 'delivered',
    3000,
    'delivery recorded',
  ).then(() => onlyDelivery(app, webhook.id))
  assert.equal(String(delivery.event_id), event.id)
  assert.equal(delivery.event_type, 'session.created')
  assert.equal(delivery.attempts, 1)
  assert.equal(delivery.last_status, 200)
  assert.ok(delivery.delivered_at)

  await sleep(200)
  assert.equal(hooks.requests.length, 1, 'one request per event')
  assert.ok(!logs.text().includes(key), 'the secret is never logged')
})

test('event_types filters; a disabled webhook gets nothing; a webhook gets no event older than itself', async (t) => {
  const hooks = await receiver(t)
  const { app } = await buildTestApp(t, HOOKS)
  const all = await createWebhook(app, { url: hooks.url('/all') })
  const revoked = await createWebhook(app, { url: hooks.url('/revoked'), event_types: ['session.revoked'] })
  assert.deepEqual(revoked.webhook.event_types, ['session.revoked'])
  const disabled = await createWebhook(app, { url: hooks.url('/disabled') })
  assert.equal((await patchWebhook(app, disabled.webhook.id, { enabled: false })).enabled, false)
  const reread = await app.inject({
    method: 'GET',
    url: `/v1/webhooks/${disabled.webhook.id}`,
    headers: auth(),
  })
  assert.equal(unwrap<WebhookView>(reread.json(), 'webhook').enabled, false)

  const first = await openSession(app, { user_id: 'alice' })
  const revoke = await app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${first.session.id}?reason=user-logout`,
    headers: auth(),
  })
  assert.equal(revoke.statusCode, 200, revoke.body)
  await hooks.waitFor(
    () => hooks.to('/all').length >= 2 && hooks.to('/revoked').length >= 1,
    5000,
    'created and revoked delivered',
  )

  const late = await createWebhook(app, { url: hooks.url('/late') })
  const second = await openSession(app, { user_id: 'bob' })
  await hooks.waitFor(
    () => hooks.to('/all').length >= 3 && hooks.to('/late').length >= 1,
    5000,
    'the second session delivered',
  )
  await sleep(300)

  const types = (path: string) =>
    hooks
      .to(path)
      .map((r) => `${payload(r).type} ${payload(r).data.session_id}`)
      .sort()
  assert.deepEqual(
    types('/all'),
    [
      `session.created ${first.session.id}`,
      `session.created ${second.session.id}`,
      `session.revoked ${first.session.id}`,
    ].sort(),
  )
  assert.deepEqual(types('/revoked'), [`session.revoked ${first.session.id}`])
  assert.deepEqual(
    types('/late'),
    [`session.created ${second.session.id}`],
    'no event older than the webhook',
  )
  assert.deepEqual(types('/disabled'), [], 'a disabled webhook gets nothing')
  assert.deepEqual(await deliveries(app, disabled.webhook.id), [])
  assert.equal((await deliveries(app, late.webhook.id)).length, 1)

  const [revocation] = hooks.to('/revoked')
  assert.ok(revocation)
  assert.equal(payload(revocation).data.reason, 'user-logout')
  assert.equal(payload(revocation).data.user_id, 'alice')
  assert.equal(signedByHand(revoked.secret, revocation), true)
  assert.equal(signedByHand(all.secret, revocation), false, 'each webhook signs with its own secret')
  // One event, one webhook-id, whichever webhook it goes to.
  const sameEvent = hooks.to('/all').find((r) => payload(r).type === 'session.revoked')
  assert.equal(sameEvent?.webhookId, revocation.webhookId)

  // Enabled again (and narrowed), it gets the events from then on.
  const patched = await patchWebhook(app, disabled.webhook.id, {
    enabled: true,
    event_types: ['session.created'],
  })
  assert.equal(patched.enabled, true)
  assert.deepEqual(patched.event_types, ['session.created'])
  const third = await openSession(app, { user_id: 'carol' })
  await revokeSession(app, third.session.id)
  await hooks.waitFor(() => hooks.to('/revoked').length >= 2, 5000, 'the third revocation')
  await sleep(200)
  assert.deepEqual(types('/disabled'), [`session.created ${third.session.id}`])

  // Deleted, it takes its deliveries along and gets no more.
  const deleted = await app.inject({
    method: 'DELETE',
    url: `/v1/webhooks/${late.webhook.id}`,
    headers: auth(),
  })
  assert.equal(deleted.statusCode, 204, deleted.body)
  const gone = await app.inject({ method: 'GET', url: `/v1/webhooks/${late.webhook.id}`, headers: auth() })
  assert.equal(gone.statusCode, 404)
  const goneDeliveries = await app.inject({
    method: 'GET',
    url: `/v1/webhooks/${late.webhook.id}/deliveries`,
    headers: auth(),
  })
  assert.equal(goneDeliveries.statusCode, 404, goneDeliveries.body)
  const lateCount = hooks.to('/late').length
  await openSession(app, { user_id: 'dave' })
  await hooks.waitFor(() => hooks.to('/disabled').length >= 2, 5000, 'the fourth session')
  await sleep(200)
  assert.equal(hooks.to('/late').length, lateCount)
})

test('a change that rolls back writes no event and no delivery (login refused by the session limit)', async (t) => {
  const hooks = await receiver(t)
  const { app } = await buildTestApp(t, HOOKS)
  const { webhook } = await createWebhook(app, { url: hooks.url('/all') })
  const limit = { user_id: 'dave', max_sessions: 1, on_limit: 'reject' }
  const held = await openSession(app, limit)
  const refused = await app.inject({ method: 'POST', url: '/v1/sessions', headers: auth(), payload: limit })
  assert.equal(refused.statusCode, 409, refused.body)
  assert.equal(refused.json().error.code, 'SESSION_LIMIT_REACHED')

  // A later event as a marker: once it is delivered, the dispatcher has passed over everything before it.
  const marker = await openSession(app, { user_id: 'marker' })
  await hooks.waitFor((r) => r.some((x) => x.body.includes(marker.session.id)), 5000, 'the marker')
  await sleep(200)

  const daves = await userEvents(app, 'dave')
  assert.deepEqual(
    daves.map((e) => `${e.type} ${e.session_id}`),
    [`session.created ${held.session.id}`],
  )
  assert.deepEqual(
    (await allEvents(app, { user_id: 'dave' })).map((e) => e.id),
    daves.map((e) => e.id),
  )
  assert.deepEqual(
    hooks.requests.map((r) => `${payload(r).type} ${payload(r).data.session_id}`).sort(),
    [`session.created ${held.session.id}`, `session.created ${marker.session.id}`].sort(),
  )
  assert.equal((await deliveries(app, webhook.id)).length, 2)

  // Contrast: an evicting login commits, and its revocation is delivered like any other event.
  const evicting = await openSession(app, { user_id: 'dave', max_sessions: 1, on_limit: 'evict_oldest' })
  await hooks.waitFor((r) => r.length >= 4, 5000, 'eviction and login delivered')
  const evicted = hooks.requests.find((r) => payload(r).type === 'session.revoked')
  assert.equal(evicted && payload(evicted).data.session_id, held.session.id)
  assert.equal(evicted && payload(evicted).data.reason, 'session_limit')
  assert.ok(hooks.requests.some((r) => payload(r).data.session_id === evicting.session.id))
})

test('a failing receiver is retried with backoff on the service clock, under the same webhook-id', async (t) => {
  const hooks = await receiver(t)
  const { app, clock } = await buildTestApp(t, { ...HOOKS, webhookMaxAttempts: 3 })
  // Two different failures: a claim counts the attempt before its outcome is recorded, so the
  // status is what tells that this attempt's outcome is in.
  hooks.queue([{ status: 500 }, { status: 503 }])
  const { webhook, secret } = await createWebhook(app, { url: hooks.url('/flaky') })
  const opened = await openSession(app)
  const [event] = await userEvents(app, 'alice')
  assert.ok(event)

  for (const [attempt, status, [low, high]] of [
    [1, 500, [5, 10]],
    [2, 503, [10, 20]],
  ] as const) {
    await hooks.waitFor((r) => r.length === attempt && r.every(done), 5000, `attempt ${attempt}`)
    await eventually(
      async () => {
        const d = await onlyDelivery(app, webhook.id)
        return d.attempts === attempt && d.last_status === status
      },
      3000,
      `attempt ${attempt} recorded`,
    )
    const d = await onlyDelivery(app, webhook.id)
    assert.equal(d.status, 'pending')
    // Retry n waits between half and all of backoff × 2^(n-1) (1 ms slack for rounding).
    const wait = waitOf(d, clock)
    assert.ok(wait >= low - 1 && wait <= high + 1, `retry ${attempt} due in ${wait} ms, not ${low}–${high}`)
    // The clock stands still, so the retry is not due yet.
    await sleep(150)
    assert.equal(hooks.requests.length, attempt, 'no retry before it is due on the service clock')
    clock.advance(500)
  }

  await hooks.waitFor((r) => r.length === 3 && r.every(done), 5000, 'attempt 3')
  await eventually(
    async () => (await onlyDelivery(app, webhook.id)).status === 'delivered',
    3000,
    'delivered',
  )
  const d = await onlyDelivery(app, webhook.id)
  assert.equal(d.attempts, 3)
  assert.equal(d.last_status, 200)
  assert.ok(d.delivered_at)
  assert.deepEqual(
    hooks.requests.map((r) => r.status),
    [500, 503, 200],
  )
  for (const r of hooks.requests) {
    assert.equal(r.webhookId, `evt_${event.id}`, 'the same webhook-id on every attempt')
    assert.equal(signedByHand(secret, r), true)
    verifiedByLibrary(secret, r)
    assert.equal(payload(r).data.session_id, opened.session.id)
  }
  clock.advance(3_600_000)
  await sleep(200)
  assert.equal(hooks.requests.length, 3, 'nothing more once delivered')
})

test('a receiver that hangs past webhookTimeoutMs counts as a failure and is retried', async (t) => {
  const hooks = await receiver(t)
  const { app, clock } = await buildTestApp(t, { ...HOOKS, webhookTimeoutMs: 300 })
  hooks.queue([{ hang: true }])
  const { webhook } = await createWebhook(app, { url: hooks.url('/slow') })
  await openSession(app)

  await hooks.waitFor((r) => r.length === 1 && r.every(done), 5000, 'the first request given up')
  const [first] = hooks.requests
  assert.ok(first?.aborted && first.completedAt !== null)
  const held = first.completedAt - first.arrivedAt
  assert.ok(held >= 250 && held < 2000, `the dispatcher gave up after ${Math.round(held)} ms (timeout 300)`)
  await eventually(
    async () => {
      const d = await onlyDelivery(app, webhook.id)
      return d.attempts === 1 && d.last_error !== null
    },
    3000,
    'the timeout recorded',
  )
  const failed = await onlyDelivery(app, webhook.id)
  assert.equal(failed.status, 'pending')
  assert.equal(failed.last_status, null)
  assert.ok(failed.last_error)
  await sleep(100)
  assert.equal(hooks.requests.length, 1)

  clock.advance(500)
  await hooks.waitFor((r) => r.length === 2 && r.every(done), 5000, 'the retry')
  await eventually(
    async () => (await onlyDelivery(app, webhook.id)).status === 'delivered',
    3000,
    'delivered',
  )
  const [, second] = hooks.requests
  assert.equal(second?.status, 200)
  assert.equal(second?.webhookId, first.webhookId)
  assert.ok(second.arrivedAt >= first.completedAt, 'never two at the same time')
  assert.equal((await onlyDelivery(app, webhook.id)).attempts, 2)
})

test('a redirect is a failure and is not followed', async (t) => {
  const hooks = await receiver(t)
  const { app, clock } = await buildTestApp(t, HOOKS)
  hooks.queue([{ status: 302, headers: { location: hooks.url('/elsewhere') } }])
  const { webhook } = await createWebhook(app, { url: hooks.url('/moved') })
  await openSession(app)
  await hooks.waitFor((r) => r.length === 1 && r.every(done), 5000, 'the first request')
  await eventually(
    async () => (await onlyDelivery(app, webhook.id)).last_status === 302,
    3000,
    'the redirect recorded',
  )
  const d = await onlyDelivery(app, webhook.id)
  assert.equal(d.status, 'pending')
  assert.equal(d.attempts, 1)
  await sleep(100)
  assert.deepEqual(hooks.to('/elsewhere'), [], 'the redirect is not followed')
  clock.advance(500)
  await eventually(
    async () => (await onlyDelivery(app, webhook.id)).status === 'delivered',
    5000,
    'delivered on retry',
  )
  assert.deepEqual(
    hooks.requests.map((r) => r.url),
    ['/moved', '/moved'],
  )
})

test('after webhookMaxAttempts failures a delivery is dead; a manual retry sends it again', async (t) => {
  const hooks = await receiver(t)
  const { app, clock } = await buildTestApp(t, { ...HOOKS, webhookMaxAttempts: 3 })
  hooks.respond(() => ({ status: 503 }))
  const { webhook, secret } = await createWebhook(app, { url: hooks.url('/down') })
  await openSession(app)

  for (let attempt = 1; attempt <= 3; attempt++) {
    await hooks.waitFor((r) => r.length === attempt && r.every(done), 5000, `attempt ${attempt}`)
    const status = attempt < 3 ? 'pending' : 'dead'
    await eventually(
      async () => {
        const d = await onlyDelivery(app, webhook.id)
        return d.attempts === attempt && d.last_status === 503 && d.status === status
      },
      3000,
      `attempt ${attempt} recorded as ${status}`,
    )
    clock.advance(500)
  }
  const [dead] = await deliveries(app, webhook.id, 'dead')
  assert.ok(dead, 'listed under status=dead')
  assert.equal(dead.attempts, 3)
  assert.equal(dead.last_status, 503)
  assert.ok('last_error' in dead)
  assert.equal(dead.delivered_at, null)
  assert.deepEqual(await deliveries(app, webhook.id, 'pending'), [])
  assert.deepEqual(await deliveries(app, webhook.id, 'delivered'), [])
  clock.advance(24 * 3_600_000)
  await sleep(200)
  assert.equal(hooks.requests.length, 3, 'a dead delivery is not sent again by itself')

  hooks.respond(() => undefined)
  const retry = await app.inject({
    method: 'POST',
    url: `/v1/webhooks/deliveries/${dead.id}/retry`,
    headers: auth(),
  })
  assert.equal(retry.statusCode, 200, retry.body)
  const reset = unwrap<DeliveryView>(retry.json(), 'delivery')
  assert.equal(String(reset.id), String(dead.id))
  assert.equal(reset.status, 'pending')
  assert.equal(reset.attempts, 0)
  // Due now: no clock move needed.
  await hooks.waitFor((r) => r.length === 4 && r.every(done), 5000, 'the manual retry')
  await eventually(
    async () => (await onlyDelivery(app, webhook.id)).status === 'delivered',
    3000,
    'delivered after the manual retry',
  )
  const delivered = await onlyDelivery(app, webhook.id)
  assert.equal(delivered.attempts, 1)
  assert.equal(delivered.last_status, 200)
  const [firstTry, , , manual] = hooks.requests
  assert.equal(manual?.status, 200)
  assert.equal(manual?.webhookId, firstTry?.webhookId)
  assert.ok(manual && signedByHand(secret, manual))

  const unknown = await app.inject({
    method: 'POST',
    url: '/v1/webhooks/deliveries/999999999/retry',
    headers: auth(),
  })
  assert.equal(unknown.statusCode, 404, unknown.body)
  assert.equal(unknown.json().error.code, 'DELIVERY_NOT_FOUND')
})

test('a manual retry of a delivery in flight never sends it twice at the same time', async (t) => {
  // Retry accepts a pending delivery too (spec); one whose request is still out must
  // not be handed to another dispatcher while that request runs.
  const hooks = await receiver(t)
  const [a, b] = await twoReplicas(t, HOOKS)
  hooks.queue([{ hang: true }])
  const { webhook } = await createWebhook(a.app, { url: hooks.url('/inflight') })
  await openSession(a.app)
  await hooks.waitFor((r) => r[0]?.completedAt === null, 5000, 'the first request in flight')
  const [pending] = await deliveries(a.app, webhook.id)
  assert.equal(pending?.status, 'pending')
  const retry = await a.app.inject({
    method: 'POST',
    url: `/v1/webhooks/deliveries/${pending.id}/retry`,
    headers: auth(),
  })
  assert.equal(retry.statusCode, 200, retry.body)

  await pump(
    [a.clock, b.clock],
    async () =>
      hooks.requests.some((r) => r.status === 200) &&
      (await onlyDelivery(a.app, webhook.id)).status === 'delivered',
    10_000,
    'delivered after the retry',
  )
  assert.deepEqual(
    hooks.overlaps().map(([x, y]) => `#${x.index} ${x.webhookId} and #${y.index} ${y.webhookId} at once`),
    [],
    'never two requests with one webhook-id in flight at once',
  )
})

/** The webhook-ids due for every event in a schema, read from the table (not through the API). */
async function eventIds(schema: string): Promise<string[]> {
  const sql = adminSql()
  try {
    const rows = await sql<Array<{ id: string }>>`select id::text as id from ${sql(schema)}.session_events`
    return rows.map((r) => `evt_${r.id}`).sort()
  } finally {
    await sql.end()
  }
}

/** Opens `count` sessions, spread over the apps, a few at a time; returns their ids. */
async function openMany(apps: FastifyInstance[], count: number): Promise<string[]> {
  const ids: string[] = []
  for (let start = 0; start < count; start += 20) {
    const chunk = await Promise.all(
      Array.from({ length: Math.min(20, count - start) }, (_, k) => {
        const i = start + k
        return openSession(apps[i % apps.length] as FastifyInstance, { user_id: `user${i % 10}` })
      }),
    )
    ids.push(...chunk.map((s) => s.session.id))
  }
  return ids
}

test('two dispatchers, 200 events, a prompt receiver: each event delivered exactly once', async (t) => {
  const hooks = await receiver(t)
  // A lease (twice the timeout and a second) far longer than a busy machine may take to send and
  // record a prompt delivery: a second send here would be a real duplicate, not a lease run out.
  const [a, b] = await twoReplicas(t, { ...HOOKS, webhookTimeoutMs: 20_000 })
  hooks.respond(() => ({ status: 200, delayMs: 2 }))
  const { webhook } = await createWebhook(a.app, { url: hooks.url('/all') })
  const started = Date.now()
  await openMany([a.app, b.app], 200)
  const expected = await eventIds(a.config.dbSchema)
  assert.equal(expected.length, 200)

  const deliveredIds = () => new Set(hooks.requests.filter((r) => r.status === 200).map((r) => r.webhookId))
  await pump([a.clock, b.clock], () => deliveredIds().size >= 200, 30_000, 'all 200 delivered')
  const took = Date.now() - started
  // Time for a duplicate to show up, were there one.
  await pump([a.clock, b.clock], () => false, 500).catch(() => {})

  assert.equal(hooks.requests.length, 200, 'exactly one request per event')
  assert.deepEqual(hooks.requests.map((r) => r.webhookId).sort(), expected)
  assert.deepEqual(
    hooks.overlaps().map(([x, y]) => x.webhookId + y.webhookId),
    [],
  )
  const rows = await deliveries(a.app, webhook.id)
  assert.equal(rows.length, 200)
  assert.deepEqual(
    rows.filter((d) => d.status !== 'delivered' || d.attempts !== 1),
    [],
  )
  const byA = await metric(a.app, 'webhook_deliveries_total', { outcome: 'delivered' })
  const byB = await metric(b.app, 'webhook_deliveries_total', { outcome: 'delivered' })
  assert.equal(byA + byB, 200, `delivered by A ${byA} + B ${byB}`)
  t.diagnostic(`200 events delivered in ${took} ms; A sent ${byA}, B sent ${byB}`)
})

test('two dispatchers, a receiver failing each first attempt: retried, never two at the same time', async (t) => {
  const hooks = await receiver(t)
  // Every first attempt must fail by the receiver's 500, not by the dispatcher giving up: the request
  // timeout runs from when a send starts (connecting included), and on a busy machine a send among
  // 40 at once in this process has reached the receiver only after 1 s (HOOKS' timeout), to be
  // aborted 1 ms later (status null, and the retry answered 200). A timeout, and so a lease (2 × it
  // + 1 s), far longer than a busy machine takes to send means every request gets its answer.
  const [a, b] = await twoReplicas(t, { ...HOOKS, webhookTimeoutMs: 20_000 })
  const seen = new Set<string>()
  hooks.respond((r) => {
    if (seen.has(r.webhookId)) return { status: 200, delayMs: 2 }
    seen.add(r.webhookId)
    return { status: 500, delayMs: 2 }
  })
  const { webhook } = await createWebhook(b.app, { url: hooks.url('/all') })
  await openMany([a.app, b.app], 200)
  const expected = await eventIds(a.config.dbSchema)
  assert.equal(expected.length, 200)

  const deliveredIds = () => new Set(hooks.requests.filter((r) => r.status === 200).map((r) => r.webhookId))
  await pump([a.clock, b.clock], () => deliveredIds().size >= 200, 60_000, 'all 200 delivered')
  await pump(
    [a.clock, b.clock],
    async () => (await deliveries(a.app, webhook.id, 'delivered')).length === 200,
    30_000,
    'all recorded delivered',
  )

  assert.deepEqual([...deliveredIds()].sort(), expected)
  const overlaps = hooks.overlaps()
  assert.deepEqual(
    overlaps.map(([x, y]) => `${x.webhookId}: #${x.index} and #${y.index}`),
    [],
    'never two requests with one webhook-id in flight at once',
  )
  for (const id of expected) {
    const attempts = hooks.requests.filter((r) => r.webhookId === id)
    assert.ok(attempts.length >= 2, `${id}: ${attempts.length} requests`)
    const story = attempts.map(
      (r) =>
        `#${r.index} ${r.status ?? (r.aborted ? 'aborted' : 'open')} after ${r.completedAt === null ? '-' : Math.round(r.completedAt - r.arrivedAt)} ms`,
    )
    assert.equal(attempts[0]?.status, 500, `${id}, first request answered 500: ${story.join(', ')}`)
  }
  const rows = await deliveries(b.app, webhook.id)
  assert.deepEqual(
    rows.filter((d) => d.status !== 'delivered' || d.attempts < 2),
    [],
  )
  const failed =
    (await metric(a.app, 'webhook_deliveries_total', { outcome: 'failed' })) +
    (await metric(b.app, 'webhook_deliveries_total', { outcome: 'failed' }))
  assert.ok(failed >= 200, `failed attempts counted: ${failed}`)
  t.diagnostic(`${hooks.requests.length} requests for 200 events`)
})

test('events API: filters by user, type, since (inclusive) and until (exclusive), with cursor pages', async (t) => {
  const { app, clock } = await buildTestApp(t, { webhookPollMs: 0 })
  const t0 = clock.now()
  const iso = (ms: number) => new Date(ms).toISOString()
  const MIN = 60_000
  const a1 = await openSession(app, { user_id: 'alice' })
  clock.advance(MIN)
  const b1 = await openSession(app, { user_id: 'bob' })
  clock.advance(MIN)
  assert.equal((await revokeSession(app, a1.session.id)).statusCode, 200)
  clock.advance(MIN)
  const a2 = await openSession(app, { user_id: 'alice' })

  const A1C = `session.created ${a1.session.id}`
  const B1C = `session.created ${b1.session.id}`
  const A1R = `session.revoked ${a1.session.id}`
  const A2C = `session.created ${a2.session.id}`
  const show = (events: EventView[]) => events.map((e) => `${e.type} ${e.session_id}`)
  const admin = async (query: Record<string, string>) => show(await allEvents(app, query))

  assert.deepEqual(await admin({}), [A2C, A1R, B1C, A1C], 'newest first')
  assert.deepEqual(await admin({ user_id: 'alice' }), [A2C, A1R, A1C])
  assert.deepEqual(await admin({ type: 'session.revoked' }), [A1R])
  assert.deepEqual(await admin({ since: iso(t0 + MIN) }), [A2C, A1R, B1C], 'since is inclusive')
  assert.deepEqual(await admin({ until: iso(t0 + 2 * MIN) }), [B1C, A1C], 'until is exclusive')
  assert.deepEqual(await admin({ since: iso(t0 + MIN), until: iso(t0 + 3 * MIN) }), [A1R, B1C])
  assert.deepEqual(await admin({ user_id: 'alice', type: 'session.created', since: iso(t0 + 1) }), [A2C])
  assert.deepEqual(await admin({ since: iso(t0 + 4 * MIN) }), [])

  // Pages: next_cursor goes into `before`; the pages add up to the whole list.
  const page = async (query: string) => {
    const res = await app.inject({ method: 'GET', url: `/v1/events?${query}`, headers: auth() })
    assert.equal(res.statusCode, 200, res.body)
    return res.json() as { events: EventView[]; next_cursor: string | null }
  }
  const p1 = await page('limit=3')
  assert.deepEqual(show(p1.events), [A2C, A1R, B1C])
  assert.ok(p1.next_cursor)
  const p2 = await page(`limit=3&before=${p1.next_cursor}`)
  assert.deepEqual(show(p2.events), [A1C])
  assert.equal(p2.next_cursor, null)
  const q1 = await page(`limit=2&user_id=alice&until=${encodeURIComponent(iso(t0 + 3 * MIN + 1))}`)
  assert.deepEqual(show(q1.events), [A2C, A1R])
  const q2 = await page(
    `limit=2&user_id=alice&until=${encodeURIComponent(iso(t0 + 3 * MIN + 1))}&before=${q1.next_cursor}`,
  )
  assert.deepEqual(show(q2.events), [A1C])

  // Across ids 9 → 10 and beyond: pages follow the numeric id order, nothing skipped or repeated.
  const more: string[] = []
  for (let i = 0; i < 10; i++) more.push((await openSession(app, { user_id: 'zed' })).session.id)
  const walk = async (path: string, limit: number) => {
    const seen: EventView[] = []
    let before: string | null = null
    for (let n = 0; n < 50; n++) {
      const url: string = `${path}?limit=${limit}${before ? `&before=${before}` : ''}`
      const res = await app.inject({
        method: 'GET',
        url,
        headers: auth(),
      })
      assert.equal(res.statusCode, 200, res.body)
      const body = res.json() as { events: EventView[]; next_cursor: string | null }
      seen.push(...body.events)
      if (!body.next_cursor) break
      before = body.next_cursor
    }
    return seen
  }
  for (const [path, count] of [
    ['/v1/events', 14],
    ['/v1/users/zed/events', 10],
  ] as const) {
    const seen = await walk(path, 3)
    const ids = seen.map((e) => Number(e.id))
    assert.deepEqual(
      ids,
      [...ids].sort((x, y) => y - x),
      `${path}: newest (highest id) first`,
    )
    assert.equal(new Set(ids).size, count, `${path}: every event once over the pages (got ids ${ids})`)
  }
  assert.deepEqual(
    (await walk('/v1/users/zed/events', 4)).map((e) => e.session_id),
    [...more].reverse(),
  )

  const user = async (query: string, key?: string) => {
    const res = await app.inject({
      method: 'GET',
      url: `/v1/users/alice/events?${query}`,
      headers: auth(key),
    })
    assert.equal(res.statusCode, 200, res.body)
    return show(res.json().events)
  }
  const q = (params: Record<string, string>) => new URLSearchParams(params).toString()
  assert.deepEqual(await user(''), [A2C, A1R, A1C])
  assert.deepEqual(await user(q({ since: iso(t0 + MIN) })), [A2C, A1R])
  assert.deepEqual(await user(q({ until: iso(t0 + 3 * MIN) })), [A1R, A1C])
  assert.deepEqual(await user(q({ since: iso(t0), until: iso(t0 + 2 * MIN) })), [A1C])
  assert.deepEqual(await user(q({ since: iso(t0 + 2 * MIN), until: iso(t0 + 2 * MIN + 1) })), [A1R])

  for (const bad of ['since=yesterday', 'until=2026-13-45T00:00:00Z']) {
    const res = await app.inject({ method: 'GET', url: `/v1/events?${bad}`, headers: auth() })
    assert.equal(res.statusCode, 400, `${bad}: ${res.body}`)
  }

  const { key } = await createKey(app, ['sessions:read'])
  assert.deepEqual(await user(q({ since: iso(t0 + MIN) }), key), [A2C, A1R])
  for (const url of ['/v1/events', '/v1/webhooks']) {
    const res = await app.inject({ method: 'GET', url, headers: auth(key) })
    assert.equal(res.statusCode, 403, `${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'FORBIDDEN')
  }
})

test('metrics: delivered and failed attempts, dead deliveries, pending and dead gauges, delivery time', async (t) => {
  const hooks = await receiver(t)
  const { app, clock } = await buildTestApp(t, { ...HOOKS, webhookMaxAttempts: 2 })
  hooks.respond((r) => (r.url.startsWith('/bad') ? { status: 500 } : undefined))
  const delivered = () => metric(app, 'webhook_deliveries_total', { outcome: 'delivered' })
  await createWebhook(app, { url: hooks.url('/ok') })
  const bad = await createWebhook(app, { url: hooks.url('/bad') })
  assert.equal(await delivered(), 0)

  await openSession(app)
  await hooks.waitFor((r) => r.length === 2 && r.every(done), 5000, 'both webhooks called')
  await eventually(async () => (await delivered()) === 1, 3000, 'delivered counted')
  await eventually(
    async () => (await metric(app, 'webhook_deliveries_total', { outcome: 'failed' })) >= 1,
    3000,
    'failed attempt counted',
  )
  await eventually(
    async () => (await metric(app, 'webhook_deliveries_pending')) === 1,
    3000,
    'pending gauge 1',
  )
  assert.equal(await metric(app, 'webhook_deliveries_dead'), 0)

  clock.advance(500)
  await eventually(async () => (await onlyDelivery(app, bad.webhook.id)).status === 'dead', 5000, 'dead')
  await eventually(
    async () => (await metric(app, 'webhook_deliveries_total', { outcome: 'dead' })) === 1,
    3000,
    'dead counted',
  )
  await eventually(async () => (await metric(app, 'webhook_deliveries_dead')) === 1, 3000, 'dead gauge 1')
  await eventually(
    async () => (await metric(app, 'webhook_deliveries_pending')) === 0,
    3000,
    'pending gauge 0',
  )

  hooks.respond(() => undefined)
  await openSession(app, { user_id: 'bob' })
  await eventually(async () => (await delivered()) === 3, 5000, 'delivered counter grows (2 more)')
  assert.ok((await metric(app, 'webhook_delivery_seconds_count')) >= 3)
  assert.equal(await metric(app, 'webhook_deliveries_dead'), 1)

  // A manual retry that succeeds empties the dead gauge.
  const [dead] = await deliveries(app, bad.webhook.id, 'dead')
  assert.ok(dead)
  const retry = await app.inject({
    method: 'POST',
    url: `/v1/webhooks/deliveries/${dead.id}/retry`,
    headers: auth(),
  })
  assert.equal(retry.statusCode, 200, retry.body)
  await eventually(async () => (await delivered()) === 4, 5000, 'the retried one delivered')
  await eventually(async () => (await metric(app, 'webhook_deliveries_dead')) === 0, 3000, 'dead gauge 0')
})

async function cli(args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  const [code] = await once(run.child, 'exit')
  return { code: code as number, output: run.output() }
}

test('CLI: webhooks create prints the secret once, list never shows it, delete removes it', async (t) => {
  const hooks = await receiver(t)
  const schema = uniqueSchema()
  const env = {
    DATABASE_URL,
    DB_SCHEMA: schema,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    LOG_LEVEL: 'warn',
    WEBHOOK_ALLOWED_CIDRS: '127.0.0.0/8',
  }
  // Dropped after the app below has closed (hooks run in the order added), or here if it never started.
  let appStarted = false
  t.after(async () => {
    if (!appStarted) await dropSchema(schema)
  })

  const url = hooks.url('/cli')
  const created = await cli(['webhooks', 'create', '--url', url, '--events', 'session.revoked'], env)
  assert.equal(created.code, 0, created.output)
  const secret = created.output.match(/whsec_[A-Za-z0-9+/]{43}=/)?.[0]
  assert.ok(secret, created.output)
  assert.equal(created.output.split(secret.slice('whsec_'.length)).length - 1, 1, 'the secret printed once')
  const id = created.output.match(/\bwh_[A-Za-z0-9_-]+/)?.[0]
  assert.ok(id, created.output)

  const listed = await cli(['webhooks', 'list'], env)
  assert.equal(listed.code, 0, listed.output)
  assert.ok(listed.output.includes(id), listed.output)
  assert.ok(listed.output.includes(url), listed.output)
  assert.ok(listed.output.includes('session.revoked'), listed.output)
  assert.ok(!listed.output.includes(secret.slice('whsec_'.length)), 'list never shows the secret')

  // The printed secret is the one deliveries are signed with, and --events filters.
  const { app } = await buildTestApp(t, { ...HOOKS, dbSchema: schema })
  appStarted = true
  t.after(() => dropSchema(schema))
  const opened = await openSession(app)
  assert.equal((await revokeSession(app, opened.session.id)).statusCode, 200)
  await hooks.waitFor((r) => r.length >= 1 && r.every(done), 5000, 'the revocation delivered')
  await sleep(200)
  assert.equal(hooks.requests.length, 1)
  const [request] = hooks.requests
  assert.ok(request)
  assert.equal(payload(request).type, 'session.revoked')
  assert.equal(signedByHand(secret, request), true)
  verifiedByLibrary(secret, request)

  const deleted = await cli(['webhooks', 'delete', id], env)
  assert.equal(deleted.code, 0, deleted.output)
  const after = await cli(['webhooks', 'list'], env)
  assert.equal(after.code, 0, after.output)
  assert.ok(!after.output.includes(id), after.output)
  const gone = await app.inject({ method: 'GET', url: `/v1/webhooks/${id}`, headers: auth() })
  assert.equal(gone.statusCode, 404)
  const unknown = await cli(['webhooks', 'delete', 'wh_0000000000000000'], env)
  assert.notEqual(unknown.code, 0, unknown.output)
})
