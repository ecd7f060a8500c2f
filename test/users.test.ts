import assert from 'node:assert/strict'
import { test } from 'node:test'
import { auth, buildTestApp, introspect, openSession, revokeSession, SAFARI_IPHONE } from './helper.ts'

test("listing shows only that user's live sessions, newest first, with parsed devices and `current`", async (t) => {
  const { app, clock } = await buildTestApp(t, { idleTimeoutSeconds: 600 })
  const laptop = await openSession(app, { metadata: { label: 'laptop' } })
  clock.advance(1000)
  const phone = await openSession(app, { user_agent: SAFARI_IPHONE, ip: '2001:db8::1' })
  clock.advance(1000)
  const revoked = await openSession(app)
  await revokeSession(app, revoked.session.id)
  await openSession(app, { user_id: 'bob' })
  const expiring = await openSession(app, { idle_timeout: 1 })
  clock.advance(2000)

  const res = await app.inject({
    method: 'GET',
    url: `/v1/users/alice/sessions?current_session_id=${phone.session.id}`,
    headers: auth(),
  })
  assert.equal(res.statusCode, 200)
  const { sessions } = res.json()
  assert.deepEqual(
    sessions.map((s: { id: string }) => s.id),
    [phone.session.id, laptop.session.id],
  )
  assert.ok(!sessions.some((s: { id: string }) => s.id === expiring.session.id))
  const [first, second] = sessions
  assert.equal(first.current, true)
  assert.equal(second.current, false)
  assert.equal(first.ip, '2001:db8::1')
  assert.equal(first.user_agent, SAFARI_IPHONE)
  assert.deepEqual(first.device, {
    browser: 'Mobile Safari',
    browser_version: '17.0',
    os: 'iOS',
    os_version: '17.0',
    type: 'mobile',
  })
  assert.deepEqual(second.metadata, { label: 'laptop' })
  for (const field of ['created_at', 'last_seen_at', 'expires_at']) assert.ok(Date.parse(first[field]), field)
  assert.equal(first.token, undefined)
})

test('last_seen_at in the list follows introspection', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const { token } = await openSession(app)
  clock.advance(60_000)
  await introspect(app, token, { ip: '203.0.113.9' })
  const res = await app.inject({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth() })
  const [s] = res.json().sessions
  assert.equal(s.last_seen_at, new Date(clock.now()).toISOString())
  assert.equal(s.ip, '203.0.113.9')
})

test("revoking all of a user's sessions ends them all and reports the count; other users are untouched", async (t) => {
  const { app } = await buildTestApp(t)
  const a = await openSession(app)
  const b = await openSession(app)
  const bob = await openSession(app, { user_id: 'bob' })
  const res = await app.inject({ method: 'DELETE', url: '/v1/users/alice/sessions', headers: auth() })
  assert.equal(res.statusCode, 200)
  assert.deepEqual(res.json(), { revoked: 2 })
  assert.equal((await introspect(app, a.token)).active, false)
  assert.equal((await introspect(app, b.token)).active, false)
  assert.equal((await introspect(app, bob.token)).active, true)
  const again = await app.inject({ method: 'DELETE', url: '/v1/users/alice/sessions', headers: auth() })
  assert.deepEqual(again.json(), { revoked: 0 })
})

test('"log out other devices" keeps the named session', async (t) => {
  const { app } = await buildTestApp(t)
  const keep = await openSession(app)
  const other1 = await openSession(app)
  const other2 = await openSession(app)
  const res = await app.inject({
    method: 'DELETE',
    url: `/v1/users/alice/sessions?except_session_id=${keep.session.id}&reason=logout_others`,
    headers: auth(),
  })
  assert.deepEqual(res.json(), { revoked: 2 })
  assert.equal((await introspect(app, keep.token)).active, true)
  assert.equal((await introspect(app, other1.token)).active, false)
  assert.equal((await introspect(app, other2.token)).active, false)
  const list = await app.inject({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth() })
  assert.deepEqual(
    list.json().sessions.map((s: { id: string }) => s.id),
    [keep.session.id],
  )
})

test('the event history records creation and revocation, newest first, paginated and filtered', async (t) => {
  const { app } = await buildTestApp(t)
  const opened = []
  for (let i = 0; i < 3; i++) opened.push(await openSession(app))
  await app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${opened[0]?.session.id}?reason=user`,
    headers: auth(),
  })
  await openSession(app, { user_id: 'bob' })

  const page1 = await app.inject({ method: 'GET', url: '/v1/users/alice/events?limit=2', headers: auth() })
  assert.equal(page1.statusCode, 200)
  const body1 = page1.json()
  assert.equal(body1.events.length, 2)
  assert.equal(body1.events[0].type, 'session.revoked')
  assert.deepEqual(body1.events[0].data, { reason: 'user' })
  assert.equal(body1.events[0].session_id, opened[0]?.session.id)
  assert.ok(body1.next_cursor)

  const page2 = await app.inject({
    method: 'GET',
    url: `/v1/users/alice/events?limit=2&before=${body1.next_cursor}`,
    headers: auth(),
  })
  const body2 = page2.json()
  assert.equal(body2.events.length, 2)
  assert.ok(body2.events.every((e: { type: string }) => e.type === 'session.created'))
  const page3 = await app.inject({
    method: 'GET',
    url: `/v1/users/alice/events?limit=2&before=${body2.next_cursor}`,
    headers: auth(),
  })
  assert.equal(page3.json().events.length, 0)
  assert.equal(page3.json().next_cursor, null)
  const all = [...body1.events, ...body2.events].map((e: { id: string }) => Number(e.id))
  assert.deepEqual(
    all,
    [...all].sort((x, y) => y - x),
  )

  const created = await app.inject({
    method: 'GET',
    url: '/v1/users/alice/events?type=session.created',
    headers: auth(),
  })
  assert.equal(created.json().events.length, 3)
  const created0 = created.json().events.at(-1)
  assert.equal(created0.data.device.browser, 'Chrome')
})

test('events are written in the same transaction as the change: no event, no change', async (t) => {
  const { app } = await buildTestApp(t)
  const kept = await openSession(app)
  const { sql } = app.db
  // Make recording each kind of event fail, and check that the change it records is rolled back.
  await sql`alter table session_events add constraint refuse_created check (type <> 'session.created') not valid`
  const open = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'carol' },
  })
  assert.equal(open.statusCode, 500)
  assert.equal(open.json().error.code, 'INTERNAL')
  const rows = await sql`select id from sessions where user_id = 'carol'`
  assert.equal(rows.length, 0)

  await sql`alter table session_events add constraint refuse_revoked check (type <> 'session.revoked') not valid`
  const revoke = await revokeSession(app, kept.session.id)
  assert.equal(revoke.statusCode, 500)
  assert.equal((await introspect(app, kept.token)).active, true)
})

test("a user's sessions page by cursor: every live session once, newest first, the last page says so", async (t) => {
  const { app, clock } = await buildTestApp(t)
  const opened: string[] = []
  for (let i = 0; i < 5; i++) {
    opened.push((await openSession(app, { user_id: 'paged' })).session.id)
    clock.advance(1000)
  }
  // Two at the same instant too: the order (and the cursor) must still tell them apart.
  opened.push((await openSession(app, { user_id: 'paged' })).session.id)
  opened.push((await openSession(app, { user_id: 'paged' })).session.id)
  await revokeSession(app, opened[2] as string)

  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const query: string = `limit=2${cursor ? `&cursor=${cursor}` : ''}`
    const res = await app.inject({ url: `/v1/users/paged/sessions?${query}`, headers: auth() })
    assert.equal(res.statusCode, 200, res.body)
    const page = res.json() as {
      sessions: Array<{ id: string; created_at: string }>
      total: number
      next_cursor: string | null
    }
    assert.ok(page.sessions.length <= 2)
    assert.equal(page.total, 6, 'every page says how many live sessions there are in all')
    seen.push(...page.sessions.map((s) => s.id))
    cursor = page.next_cursor
    pages++
  } while (cursor && pages < 10)
  const live = opened.filter((id) => id !== opened[2])
  assert.deepEqual([...seen].sort(), [...live].sort(), 'every live session exactly once')
  assert.equal(new Set(seen).size, seen.length)
  // Newest first: the five sessions opened a second apart come out in reverse order.
  const order = seen.filter((id) => opened.slice(0, 5).includes(id))
  assert.deepEqual(order, [opened[4], opened[3], opened[1], opened[0]])
})

test('the POST forms of user revocations take their options in the body, as the DELETE forms do in the query', async (t) => {
  const { app } = await buildTestApp(t)
  const [kept, other, third] = [await openSession(app), await openSession(app), await openSession(app)]
  const one = await app.inject({
    method: 'POST',
    url: `/v1/users/alice/sessions/${third.session.id}/revoke`,
    headers: auth(),
    payload: { reason: 'lost_phone' },
  })
  assert.equal(one.statusCode, 200, one.body)
  assert.equal(one.json().end_reason, 'lost_phone')
  const notHers = await app.inject({
    method: 'POST',
    url: `/v1/users/bob/sessions/${kept.session.id}/revoke`,
    headers: auth(),
  })
  assert.equal(notHers.statusCode, 404)

  const others = await app.inject({
    method: 'POST',
    url: '/v1/users/alice/sessions/revoke',
    headers: auth(),
    payload: { except_session_id: kept.session.id, reason: 'logout_others' },
  })
  assert.deepEqual(others.json(), { revoked: 1 })
  assert.equal((await introspect(app, kept.token)).active, true)
  assert.deepEqual(await introspect(app, other.token), { active: false, reason: 'revoked' })
  const events = await app.inject({
    method: 'GET',
    url: '/v1/users/alice/events?type=session.revoked',
    headers: auth(),
  })
  const reasons = events.json().events.map((e: { data: { reason?: string } }) => e.data.reason)
  assert.deepEqual(reasons.sort(), ['logout_others', 'lost_phone'])
})
