import assert from 'node:assert/strict'
import { test } from 'node:test'
import { consoleBrowser, OPERATOR_UA, signIn } from './fixtures/console.ts'
import { createTenant, openAs, tenantKey } from './fixtures/tenants.ts'
import { ADMIN_KEY, auth, buildTestApp, createKey, introspect, openSession } from './helper.ts'

// The admin console, through inject: who may sign in, what the console session is, and what its forms
// refuse. test/console-browser.test.ts drives the same pages in a real browser.

const enabled = { consoleEnabled: true }

test('the console is off unless CONSOLE_ENABLED; on, a page asks the signed-out browser to sign in', async (t) => {
  const off = await buildTestApp(t)
  assert.equal((await off.app.inject({ url: '/admin' })).statusCode, 404)
  const { app } = await buildTestApp(t, enabled)
  const res = await app.inject({ url: '/admin' })
  assert.equal(res.statusCode, 303)
  assert.equal(res.headers.location, '/admin/sign-in')
  const form = await app.inject({ url: '/admin/sign-in' })
  assert.equal(form.statusCode, 200)
  assert.match(
    String(form.headers['content-security-policy']),
    /default-src 'none'.*form-action 'self'.*frame-ancestors 'none'/,
  )
  assert.doesNotMatch(form.body, /<script/i, 'no script at all')
})

test('signing in opens a console session of this service: HttpOnly, SameSite=Strict, shown in the events; keys without admin are refused', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const { key: reader } = await createKey(app, ['sessions:read', 'sessions:write'])
  const refused = consoleBrowser(app)
  await refused.get('/admin/sign-in')
  const res = await refused.post('/admin/sign-in', { name: 'Mallory', api_key: reader })
  assert.equal(res.statusCode, 401)
  assert.match(res.body, /admin or platform scope/)
  assert.equal(refused.cookies.has('sa_console'), false)
  const wrong = await refused.post('/admin/sign-in', { name: 'Mallory', api_key: 'sak_not-a-key' })
  assert.equal(wrong.statusCode, 401)

  const browser = consoleBrowser(app)
  await browser.get('/admin/sign-in')
  const signedIn = await browser.post('/admin/sign-in', { name: 'Ada', api_key: ADMIN_KEY })
  assert.equal(signedIn.statusCode, 303)
  const cookie = String(
    [signedIn.headers['set-cookie']].flat().find((c) => String(c).startsWith('sa_console=')),
  )
  assert.match(cookie, /HttpOnly/i)
  assert.match(cookie, /SameSite=Strict/i)
  assert.match(cookie, /Path=\/admin/i)
  assert.doesNotMatch(cookie, new RegExp(ADMIN_KEY), 'the cookie is not the key')
  // Plain HTTP on loopback: not Secure here. Anywhere else the sign-in is refused (below).
  const sessions = await app.inject({ url: '/v1/users/console:env-admin/sessions', headers: auth() })
  const [session] = sessions.json().sessions
  assert.equal(session.client_id, 'console')
  assert.equal(session.metadata.operator, 'Ada')
  assert.equal(session.binding.user_agent, 'suspend')
  const page = await browser.get('/admin')
  assert.match(page.body, /Signed in as <strong>Ada<\/strong>/)

  // The console cookie is not an API key, and /v1 does not take it.
  const token = browser.cookies.get('sa_console') as string
  for (const headers of [{ authorization: `Bearer ${token}` }, { cookie: `sa_console=${token}` }]) {
    const api = await app.inject({ url: '/v1/users/alice/sessions', headers })
    assert.equal(api.statusCode, 401, JSON.stringify(headers))
  }
})

test('outside loopback the console needs HTTPS', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const form = await app.inject({ url: '/admin/sign-in', remoteAddress: '198.51.100.9' })
  const csrf = /name="_csrf" value="([^"]+)"/.exec(form.body)?.[1] as string
  const cookie = [form.headers['set-cookie']]
    .flat()
    .map((c) => String(c).split(';')[0])
    .join('; ')
  const res = await app.inject({
    method: 'POST',
    url: '/admin/sign-in',
    remoteAddress: '198.51.100.9',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', 'user-agent': OPERATOR_UA },
    payload: new URLSearchParams({ _csrf: csrf, name: 'Ada', api_key: ADMIN_KEY }).toString(),
  })
  assert.equal(res.statusCode, 401)
  assert.match(res.body, /needs HTTPS/)
})

test('the operator session ends like any other: revoked, idle, another browser, or its key revoked', async (t) => {
  const { app, clock, config } = await buildTestApp(t, enabled)
  // Revoked through the API, as support would revoke anyone's.
  const one = await signIn(app, ADMIN_KEY)
  await app.inject({ method: 'DELETE', url: '/v1/users/console:env-admin/sessions', headers: auth() })
  assert.equal((await one.get('/admin')).headers.location, '/admin/sign-in')

  // Idle past CONSOLE_IDLE_TIMEOUT_SECONDS.
  const two = await signIn(app, ADMIN_KEY)
  clock.advance((config.consoleIdleTimeoutSeconds + 1) * 1000)
  assert.equal((await two.get('/admin')).headers.location, '/admin/sign-in')

  // The cookie carried to another browser: the session is suspended, in both.
  const three = await signIn(app, ADMIN_KEY)
  const thief = consoleBrowser(app, 'curl/8.5.0')
  thief.cookies.set('sa_console', three.cookies.get('sa_console') as string)
  assert.equal((await thief.get('/admin')).headers.location, '/admin/sign-in')
  assert.equal((await three.get('/admin')).headers.location, '/admin/sign-in')

  // The key it signed in with revoked.
  const {
    key,
    api_key: { id },
  } = await createKey(app, ['admin'])
  const four = await signIn(app, key)
  const revoked = await app.inject({ method: 'DELETE', url: `/v1/api-keys/${id}`, headers: auth() })
  assert.equal(revoked.statusCode, 200)
  assert.equal((await four.get('/admin')).headers.location, '/admin/sign-in')
})

test('every form needs its token and the console origin: a cross-site post or a stale token does nothing', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const alice = await openSession(app)
  const browser = await signIn(app, ADMIN_KEY)
  await browser.get(`/admin/users/alice`)
  const crossSite = await browser.post(
    `/admin/sessions/${alice.session.id}/revoke`,
    {},
    { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
  )
  assert.equal(crossSite.statusCode, 403)
  const noToken = await browser.post(`/admin/sessions/${alice.session.id}/revoke`, { _csrf: 'forged' })
  assert.equal(noToken.statusCode, 403)
  assert.equal((await introspect(app, alice.token)).active, true, 'nothing was revoked')
  // A token of another console session (the operator signed in elsewhere) is refused too.
  const other = await signIn(app, ADMIN_KEY, 'Bob')
  await other.get('/admin/users/alice')
  await browser.get('/admin/users/alice')
  const swapped = await browser.post(`/admin/sessions/${alice.session.id}/revoke`, { _csrf: other.csrf() })
  assert.equal(swapped.statusCode, 403)
  assert.equal((await introspect(app, alice.token)).active, true)
})

test('actions go through the domain: revoke, suspend, resume with rebind, sign out all but one; the operator is the actor', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const first = await openSession(app)
  const second = await openSession(app, { ip: '198.51.100.4' })
  const third = await openSession(app, { ip: '192.0.2.55' })
  const browser = await signIn(app, ADMIN_KEY, 'Grace')
  const page = await browser.get('/admin/users/alice')
  assert.match(page.body, /Live sessions \(3\)/)
  assert.match(page.body, /198\.51\.100\.4/)

  const revoked = await browser.post(`/admin/sessions/${first.session.id}/revoke?back=user`)
  assert.equal(revoked.statusCode, 303)
  assert.equal(revoked.headers.location, '/admin/users/alice?notice=revoked')
  assert.equal((await introspect(app, first.token)).active, false)
  const events = await app.inject({ url: '/v1/users/alice/events?type=session.revoked', headers: auth() })
  const [event] = events.json().events
  assert.equal(event.data.actor.operator, 'Grace')
  assert.equal(event.data.actor.key_id, 'env-admin')

  await browser.get(`/admin/sessions/${second.session.id}`)
  await browser.post(`/admin/sessions/${second.session.id}/suspend`)
  assert.equal((await introspect(app, second.token)).active, false)
  await browser.get(`/admin/sessions/${second.session.id}`)
  const resumed = await browser.post(`/admin/sessions/${second.session.id}/resume`, { rebind: 'no' })
  assert.equal(resumed.statusCode, 303)
  assert.equal((await introspect(app, second.token)).active, true)

  await browser.get('/admin/users/alice')
  await browser.post('/admin/users/alice/sign-out', { except: third.session.id })
  assert.equal((await introspect(app, second.token)).active, false)
  assert.equal((await introspect(app, third.token)).active, true)
})

test('bulk sign-out needs the typed confirmation, spares the listed users and the operator', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const alice = await openSession(app)
  const bob = await openSession(app, { user_id: 'bob' })
  const root = await openSession(app, { user_id: 'root' })
  const browser = await signIn(app, ADMIN_KEY)
  await browser.get('/admin/sign-out-everyone')
  const unconfirmed = await browser.post('/admin/sign-out-everyone', { except: 'root', confirm: 'yes' })
  assert.equal(unconfirmed.statusCode, 400)
  assert.equal((await introspect(app, alice.token)).active, true)
  const done = await browser.post('/admin/sign-out-everyone', {
    except: 'root\n',
    confirm: 'sign out everyone',
  })
  assert.equal(done.statusCode, 200)
  assert.match(done.body, /Revoked 2 sessions, sparing 1 listed user/)
  assert.equal((await introspect(app, alice.token)).active, false)
  assert.equal((await introspect(app, bob.token)).active, false)
  assert.equal((await introspect(app, root.token)).active, true)
  assert.equal((await browser.get('/admin')).statusCode, 200, 'the operator is still signed in')
})

test("a tenant's operator sees and acts on its own tenant only", async (t) => {
  const { app } = await buildTestApp(t, enabled)
  await createTenant(app, 'acme')
  await createTenant(app, 'globex')
  const acmeAdmin = await tenantKey(app, 'acme', ['admin'])
  const globexSession = await openAs(app, await tenantKey(app, 'globex'), { user_id: 'carol' })
  const browser = await signIn(app, acmeAdmin)
  const user = await browser.get('/admin/users/carol')
  assert.match(user.body, /This user has no live session/)
  const session = await browser.get(`/admin/sessions/${globexSession.session.id}`)
  assert.equal(session.statusCode, 404)
  await browser.get('/admin/users/carol')
  const revoke = await browser.post(`/admin/sessions/${globexSession.session.id}/revoke`)
  assert.equal(revoke.statusCode, 404)
  assert.equal((await browser.get('/admin/tenants')).statusCode, 403)
  const events = await browser.get('/admin/events')
  assert.doesNotMatch(events.body, /carol/)
  // The overview counts its sessions and shows the service's health, not every tenant's traffic.
  const overview = await browser.get('/admin')
  assert.match(overview.body, /Live sessions \(tenant acme\)/)
  assert.match(overview.body, /Postgres/)
  assert.doesNotMatch(overview.body, /Introspections per second|hit rate|Webhook deliveries waiting/)
  const platform = await signIn(app, ADMIN_KEY)
  assert.match((await platform.get('/admin')).body, /Introspections per second/)
})

test('the log of a console visit holds neither the key signed in with, nor the console token, nor the form token', async (t) => {
  const { app, logs } = await buildTestApp(t, { ...enabled, logLevel: 'debug' })
  const browser = await signIn(app, ADMIN_KEY)
  const csrf = browser.csrf()
  await openSession(app)
  await browser.get('/admin/users/alice')
  await browser.post('/admin/sign-in', { name: 'x', api_key: `${ADMIN_KEY}-wrong` })
  const text = logs.text()
  assert.ok(text.includes('/admin/users/alice'), 'the requests are logged')
  for (const secret of [ADMIN_KEY, browser.cookies.get('sa_console') as string, csrf]) {
    assert.equal(text.includes(secret), false, `the log holds ${secret.slice(0, 6)}…`)
  }
})

test('a session is opened by its id; a token, or anything else, is not a session id', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const alice = await openSession(app)
  const browser = await signIn(app, ADMIN_KEY)
  const found = await browser.get(`/admin/sessions?id=${alice.session.id.toUpperCase()}`)
  assert.equal(found.headers.location, `/admin/sessions/${alice.session.id}`)
  const page = await browser.get(`/admin/sessions/${alice.session.id}`)
  assert.match(page.body, /session\.created/)
  const byToken = await browser.get(`/admin/sessions?id=${encodeURIComponent(alice.token.slice(0, 12))}`)
  assert.equal(byToken.statusCode, 400)
  assert.match(byToken.body, /a session id is a UUID/)
  for (const url of [
    '/admin/sessions/not-a-uuid',
    `/admin/users/${'x'.repeat(300)}`,
    '/admin/events?since=yesterday',
  ]) {
    const res = await browser.get(url)
    assert.equal(res.statusCode, 400, url)
    assert.match(String(res.headers['content-type']), /text\/html/)
  }
})

test('a replaced ADMIN_API_KEY ends the console sessions of the old one, though the id stays env-admin', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const old = await signIn(app, ADMIN_KEY)
  // What a restart with a new ADMIN_API_KEY does: the old key is retired, the new one takes its id.
  const replacement = 'test-admin-key-replacement-0123456789abcdef'
  assert.equal(await app.apiKeys.seedEnvAdmin(replacement), 'seeded')
  const refused = await old.get('/admin')
  assert.equal(refused.headers.location, '/admin/sign-in')
  assert.equal(old.cookies.has('sa_console'), false, 'the dead cookie is cleared')
  const live = await app.inject({ url: '/v1/users/console:env-admin/sessions', headers: auth(replacement) })
  assert.deepEqual(live.json().sessions, [], 'the old session is ended, not merely refused')
  const ended = await app.inject({
    url: '/v1/users/console:env-admin/events?type=session.revoked',
    headers: auth(replacement),
  })
  assert.equal(ended.json().events[0].data.reason, 'operator key revoked or replaced')
  // The new key signs in as before.
  await signIn(app, replacement)
})

test("no API key resumes an operator's console session: it could rebind it to another browser", async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const { key: writer } = await createKey(app, ['sessions:read', 'sessions:write'])
  const operator = await signIn(app, ADMIN_KEY)
  const thief = consoleBrowser(app, 'curl/8.5.0')
  thief.cookies.set('sa_console', operator.cookies.get('sa_console') as string)
  await thief.get('/admin') // drift: the session is suspended
  const listed = await app.inject({ url: '/v1/users/console:env-admin/sessions', headers: auth(writer) })
  const [session] = listed.json().sessions
  assert.equal(session.status, 'suspended')
  for (const key of [writer, ADMIN_KEY]) {
    const resumed = await app.inject({
      method: 'POST',
      url: `/v1/sessions/${session.id}/resume`,
      headers: auth(key),
      payload: { user_agent: 'curl/8.5.0', ip: '127.0.0.1' },
    })
    assert.equal(resumed.statusCode, 409, resumed.body)
    assert.equal(resumed.json().error.code, 'SESSION_NOT_RESUMABLE')
  }
  assert.equal((await thief.get('/admin')).headers.location, '/admin/sign-in')
  // The console's own page of that session offers no resume either.
  const other = await signIn(app, ADMIN_KEY, 'Bob')
  const page = await other.get(`/admin/sessions/${session.id}`)
  assert.doesNotMatch(page.body, /\/resume"/)
  assert.match(page.body, /never resumed/)
})

test('sign-in: a good key passes a block of its address; behind a proxy not trusted, plain HTTP is refused', async (t) => {
  const { app } = await buildTestApp(t, { ...enabled, authFailureLimit: 2, authFailureWindowSeconds: 600 })
  const guesser = consoleBrowser(app)
  await guesser.get('/admin/sign-in')
  await guesser.post('/admin/sign-in', { name: 'Mallory', api_key: 'sak_guess-1' })
  await guesser.post('/admin/sign-in', { name: 'Mallory', api_key: 'sak_guess-2' })
  const blocked = await guesser.post('/admin/sign-in', { name: 'Mallory', api_key: 'sak_guess-3' })
  assert.equal(blocked.statusCode, 429)
  assert.ok(Number(blocked.headers['retry-after']) > 0)
  // The operator on the same address (a shared NAT) is not locked out.
  await signIn(app, ADMIN_KEY)

  // A proxy on this machine forwarding a remote browser: the peer is loopback, the browser is not.
  const proxied = consoleBrowser(app)
  await proxied.get('/admin/sign-in')
  const res = await proxied.post(
    '/admin/sign-in',
    { name: 'Ada', api_key: ADMIN_KEY },
    { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'http' },
  )
  assert.equal(res.statusCode, 401)
  assert.match(res.body, /needs HTTPS/)
})

test('signing in again ends the console session held until then; the key signed in with cannot be revoked from it', async (t) => {
  const { app } = await buildTestApp(t, enabled)
  const {
    key,
    api_key: { id },
  } = await createKey(app, ['admin'])
  const browser = await signIn(app, key, 'Ada')
  const first = browser.cookies.get('sa_console') as string
  await browser.get('/admin/sign-in') // a signed-in browser is sent on to the overview
  const form = await browser.get('/admin/api-keys')
  assert.equal(form.statusCode, 200)
  const own = await browser.post(`/admin/api-keys/${id}/revoke`)
  assert.equal(own.statusCode, 400)
  assert.match(own.body, /signed in with this key/)
  const keys = await app.inject({ url: '/v1/api-keys', headers: auth() })
  assert.equal(keys.json().api_keys.find((k: { id: string }) => k.id === id).revoked_at, null)

  await browser.get('/admin/sign-in')
  const again = await browser.post('/admin/sign-in', { name: 'Ada', api_key: ADMIN_KEY })
  assert.equal(again.statusCode, 303)
  const listed = await app.inject({ url: `/v1/users/console:${id}/sessions`, headers: auth() })
  assert.deepEqual(listed.json().sessions, [], 'the first session is not left behind')
  const ended = await app.inject({
    url: `/v1/users/console:${id}/events?type=session.revoked`,
    headers: auth(),
  })
  assert.equal(ended.json().events[0].data.reason, 'signed in again')
  assert.notEqual(browser.cookies.get('sa_console'), first)
})

test("a platform operator's events page links each user in its own tenant, and filters by tenant", async (t) => {
  const { app } = await buildTestApp(t, enabled)
  await createTenant(app, 'acme')
  await openAs(app, await tenantKey(app, 'acme'), { user_id: 'carol' })
  await openSession(app, { user_id: 'carol' })
  const browser = await signIn(app, ADMIN_KEY)
  // Attribute values as a browser reads them (the pages escape = and & in attributes).
  const read = async (url: string) =>
    (await browser.get(url)).body.replaceAll('&#61;', '=').replaceAll('&#38;', '&')
  const all = { body: await read('/admin/events?type=session.created') }
  assert.match(all.body, /href="\/admin\/users\/carol\?tenant=acme"/)
  assert.match(all.body, /href="\/admin\/users\/carol\?tenant=default"/)
  const acme = { body: await read('/admin/events?type=session.created&tenant=acme') }
  assert.match(acme.body, /tenant=acme/)
  assert.doesNotMatch(acme.body, /\/admin\/users\/carol\?tenant=default/)
  const user = { body: await read('/admin/users/carol?tenant=acme') }
  assert.match(user.body, /href="\/admin\/events\?user_id=carol&tenant=acme"/)
})
