import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { createTenant, openAs, tenantKey } from './fixtures/tenants.ts'
import { auth, buildTestApp, CHROME_WINDOWS, openSession, SAFARI_IPHONE, twoReplicas } from './helper.ts'

// "New sign-in" detection: a sign-in from a browser family + OS + device type (and, by policy, a
// network) the user has not signed in from within NEW_DEVICE_WINDOW_DAYS emits session.new_device.

const DAY = 86_400_000
const CHROME_WINDOWS_NEWER = CHROME_WINDOWS.replace('Chrome/120.0.0.0', 'Chrome/131.0.0.0')
const FIREFOX_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0'

interface NewDeviceEvent {
  session_id: string
  user_id: string
  type: string
  data: {
    ip: string | null
    user_agent: string | null
    device: { browser: string | null; os: string | null; type: string }
    network: string | null
  }
}

async function newDeviceEvents(app: FastifyInstance, userId = 'alice', headers = auth()) {
  const res = await app.inject({ url: `/v1/users/${userId}/events?type=session.new_device`, headers })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().events as NewDeviceEvent[]
}

test('the first sign-in and the same device again are not new; another browser family is, with its device and address', async (t) => {
  const { app, clock } = await buildTestApp(t)
  await openSession(app)
  assert.deepEqual(await newDeviceEvents(app), [], 'a first sign-in has nothing to be new against')

  clock.advance(10 * DAY)
  // A newer Chrome from another address, still Chrome on Windows on a desktop: the same device.
  await openSession(app, { user_agent: CHROME_WINDOWS_NEWER, ip: '198.51.100.20' })
  assert.deepEqual(await newDeviceEvents(app), [])

  clock.advance(DAY)
  const firefox = await openSession(app, { user_agent: FIREFOX_WINDOWS, ip: '198.51.100.21' })
  const phone = await openSession(app, { user_agent: SAFARI_IPHONE, ip: '2001:db8::7' })
  const events = await newDeviceEvents(app)
  assert.deepEqual(
    events
      .map((e) => [e.session_id, e.data.device.browser, e.data.device.os, e.data.device.type, e.data.ip])
      .sort(),
    [
      [firefox.session.id, 'Firefox', 'Windows', 'desktop', '198.51.100.21'],
      [phone.session.id, 'Mobile Safari', 'iOS', 'mobile', '2001:db8::7'],
    ].sort(),
  )
  const firefoxEvent = events.find((e) => e.session_id === firefox.session.id)
  assert.equal(firefoxEvent?.data.user_agent, FIREFOX_WINDOWS)
  assert.equal(firefoxEvent?.data.network, null, 'the network is not judged unless the policy says so')

  // Now Firefox is known too: signing in from it again says nothing.
  clock.advance(DAY)
  await openSession(app, { user_agent: FIREFOX_WINDOWS })
  assert.equal((await newDeviceEvents(app)).length, 2)
  // Other users are judged on their own devices: bob's first sign-in from Firefox is his first.
  await openSession(app, { user_id: 'bob', user_agent: FIREFOX_WINDOWS })
  assert.deepEqual(await newDeviceEvents(app, 'bob'), [])
})

test('a device not signed in from within the window is new again; NEW_DEVICE_WINDOW_DAYS sets the window', async (t) => {
  const { app, clock } = await buildTestApp(t, { newDeviceWindowDays: 30 })
  await openSession(app, { user_agent: SAFARI_IPHONE })
  const chrome = await openSession(app) // new next to the phone
  clock.advance(29 * DAY)
  await openSession(app) // 29 days since Chrome's last sign-in
  assert.deepEqual(
    (await newDeviceEvents(app)).map((e) => e.session_id),
    [chrome.session.id],
  )

  clock.advance(29 * DAY) // Chrome: 29 days again; the phone: 58
  await openSession(app)
  const phone = await openSession(app, { user_agent: SAFARI_IPHONE })
  assert.deepEqual(
    (await newDeviceEvents(app)).map((e) => e.session_id),
    [phone.session.id, chrome.session.id],
  )
})

test('with the window at 0 nothing is judged or recorded; a sign-in without a User-Agent is never judged', async (t) => {
  const off = await buildTestApp(t, { newDeviceWindowDays: 0 })
  await openSession(off.app)
  await openSession(off.app, { user_agent: SAFARI_IPHONE })
  assert.deepEqual(await newDeviceEvents(off.app), [])
  const [recorded] = await off.app.db.sql`select count(*)::int as n from user_devices`
  assert.equal(recorded?.n, 0)

  const { app } = await buildTestApp(t)
  await openSession(app)
  // A backend that sends no User-Agent (a server-side sign-in) tells nothing about a device.
  await openSession(app, { user_agent: undefined })
  await openSession(app, { user_agent: 'curl/8.5.0' })
  assert.deepEqual(await newDeviceEvents(app), [])
})

test('by tenant policy, a known device on a network it has not signed in from is new, named by the drift prefix', async (t) => {
  const { app } = await buildTestApp(t)
  await createTenant(app, 'bank', { new_device_by_network: true, ipv4_drift_prefix: 16 })
  const key = await tenantKey(app, 'bank', ['sessions:write', 'sessions:read'])
  await openAs(app, key, { ip: '203.0.113.7' })
  await openAs(app, key, { ip: '203.0.200.9' }) // the same /16
  const abroad = await openAs(app, key, { ip: '192.0.2.44' })
  const events = await newDeviceEvents(app, 'alice', auth(key))
  assert.deepEqual(
    events.map((e) => [e.session_id, e.data.network]),
    [[abroad.session.id, '192.0.0.0/16']],
  )
  // The default tenant judges devices only: the same moves there say nothing.
  await openSession(app, { ip: '203.0.113.7' })
  await openSession(app, { ip: '192.0.2.44' })
  assert.deepEqual(await newDeviceEvents(app), [])
})

test('across replicas: a device known through one is known to the other; racing sign-ins from a new device announce it once', async (t) => {
  const [a, b] = await twoReplicas(t, { dbPoolMax: 10 })
  await openSession(a.app)
  await openSession(b.app) // Chrome signed in from through replica A first
  assert.deepEqual(await newDeviceEvents(a.app), [])

  const racing = await Promise.all(
    Array.from({ length: 12 }, (_, i) => openSession(i % 2 ? a.app : b.app, { user_agent: FIREFOX_WINDOWS })),
  )
  const events = await newDeviceEvents(b.app)
  assert.equal(events.length, 1, JSON.stringify(events))
  assert.ok(racing.some((s) => s.session.id === events[0]?.session_id))
  // Under a session limit, the sign-in takes the limit's transaction: judged the same way.
  await openSession(a.app, { user_agent: SAFARI_IPHONE, max_sessions: 20 })
  assert.equal((await newDeviceEvents(a.app)).length, 2)
})

test('the user sees the new sign-in in their own activity; purge forgets devices unused for a year', async (t) => {
  const { app, clock } = await buildTestApp(t)
  await openSession(app)
  const phone = await openSession(app, { user_agent: SAFARI_IPHONE, ip: '127.0.0.1' })
  const mine = await app.inject({
    url: '/v1/me/events',
    headers: {
      authorization: `Bearer ${phone.token}`,
      'user-agent': SAFARI_IPHONE,
      'x-forwarded-for': '203.0.113.7',
    },
  })
  assert.equal(mine.statusCode, 200, mine.body)
  assert.ok(
    mine
      .json()
      .events.some(
        (e: { type: string; session_id: string }) =>
          e.type === 'session.new_device' && e.session_id === phone.session.id,
      ),
  )

  clock.advance(367 * DAY)
  const purged = await app.inject({ method: 'POST', url: '/v1/admin/purge', headers: auth() })
  assert.equal(purged.statusCode, 200, purged.body)
  assert.equal(purged.json().devices_forgotten, 2)
  const [left] = await app.db.sql`select count(*)::int as n from user_devices`
  assert.equal(left?.n, 0)
})
