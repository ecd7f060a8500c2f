import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import {
  ADMIN_KEY,
  adminSql,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  createKey,
  eventually,
  introspect,
  openSession,
  redisSettings,
  revokeSession,
  SAFARI_IPHONE,
  twoReplicas,
} from './helper.ts'

// The client every session below is opened from (openSession's defaults) ...
const HOME_IP = '203.0.113.7'
// ... the same browser, one version later (an update, not another client) ...
const CHROME_121_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36'
// ... and other clients: another browser, another OS, another device type.
const FIREFOX_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'
const CHROME_MACOS =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const CHROME_ANDROID_PHONE =
  'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36'
const CHROME_ANDROID_TABLET =
  'Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

const MINUTE = 60_000
const SUSPENDED = { active: false, reason: 'suspended' }
const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000'

interface Client {
  ip: string | null
  user_agent: string | null
  device: { browser: string | null; browser_version: string | null; os: string | null; type: string }
}
interface SessionEvent {
  id: string
  session_id: string
  type: string
  data: { reason?: string; changed?: string[]; previous?: Client; current?: Client } & Record<string, unknown>
}
type Session = Client & {
  id: string
  status: string
  binding: Record<string, unknown>
  bound_ip: string | null
  suspension_reason: string | null
}

/** The raw introspection answer for a caller holding `key` (the helper's is the admin's). */
async function introspectAs(app: FastifyInstance, key: string, token: string, extra: object = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(key),
    payload: { token, ...extra },
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as Record<string, unknown>
}

async function getSession(app: FastifyInstance, id: string): Promise<Session> {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json()
}

/** A user's events of one type (or all), newest first. */
async function events(app: FastifyInstance, type?: string, userId = 'alice'): Promise<SessionEvent[]> {
  const query = type ? `?type=${type}` : ''
  const res = await app.inject({ method: 'GET', url: `/v1/users/${userId}/events${query}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().events
}

/** The newest event of a type, once there is one. */
async function waitForEvent(app: FastifyInstance, type: string, count = 1): Promise<SessionEvent> {
  let found: SessionEvent[] = []
  await eventually(
    async () => {
      found = await events(app, type)
      return found.length >= count
    },
    5000,
    `${count} ${type} event(s)`,
  )
  return found[0] as SessionEvent
}

async function assertNoDriftEvents(app: FastifyInstance) {
  const types = (await events(app)).map((e) => e.type)
  assert.ok(!types.includes('session.suspended'), `events: ${types}`)
  assert.ok(!types.includes('session.client_changed'), `events: ${types}`)
}

function post(app: FastifyInstance, url: string, payload?: object, key = ADMIN_KEY) {
  return app.inject({ method: 'POST', url, headers: auth(key), ...(payload ? { payload } : {}) })
}

test('a browser version update is not drift: the session stays active and follows the new version', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)

  const updated = await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_121_WINDOWS })
  assert.equal(updated.active, true)
  await eventually(
    async () => (await getSession(app, session.id)).user_agent === CHROME_121_WINDOWS,
    5000,
    'the stored User-Agent follows the update',
  )
  const stored = await getSession(app, session.id)
  assert.equal(stored.status, 'active')
  assert.deepEqual(stored.device, {
    browser: 'Chrome',
    browser_version: '121.0.0.0',
    os: 'Windows',
    os_version: '10',
    type: 'desktop',
  })
  // Later uses from the updated browser are as good as ever.
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_121_WINDOWS })).active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')
  await assertNoDriftEvents(app)
})

const chrome = (major: number) => CHROME_WINDOWS.replace('Chrome/120.0.0.0', `Chrome/${major}.0.0.0`)

test('the stored User-Agent only moves forward: an older version is no drift and is not written back', async (t) => {
  const { app, clock } = await buildTestApp(t, { writeBehindIntervalMs: 10 })
  const { token, session } = await openSession(app)
  for (const [major, expected] of [
    [121, 121],
    [120, 121],
    [121, 121],
    [119, 121],
    [122, 122],
    [121, 122],
  ] as const) {
    clock.advance(MINUTE)
    const answer = await introspect(app, token, { ip: HOME_IP, user_agent: chrome(major) })
    assert.equal(answer.active, true, `Chrome ${major}`)
    assert.equal((await getSession(app, session.id)).user_agent, chrome(expected), `after Chrome ${major}`)
  }
  await assertNoDriftEvents(app)
})

test('a browser update is followed at most once per WRITE_BEHIND_INTERVAL_MS; the newer one is never drift', async (t) => {
  const { app, clock } = await buildTestApp(t, { writeBehindIntervalMs: 60_000 })
  const { token, session } = await openSession(app)
  for (const major of [121, 122, 123, 124]) {
    assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: chrome(major) })).active, true)
  }
  assert.equal((await getSession(app, session.id)).user_agent, chrome(121), 'one write within the interval')
  clock.advance(61_000)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: chrome(124) })).active, true)
  assert.equal((await getSession(app, session.id)).user_agent, chrome(124))
  assert.equal((await getSession(app, session.id)).status, 'active')
  await assertNoDriftEvents(app)
})

for (const { what, from = CHROME_WINDOWS, to, previous, current } of [
  {
    what: 'another browser (Chrome → Firefox on Windows)',
    to: FIREFOX_WINDOWS,
    previous: { browser: 'Chrome', os: 'Windows', type: 'desktop' },
    current: { browser: 'Firefox', os: 'Windows', type: 'desktop' },
  },
  {
    what: 'another OS (Chrome on Windows → Chrome on macOS)',
    to: CHROME_MACOS,
    previous: { browser: 'Chrome', os: 'Windows', type: 'desktop' },
    current: { browser: 'Chrome', os: 'Mac OS', type: 'desktop' },
  },
  {
    what: 'another device type (desktop → Chrome on an Android phone)',
    to: CHROME_ANDROID_PHONE,
    previous: { browser: 'Chrome', os: 'Windows', type: 'desktop' },
    current: { browser: 'Chrome', os: 'Android', type: 'mobile' },
  },
  {
    what: 'another device type alone (Chrome on an Android tablet → on an Android phone)',
    from: CHROME_ANDROID_TABLET,
    to: CHROME_ANDROID_PHONE,
    previous: { browser: 'Chrome', os: 'Android', type: 'tablet' },
    current: { browser: 'Chrome', os: 'Android', type: 'mobile' },
  },
]) {
  test(`User-Agent drift to ${what} suspends the session (default policy)`, async (t) => {
    const { app } = await buildTestApp(t)
    const gateway = (await createKey(app, ['introspect'])).key
    const { token, session } = await openSession(app, { user_agent: from })
    // Active and cached before the drift: the cached answer must not outlive it.
    assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: from })).active, true)

    assert.deepEqual(await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: to }), SUSPENDED)
    // Later uses are inactive too, from the new client, the original one, or with no client info.
    assert.deepEqual(await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: to }), SUSPENDED)
    assert.deepEqual(await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: from }), SUSPENDED)
    assert.deepEqual(await introspectAs(app, ADMIN_KEY, token), SUSPENDED)
    // A gateway's introspect-only key learns nothing beyond "inactive".
    assert.deepEqual(await introspectAs(app, gateway, token, { ip: HOME_IP, user_agent: from }), {
      active: false,
    })

    // The session stays bound to the client it was opened from.
    const stored = await getSession(app, session.id)
    assert.equal(stored.status, 'suspended')
    assert.equal(stored.user_agent, from)
    assert.equal(stored.ip, HOME_IP)

    const event = await waitForEvent(app, 'session.suspended')
    assert.equal(event.session_id, session.id)
    assert.equal(event.data.reason, 'user_agent_drift')
    assert.equal(event.data.previous?.user_agent, from)
    assert.equal(event.data.current?.user_agent, to)
    assert.equal(event.data.previous?.ip, HOME_IP)
    for (const [field, value] of Object.entries(previous)) {
      assert.equal(event.data.previous?.device[field as keyof Client['device']], value, `previous ${field}`)
    }
    for (const [field, value] of Object.entries(current)) {
      assert.equal(event.data.current?.device[field as keyof Client['device']], value, `current ${field}`)
    }
    assert.equal((await events(app, 'session.suspended')).length, 1)
    assert.equal((await events(app, 'session.client_changed')).length, 0)
  })
}

test('the introspection that drifts answers a gateway exactly {active:false}; a sessions:read key gets the reason', async (t) => {
  const { app } = await buildTestApp(t)
  const gateway = (await createKey(app, ['introspect'])).key
  const reader = (await createKey(app, ['introspect', 'sessions:read'])).key
  const { token } = await openSession(app)
  assert.equal(
    (await introspectAs(app, gateway, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active,
    true,
  )

  assert.deepEqual(await introspectAs(app, gateway, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS }), {
    active: false,
  })
  assert.deepEqual(await introspectAs(app, gateway, token), { active: false })
  assert.deepEqual(await introspectAs(app, reader, token), SUSPENDED)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, token), SUSPENDED)
})

test('an IP move within the /24 is not drift; one outside it suspends with ip_drift', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.equal(
    (await introspect(app, token, { ip: '203.0.113.99', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.equal((await introspect(app, token, { ip: '203.0.113.254' })).active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')
  await assertNoDriftEvents(app)

  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )
  // Back on the home network, the session is still suspended.
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )
  assert.equal((await getSession(app, session.id)).status, 'suspended')

  const event = await waitForEvent(app, 'session.suspended')
  assert.equal(event.session_id, session.id)
  assert.equal(event.data.reason, 'ip_drift')
  assert.equal(event.data.current?.ip, '198.51.100.7')
  assert.ok(
    ['203.0.113.7', '203.0.113.99', '203.0.113.254'].includes(String(event.data.previous?.ip)),
    `previous ip ${event.data.previous?.ip} is the bound network`,
  )
})

test('IPv6: a move within the /64 is not drift, one outside it is, and so is a change of family', async (t) => {
  const { app } = await buildTestApp(t)
  const v6 = await openSession(app, { ip: '2001:db8:85a3:12::7' })
  assert.equal((await introspect(app, v6.token, { ip: '2001:db8:85a3:12::7' })).active, true)
  assert.equal((await introspect(app, v6.token, { ip: '2001:db8:85a3:12:abcd:ef01:2345:6789' })).active, true)
  assert.equal((await getSession(app, v6.session.id)).status, 'active')
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, v6.token, { ip: '2001:db8:85a3:13::7' }), SUSPENDED)
  const event = await waitForEvent(app, 'session.suspended')
  assert.equal(event.session_id, v6.session.id)
  assert.equal(event.data.reason, 'ip_drift')
  assert.equal(event.data.current?.ip, '2001:db8:85a3:13::7')

  // IPv4 → IPv6 and IPv6 → IPv4 are moves to another network.
  const v4 = await openSession(app)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, v4.token, { ip: '2001:db8::1' }), SUSPENDED)
  const back = await openSession(app, { ip: '2001:db8:85a3:12::7' })
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, back.token, { ip: HOME_IP }), SUSPENDED)
  await waitForEvent(app, 'session.suspended', 3)
  for (const e of await events(app, 'session.suspended')) assert.equal(e.data.reason, 'ip_drift')
})

test('an IPv4-mapped IPv6 address is its IPv4 address: the same /24 is not drift', async (t) => {
  const { app } = await buildTestApp(t)
  const v4 = await openSession(app)
  assert.equal((await introspect(app, v4.token, { ip: '::ffff:203.0.113.9' })).active, true)
  assert.equal((await introspect(app, v4.token, { ip: '::ffff:203.0.113.7' })).active, true)
  const mapped = await openSession(app, { ip: '::ffff:203.0.113.7' })
  assert.equal((await introspect(app, mapped.token, { ip: '203.0.113.50' })).active, true)
  for (const s of [v4, mapped]) assert.equal((await getSession(app, s.session.id)).status, 'active')
  await assertNoDriftEvents(app)
  // Outside the /24 it is drift, mapped or not.
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, v4.token, { ip: '::ffff:198.51.100.7' }), SUSPENDED)
})

test('IPV4_DRIFT_PREFIX=16 tolerates moves within the /16 and no further', async (t) => {
  const { app } = await buildTestApp(t, { ipv4DriftPrefix: 16 })
  const { token } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: '203.0.55.1' })).active, true)
  assert.equal((await introspect(app, token, { ip: '203.0.200.200' })).active, true)
  await assertNoDriftEvents(app)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, token, { ip: '203.1.0.1' }), SUSPENDED)
})

test('missing ip or user_agent is never drift, and a session opened without them has nothing to drift from', async (t) => {
  const { app } = await buildTestApp(t)
  const full = await openSession(app)
  assert.equal((await introspect(app, full.token)).active, true)
  assert.equal((await introspect(app, full.token, { ip: HOME_IP })).active, true)
  assert.equal((await introspect(app, full.token, { user_agent: CHROME_WINDOWS })).active, true)
  assert.equal((await getSession(app, full.session.id)).status, 'active')

  const noUa = await openSession(app, { user_agent: undefined })
  assert.equal(noUa.session.user_agent, null)
  assert.equal((await introspect(app, noUa.token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS })).active, true)
  assert.equal((await introspect(app, noUa.token, { ip: HOME_IP, user_agent: SAFARI_IPHONE })).active, true)
  assert.equal((await getSession(app, noUa.session.id)).status, 'active')

  const noIp = await openSession(app, { ip: undefined })
  assert.equal(noIp.session.ip, null)
  assert.equal(
    (await introspect(app, noIp.token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.equal(
    (await introspect(app, noIp.token, { ip: '2001:db8::1', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.equal((await getSession(app, noIp.session.id)).status, 'active')

  await assertNoDriftEvents(app)
})

test('a session opened without an IP gains no IP to drift from once its uses are written', async (t) => {
  // Uses are written behind (last seen, last IP); they must not give the session the baseline it never had.
  const { app, clock, config } = await buildTestApp(t, { writeBehindIntervalMs: 10, l1TtlMs: 0 })
  const { token, session } = await openSession(app, { ip: undefined })
  clock.advance(MINUTE)
  const usedAt = new Date(clock.now())
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  const sql = adminSql()
  t.after(() => sql.end())
  await eventually(
    async () => {
      const [row] = await sql`
        select last_seen_at from ${sql(config.dbSchema)}.sessions where id = ${session.id}`
      return row?.last_seen_at.getTime() === usedAt.getTime()
    },
    5000,
    'the use is written',
  )

  clock.advance(MINUTE)
  assert.equal(
    (await introspect(app, token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.equal((await introspect(app, token, { ip: '2001:db8::1', user_agent: CHROME_WINDOWS })).active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')
  await assertNoDriftEvents(app)
})

test('record policy (UA): the session stays active, follows the new client and says so in an event', async (t) => {
  const { app } = await buildTestApp(t, { uaDriftPolicy: 'record' })
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS })).active, true)
  await eventually(
    async () => (await getSession(app, session.id)).user_agent === FIREFOX_WINDOWS,
    5000,
    'the stored User-Agent is the new one',
  )
  const stored = await getSession(app, session.id)
  assert.equal(stored.status, 'active')
  assert.equal(stored.device.browser, 'Firefox')

  const event = await waitForEvent(app, 'session.client_changed')
  assert.equal(event.session_id, session.id)
  assert.deepEqual(event.data.changed, ['user_agent'])
  assert.equal(event.data.previous?.user_agent, CHROME_WINDOWS)
  assert.equal(event.data.previous?.device.browser, 'Chrome')
  assert.equal(event.data.current?.user_agent, FIREFOX_WINDOWS)
  assert.equal(event.data.current?.device.browser, 'Firefox')

  // Firefox is now the bound client: the next change is measured from it.
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS })).active, true)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_MACOS })).active, true)
  const second = await waitForEvent(app, 'session.client_changed', 2)
  assert.equal(second.data.previous?.user_agent, FIREFOX_WINDOWS)
  assert.equal(second.data.current?.user_agent, CHROME_MACOS)
  assert.equal((await events(app, 'session.client_changed')).length, 2)
  assert.equal((await events(app, 'session.suspended')).length, 0)
})

test('record policy (IP): the session stays active, its IP is the new one, changed is [ip]', async (t) => {
  const { app } = await buildTestApp(t, { ipDriftPolicy: 'record' })
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.equal(
    (await introspect(app, token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  await eventually(
    async () => (await getSession(app, session.id)).ip === '198.51.100.7',
    5000,
    'the stored IP is the new one',
  )
  const event = await waitForEvent(app, 'session.client_changed')
  assert.equal(event.session_id, session.id)
  assert.deepEqual(event.data.changed, ['ip'])
  assert.equal(event.data.previous?.ip, HOME_IP)
  assert.equal(event.data.current?.ip, '198.51.100.7')
  assert.equal((await getSession(app, session.id)).status, 'active')
  // UA drift still suspends: only the IP policy was relaxed.
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
})

test('record policy for both: one use that changes both records both in one event', async (t) => {
  const { app } = await buildTestApp(t, { uaDriftPolicy: 'record', ipDriftPolicy: 'record' })
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: '198.51.100.7', user_agent: SAFARI_IPHONE })).active, true)
  const event = await waitForEvent(app, 'session.client_changed')
  assert.equal(event.session_id, session.id)
  assert.deepEqual([...(event.data.changed ?? [])].sort(), ['ip', 'user_agent'])
  assert.equal(event.data.current?.ip, '198.51.100.7')
  assert.equal(event.data.current?.user_agent, SAFARI_IPHONE)
  await eventually(async () => {
    const s = await getSession(app, session.id)
    return s.ip === '198.51.100.7' && s.user_agent === SAFARI_IPHONE && s.device.type === 'mobile'
  })
  assert.equal((await events(app, 'session.client_changed')).length, 1)
})

test('ignore policy: another browser from another network changes nothing', async (t) => {
  const { app } = await buildTestApp(t, { uaDriftPolicy: 'ignore', ipDriftPolicy: 'ignore' })
  const { token, session } = await openSession(app)
  for (const ua of [FIREFOX_WINDOWS, CHROME_ANDROID_PHONE, CHROME_WINDOWS]) {
    assert.equal((await introspect(app, token, { ip: '198.51.100.7', user_agent: ua })).active, true, ua)
  }
  const stored = await getSession(app, session.id)
  assert.equal(stored.status, 'active')
  assert.equal(stored.user_agent, CHROME_WINDOWS)
  assert.equal(stored.device.browser, 'Chrome')
  assert.equal(stored.device.type, 'desktop')
  await assertNoDriftEvents(app)
})

test('a per-session binding overrides the settings: a mobile app records IP moves, its UA still binds', async (t) => {
  const { app } = await buildTestApp(t)
  const plain = await openSession(app)
  assert.deepEqual(plain.session.binding, {})
  const { token, session } = await openSession(app, { user_agent: SAFARI_IPHONE, binding: { ip: 'record' } })
  assert.deepEqual(session.binding, { ip: 'record' })
  assert.deepEqual((await getSession(app, session.id)).binding, { ip: 'record' })

  // Wi-Fi to mobile data: recorded, not suspended.
  assert.equal((await introspect(app, token, { ip: '198.51.100.7', user_agent: SAFARI_IPHONE })).active, true)
  const event = await waitForEvent(app, 'session.client_changed')
  assert.equal(event.session_id, session.id)
  assert.deepEqual(event.data.changed, ['ip'])
  await eventually(async () => (await getSession(app, session.id)).ip === '198.51.100.7')
  assert.equal((await getSession(app, session.id)).status, 'active')

  // The same token from a desktop browser: the global UA policy (suspend) applies.
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )
  const suspended = await waitForEvent(app, 'session.suspended')
  assert.equal(suspended.data.reason, 'user_agent_drift')

  // The session without a binding still follows the settings.
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, plain.token, { ip: '198.51.100.7' }), SUSPENDED)
})

test('binding {user_agent: ignore} lets the User-Agent change while the IP still binds', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app, { binding: { user_agent: 'ignore' } })
  assert.deepEqual(session.binding, { user_agent: 'ignore' })
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS })).active, true)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_ANDROID_PHONE })).active, true)
  const stored = await getSession(app, session.id)
  assert.equal(stored.status, 'active')
  assert.equal(stored.user_agent, CHROME_WINDOWS)
  await assertNoDriftEvents(app)
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
  assert.equal((await waitForEvent(app, 'session.suspended')).data.reason, 'ip_drift')
})

test('a binding can be stricter than the settings, and can widen the tolerated prefix', async (t) => {
  const { app } = await buildTestApp(t, { uaDriftPolicy: 'record', ipDriftPolicy: 'record' })
  const strict = await openSession(app, { binding: { user_agent: 'suspend', ipv4_prefix: 16 } })
  assert.deepEqual(strict.session.binding, { user_agent: 'suspend', ipv4_prefix: 16 })
  assert.equal(
    (await introspect(app, strict.token, { ip: '203.0.55.1', user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.equal((await events(app, 'session.client_changed')).length, 0, 'within the widened /16')
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, strict.token, { ip: '203.0.55.1', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )

  const wide = await openSession(app, { binding: { ip: 'suspend', ipv4_prefix: 16 } })
  assert.equal((await introspect(app, wide.token, { ip: '203.0.200.1' })).active, true)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, wide.token, { ip: '203.1.0.1' }), SUSPENDED)
  assert.equal((await waitForEvent(app, 'session.suspended', 2)).data.reason, 'ip_drift')
})

test('an invalid binding is refused', async (t) => {
  const { app } = await buildTestApp(t)
  for (const binding of [{ ip: 'block' }, { ipv4_prefix: 33 }, { ipv6_prefix: -1 }, { ipv6_prefix: 129 }]) {
    const res = await post(app, '/v1/sessions', { user_id: 'alice', binding })
    assert.equal(res.statusCode, 400, JSON.stringify(binding))
    assert.equal(res.json().error.code, 'VALIDATION_FAILED')
  }
})

test('resume without a body: the original client works again, the new one is still drift', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )

  const res = await post(app, `/v1/sessions/${session.id}/resume`)
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().status, 'active')
  assert.equal(res.json().suspension_reason, null)
  assert.equal(res.json().user_agent, CHROME_WINDOWS)
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)

  const resumed = await waitForEvent(app, 'session.resumed')
  assert.equal(resumed.session_id, session.id)
  assert.equal(resumed.data.previous?.user_agent, CHROME_WINDOWS)
  assert.equal(resumed.data.current?.user_agent, CHROME_WINDOWS)

  // Resuming an active session changes nothing.
  const again = await post(app, `/v1/sessions/${session.id}/resume`)
  assert.equal(again.statusCode, 200)
  assert.equal(again.json().status, 'active')
  assert.equal((await events(app, 'session.resumed')).length, 1)

  // Still bound to Chrome: Firefox drifts again.
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
})

test('resume with a client rebinds the session to it: the new browser is the good one afterwards', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )

  const res = await post(app, `/v1/sessions/${session.id}/resume`, {
    user_agent: FIREFOX_WINDOWS,
    ip: '198.51.100.7',
  })
  assert.equal(res.statusCode, 200, res.body)
  const view = res.json()
  assert.equal(view.status, 'active')
  assert.equal(view.suspension_reason, null)
  assert.equal(view.user_agent, FIREFOX_WINDOWS)
  assert.equal(view.ip, '198.51.100.7')
  assert.equal(view.device.browser, 'Firefox')

  assert.equal(
    (await introspect(app, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS })).active,
    true,
  )
  assert.equal(
    (await introspect(app, token, { ip: '198.51.100.42', user_agent: FIREFOX_WINDOWS })).active,
    true,
  )
  const stored = await getSession(app, session.id)
  assert.equal(stored.status, 'active')
  assert.equal(stored.user_agent, FIREFOX_WINDOWS)

  const resumed = await waitForEvent(app, 'session.resumed')
  assert.equal(resumed.data.previous?.user_agent, CHROME_WINDOWS)
  assert.equal(resumed.data.previous?.ip, HOME_IP)
  assert.equal(resumed.data.current?.user_agent, FIREFOX_WINDOWS)
  assert.equal(resumed.data.current?.ip, '198.51.100.7')

  // The old browser is now the other client.
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )
})

test('a resume that rebinds the IP is not undone by a use from the old network not yet written', async (t) => {
  const { app, clock } = await buildTestApp(t, { writeBehindIntervalMs: 60_000 })
  const { token, session } = await openSession(app)
  clock.advance(MINUTE)
  // A use from the home network, held in the write-behind (its interval is a minute of real time).
  assert.equal((await introspect(app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  clock.advance(MINUTE)
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )

  const res = await post(app, `/v1/sessions/${session.id}/resume`, {
    ip: '198.51.100.7',
    user_agent: FIREFOX_WINDOWS,
  })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().bound_ip, '198.51.100.7', 'the resume answer shows the client it bound')
  assert.equal(res.json().user_agent, FIREFOX_WINDOWS)
  // The pending use from home may still say where the session was last seen (`ip`); the binding is separate.
  assert.equal((await getSession(app, session.id)).bound_ip, '198.51.100.7')
  assert.equal(
    (await introspect(app, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS })).active,
    true,
  )
})

test('across replicas: a resume that rebinds the IP holds after another replica writes an older use', async (t) => {
  const [one, two] = await twoReplicas(t, { ...redisSettings(), writeBehindIntervalMs: 60_000 })
  const { token, session } = await openSession(one.app)
  for (const { clock } of [one, two]) clock.advance(MINUTE)
  // The user was last served by replica two, from home; that use is not yet written.
  assert.equal((await introspect(two.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  for (const { clock } of [one, two]) clock.advance(MINUTE)
  assert.deepEqual(
    await introspectAs(one.app, ADMIN_KEY, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
  // Support checks with the user and accepts the new client.
  const res = await post(one.app, `/v1/sessions/${session.id}/resume`, {
    ip: '198.51.100.7',
    user_agent: FIREFOX_WINDOWS,
  })
  assert.equal(res.statusCode, 200, res.body)
  // Replica two writes what it has pending (as it would within WRITE_BEHIND_INTERVAL_MS; here by shutting down).
  await two.app.close()

  one.clock.advance(MINUTE)
  assert.equal(
    (await introspect(one.app, token, { ip: '198.51.100.7', user_agent: FIREFOX_WINDOWS })).active,
    true,
    'the accepted client is still accepted',
  )
  const stored = await getSession(one.app, session.id)
  assert.equal(stored.status, 'active')
  assert.equal(stored.ip, '198.51.100.7')
})

test('resume of a revoked session is SESSION_ENDED; of an unknown one SESSION_NOT_FOUND', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, token, { user_agent: FIREFOX_WINDOWS }), SUSPENDED)
  assert.equal((await revokeSession(app, session.id)).statusCode, 200)

  const ended = await post(app, `/v1/sessions/${session.id}/resume`)
  assert.equal(ended.statusCode, 409, ended.body)
  assert.equal(ended.json().error.code, 'SESSION_ENDED')
  assert.equal((await getSession(app, session.id)).status, 'revoked')
  assert.equal((await introspect(app, token)).active, false)

  const unknown = await post(app, `/v1/sessions/${UNKNOWN_ID}/resume`)
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error.code, 'SESSION_NOT_FOUND')
})

test('manual suspend: the token is inactive at once; again is a no-op; an ended session is SESSION_ENDED', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  assert.equal((await introspect(app, token)).active, true)

  const res = await post(app, `/v1/sessions/${session.id}/suspend`, { reason: 'fraud review' })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().id, session.id)
  assert.equal(res.json().status, 'suspended')
  assert.equal(res.json().suspension_reason, 'fraud review')
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, token), SUSPENDED)
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )
  const event = await waitForEvent(app, 'session.suspended')
  assert.equal(event.session_id, session.id)
  assert.equal(event.data.reason, 'fraud review')

  const again = await post(app, `/v1/sessions/${session.id}/suspend`, { reason: 'second look' })
  assert.equal(again.statusCode, 200)
  assert.equal(again.json().status, 'suspended')
  assert.equal(again.json().suspension_reason, 'fraud review')
  assert.equal((await events(app, 'session.suspended')).length, 1)

  // No body: the reason is 'api'.
  const other = await openSession(app)
  const noBody = await post(app, `/v1/sessions/${other.session.id}/suspend`)
  assert.equal(noBody.statusCode, 200, noBody.body)
  assert.equal(noBody.json().suspension_reason, 'api')

  const revoked = await openSession(app)
  await revokeSession(app, revoked.session.id)
  const ended = await post(app, `/v1/sessions/${revoked.session.id}/suspend`, { reason: 'fraud review' })
  assert.equal(ended.statusCode, 409)
  assert.equal(ended.json().error.code, 'SESSION_ENDED')
  assert.equal((await getSession(app, revoked.session.id)).status, 'revoked')

  const unknown = await post(app, `/v1/sessions/${UNKNOWN_ID}/suspend`)
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error.code, 'SESSION_NOT_FOUND')

  const tooLong = await post(app, `/v1/sessions/${other.session.id}/suspend`, { reason: 'x'.repeat(201) })
  assert.equal(tooLong.statusCode, 400)
  assert.equal(tooLong.json().error.code, 'VALIDATION_FAILED')
})

test('a session past its lifetime is ended: suspend and resume answer SESSION_ENDED, never revive it', async (t) => {
  const { app, clock } = await buildTestApp(t)
  // Suspended, then its absolute lifetime runs out while it waits for review.
  const waited = await openSession(app, { absolute_lifetime: 120 })
  assert.equal(
    (await post(app, `/v1/sessions/${waited.session.id}/suspend`, { reason: 'review' })).statusCode,
    200,
  )
  // Never used again and idle past its timeout, not yet marked expired by anyone.
  const idle = await openSession(app, { idle_timeout: 60 })
  clock.advance(3 * MINUTE)

  const resumed = await post(app, `/v1/sessions/${waited.session.id}/resume`)
  assert.equal(resumed.statusCode, 409, resumed.body)
  assert.equal(resumed.json().error.code, 'SESSION_ENDED')
  assert.equal((await introspect(app, waited.token)).active, false)

  const suspended = await post(app, `/v1/sessions/${idle.session.id}/suspend`, { reason: 'review' })
  assert.equal(suspended.statusCode, 409, suspended.body)
  assert.equal(suspended.json().error.code, 'SESSION_ENDED')
})

test('suspend and resume need sessions:write: an introspect-only key is refused and changes nothing', async (t) => {
  const { app } = await buildTestApp(t)
  const gateway = (await createKey(app, ['introspect'])).key
  const reader = (await createKey(app, ['sessions:read'])).key
  const { token, session } = await openSession(app)
  for (const key of [gateway, reader]) {
    const res = await post(app, `/v1/sessions/${session.id}/suspend`, { reason: 'fraud review' }, key)
    assert.equal(res.statusCode, 403)
    assert.equal(res.json().error.code, 'FORBIDDEN')
  }
  assert.equal((await introspect(app, token)).active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')

  await post(app, `/v1/sessions/${session.id}/suspend`)
  const resume = await post(app, `/v1/sessions/${session.id}/resume`, undefined, gateway)
  assert.equal(resume.statusCode, 403)
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, token), SUSPENDED)
})

test('a JWT session drifts like an opaque one, and a suspended session cannot refresh', async (t) => {
  const { app } = await buildTestApp(t)
  const opened = await post(app, '/v1/sessions', {
    user_id: 'alice',
    token_type: 'jwt',
    ip: HOME_IP,
    user_agent: CHROME_WINDOWS,
  })
  assert.equal(opened.statusCode, 201, opened.body)
  const { access_token, refresh_token } = opened.json()
  assert.equal(
    (await introspect(app, access_token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active,
    true,
  )
  assert.deepEqual(
    await introspectAs(app, ADMIN_KEY, access_token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
  assert.deepEqual(await introspectAs(app, ADMIN_KEY, access_token), SUSPENDED)
  const refreshed = await post(app, '/v1/sessions/refresh', { refresh_token })
  assert.equal(refreshed.statusCode, 400)
  assert.equal(refreshed.json().error.code, 'SESSION_SUSPENDED')
})

test('across replicas: a drift suspension on one is seen by the other, which had the session cached active', async (t) => {
  const [one, two] = await twoReplicas(t, { ...redisSettings(), l1TtlMs: 60_000 })
  const { token, session } = await openSession(one.app)
  assert.equal((await introspect(one.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.equal((await introspect(two.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)
  assert.equal((await introspect(two.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active, true)

  assert.deepEqual(
    await introspectAs(one.app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: FIREFOX_WINDOWS }),
    SUSPENDED,
  )
  await eventually(
    async () => !(await introspect(two.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active,
    3000,
    'the other replica sees the drift suspension',
  )
  assert.deepEqual(
    await introspectAs(two.app, ADMIN_KEY, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS }),
    SUSPENDED,
  )

  // A resume on the second replica is seen by the first, which had it cached suspended.
  const res = await post(two.app, `/v1/sessions/${session.id}/resume`)
  assert.equal(res.statusCode, 200, res.body)
  await eventually(
    async () => (await introspect(one.app, token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })).active,
    3000,
    'the first replica sees the resume',
  )

  // And a manual suspension on the first is seen by the second.
  assert.equal((await introspect(two.app, token)).active, true)
  assert.equal(
    (await post(one.app, `/v1/sessions/${session.id}/suspend`, { reason: 'fraud review' })).statusCode,
    200,
  )
  await eventually(
    async () => !(await introspect(two.app, token)).active,
    3000,
    'the second sees the suspension',
  )
})
