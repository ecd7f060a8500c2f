import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { buildExample, type ExampleOptions } from '../examples/devices-backend/server.ts'
import { createClient } from '../packages/client/src/index.ts'
import { npmRunExample, stopWithFailingClose } from './fixtures/example-process.ts'
import { ADMIN_KEY, buildTestApp, CHROME_WINDOWS, createKey, SAFARI_IPHONE } from './helper.ts'

/**
 * examples/devices-backend against a live service: the service on a local port, the example on
 * another, driven over HTTP by "browsers" that keep their own cookies and send their own User-Agent.
 */

const FIREFOX_LINUX = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'

/** A service, the example in front of it (with the scopes a real backend gets), and an admin client of the service. */
async function setup(t: TestContext, options: Partial<ExampleOptions> = {}) {
  const { app: service } = await buildTestApp(t)
  const serviceUrl = await service.listen({ host: '127.0.0.1', port: 0 })
  const { key } = await createKey(service, ['sessions:read', 'sessions:write', 'introspect'])
  const example = buildExample({ sessionAuthorityUrl: serviceUrl, apiKey: key, ...options })
  const base = await example.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => example.close())
  const admin = createClient({ baseUrl: serviceUrl, apiKey: ADMIN_KEY })
  return { example, base, serviceUrl, key, admin }
}

/** A browser: its User-Agent, a cookie jar kept by hand, an Origin on every POST (as browsers send). */
class Browser {
  readonly cookies = new Map<string, string>()
  setCookies: string[] = []

  constructor(
    readonly base: string,
    readonly userAgent: string,
  ) {}

  async request(
    path: string,
    init: { method?: string; form?: Record<string, string>; origin?: string | null } = {},
  ) {
    const method = init.method ?? 'GET'
    const headers: Record<string, string> = { 'user-agent': this.userAgent }
    const cookie = Array.from(this.cookies, ([name, value]) => `${name}=${value}`).join('; ')
    if (cookie) headers.cookie = cookie
    if (method === 'POST' && init.origin !== null) headers.origin = init.origin ?? this.base
    let body: string | undefined
    if (init.form) {
      body = new URLSearchParams(init.form).toString()
      headers['content-type'] = 'application/x-www-form-urlencoded'
    }
    const res = await fetch(new URL(path, this.base), { method, headers, body, redirect: 'manual' })
    this.setCookies = res.headers.getSetCookie()
    for (const line of this.setCookies) {
      const [pair = '', ...attributes] = line.split('; ')
      const [name = '', value = ''] = pair.split('=')
      if (value === '' || attributes.includes('Max-Age=0')) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    return res
  }

  get(path: string) {
    return this.request(path)
  }

  post(path: string, form: Record<string, string> = {}) {
    return this.request(path, { method: 'POST', form })
  }

  /** Logs in through the form; returns the session id /me reports. */
  async login(userId: string): Promise<string> {
    const res = await this.post('/login', { user_id: userId })
    assert.equal(res.status, 303)
    assert.equal(res.headers.get('location'), '/devices')
    const me = await this.get('/me')
    assert.equal(me.status, 200)
    return ((await me.json()) as { session_id: string }).session_id
  }

  get token(): string {
    const token = this.cookies.get('session')
    assert.ok(token, 'the browser holds a session cookie')
    return token
  }
}

/** The devices page's rows: session id, whether it is marked as this device, and the row's markup. */
async function devices(browser: Browser, path = '/devices') {
  const res = await browser.get(path)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/)
  const page = await res.text()
  const rows = Array.from(page.matchAll(/<tr data-session-id="([^"]+)"( class="current")?>([\s\S]*?)<\/tr>/g))
  return {
    page,
    rows: rows.map(([, id = '', current, markup = '']) => ({ id, current: Boolean(current), markup })),
  }
}

test('login, cookie, /me, the devices page, signing out one device, all others, then this one', async (t) => {
  const { base, admin } = await setup(t)
  const laptop = new Browser(base, CHROME_WINDOWS)
  const phone = new Browser(base, SAFARI_IPHONE)

  const form = await laptop.get('/')
  assert.equal(form.status, 200)
  const formPage = await form.text()
  assert.match(formPage, /<form method="post" action="\/login">/)
  assert.match(formPage, /no password/)

  const login = await laptop.post('/login', { user_id: 'alice' })
  assert.equal(login.status, 303)
  assert.equal(login.headers.get('location'), '/devices')
  const [cookie = ''] = laptop.setCookies
  assert.match(cookie, /^session=sat_[\w-]+; /)
  const attributes = cookie.split('; ').slice(1)
  assert.ok(attributes.includes('HttpOnly'))
  assert.ok(attributes.includes('SameSite=Lax'))
  assert.ok(attributes.includes('Path=/'))
  assert.ok(attributes.some((a) => a.startsWith('Expires=')))
  assert.ok(
    !attributes.includes('Secure'),
    'plain http on loopback: not Secure, or the browser would drop it',
  )
  // A second login in the same browser ends the session it replaces.
  const firstToken = laptop.token
  await laptop.login('alice')
  assert.deepEqual(await admin.introspect(firstToken), { active: false, reason: 'revoked' })

  const me = await laptop.get('/me')
  assert.equal(me.status, 200)
  const alice = (await me.json()) as { user_id: string; session_id: string; expires_at: string }
  assert.equal(alice.user_id, 'alice')
  assert.ok(!Number.isNaN(Date.parse(alice.expires_at)))
  const phoneId = await phone.login('alice')
  assert.notEqual(phoneId, alice.session_id)

  const onLaptop = await devices(laptop)
  assert.deepEqual(onLaptop.rows.map((r) => r.id).sort(), [alice.session_id, phoneId].sort())
  const [mine, theirs] = [alice.session_id, phoneId].map((id) => onLaptop.rows.find((r) => r.id === id))
  assert.ok(mine?.current && mine.markup.includes('This device') && !mine.markup.includes('<form'))
  assert.match(mine.markup, /Chrome/)
  assert.ok(theirs && !theirs.current && !theirs.markup.includes('This device'))
  assert.match(theirs.markup, /iOS/)
  assert.ok(theirs.markup.includes(`name="session_id" value="${phoneId}"`))
  assert.match(onLaptop.page, /action="\/devices\/revoke-others"/)
  assert.match(onLaptop.page, /action="\/logout"/)
  // The phone sees the same two, with itself marked.
  assert.deepEqual(
    (await devices(phone)).rows.filter((r) => r.current).map((r) => r.id),
    [phoneId],
  )

  // Sign out the phone from the laptop.
  const phoneToken = phone.token
  const signOut = await laptop.post('/devices/revoke', { session_id: phoneId })
  assert.equal(signOut.status, 303)
  assert.equal(signOut.headers.get('location'), '/devices?notice=signed-out')
  assert.deepEqual(
    (await devices(laptop)).rows.map((r) => r.id),
    [alice.session_id],
  )
  assert.deepEqual(await admin.introspect(phoneToken), { active: false, reason: 'revoked' })
  const bounced = await phone.get('/devices')
  assert.equal(bounced.status, 303)
  assert.equal(bounced.headers.get('location'), '/?reason=revoked')
  assert.ok(!phone.cookies.has('session'), 'the dead cookie is cleared')
  assert.match(await (await phone.get('/?reason=revoked')).text(), /You were signed out/)

  // Sign out all other devices: two more, then only the laptop is left.
  const tablet = new Browser(base, FIREFOX_LINUX)
  await tablet.login('alice')
  await phone.login('alice')
  assert.equal((await devices(laptop)).rows.length, 3)
  const others = await laptop.post('/devices/revoke-others')
  assert.equal(others.status, 303)
  assert.equal(others.headers.get('location'), '/devices?notice=others-signed-out')
  assert.deepEqual(
    (await devices(laptop)).rows.map((r) => r.id),
    [alice.session_id],
  )
  for (const browser of [tablet, phone]) {
    const answer = await browser.get('/me')
    assert.equal(answer.status, 401)
    assert.deepEqual(await answer.json(), { signed_in: false, reason: 'revoked' })
  }

  // Sign out of this device.
  const laptopToken = laptop.token
  const logout = await laptop.post('/logout')
  assert.equal(logout.status, 303)
  assert.equal(logout.headers.get('location'), '/?reason=logged_out')
  assert.match(laptop.setCookies[0] ?? '', /^session=; .*Max-Age=0/)
  assert.deepEqual(await admin.introspect(laptopToken), { active: false, reason: 'revoked' })
  const after = await laptop.get('/me')
  assert.equal(after.status, 401)
  assert.equal((await laptop.get('/devices')).headers.get('location'), '/')
  // The old cookie, if a browser kept it, is refused with the reason.
  laptop.cookies.set('session', laptopToken)
  assert.deepEqual(await (await laptop.get('/me')).json(), { signed_in: false, reason: 'revoked' })
})

test('a form post from another site, or with no Origin, is refused and changes nothing', async (t) => {
  const { base, admin } = await setup(t)
  const laptop = new Browser(base, CHROME_WINDOWS)
  const phone = new Browser(base, SAFARI_IPHONE)
  await laptop.login('alice')
  const phoneId = await phone.login('alice')

  for (const origin of ['https://evil.example', 'http://127.0.0.1:1', null]) {
    for (const path of ['/devices/revoke-others', '/logout']) {
      const res = await laptop.request(path, { method: 'POST', form: { session_id: phoneId }, origin })
      assert.equal(res.status, 403, `${path} from ${origin}`)
    }
    const login = await new Browser(base, FIREFOX_LINUX).request('/login', {
      method: 'POST',
      form: { user_id: 'mallory' },
      origin,
    })
    assert.equal(login.status, 403)
    assert.equal(login.headers.get('set-cookie'), null)
  }
  assert.equal((await admin.getSession(phoneId)).status, 'active')
  assert.equal((await devices(laptop)).rows.length, 2)
  assert.equal((await laptop.get('/me')).status, 200)
})

test("a form naming bob's session, posted by alice, does not end it", async (t) => {
  const { base, admin } = await setup(t)
  const alice = new Browser(base, CHROME_WINDOWS)
  const bob = new Browser(base, SAFARI_IPHONE)
  await alice.login('alice')
  const bobId = await bob.login('bob')

  const res = await alice.post('/devices/revoke', { session_id: bobId })
  assert.equal(res.status, 303)
  assert.equal(res.headers.get('location'), '/devices?notice=not-yours')
  assert.match((await devices(alice, '/devices?notice=not-yours')).page, /No such session among yours/)
  assert.equal((await admin.getSession(bobId)).status, 'active')
  assert.equal((await bob.get('/me')).status, 200)
  // Nor does a session id that is not one at all.
  assert.equal(
    (await alice.post('/devices/revoke', { session_id: 'x' })).headers.get('location'),
    '/devices?notice=not-yours',
  )
})

test('a user agent or user id made of HTML is shown as text', async (t) => {
  const { base } = await setup(t)
  const userId = `"><img src=x onerror=alert(1)>`
  const attacker = new Browser(base, '<script>alert(1)</script> Mozilla/5.0')
  const victim = new Browser(base, CHROME_WINDOWS)
  await attacker.login(userId)
  await victim.login(userId)

  const { page, rows } = await devices(victim)
  assert.equal(rows.length, 2)
  assert.ok(!page.includes('<script>alert'), 'no script from a user agent')
  assert.ok(!page.includes('<img src=x'), 'no markup from a user id')
  assert.ok(page.includes('&lt;script&gt;alert(1)&lt;/script&gt; Mozilla/5.0'))
  assert.ok(page.includes('&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'))
  const me = (await (await victim.get('/me')).json()) as { user_id: string }
  assert.equal(me.user_id, userId, 'JSON carries the id as it is')
  // The login page takes only known reasons; anything else is not echoed.
  assert.ok(!(await (await victim.get('/?reason=<b>hi</b>')).text()).includes('hi</b>'))
})

test('off loopback the cookie is Secure and __Host-; behind a trusted proxy the client is its X-Forwarded-For', async (t) => {
  const { example, admin } = await setup(t, { trustProxy: '127.0.0.1' })
  const proxied = {
    'user-agent': CHROME_WINDOWS,
    'x-forwarded-for': '203.0.113.9',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'app.example.test',
  }
  const login = await example.inject({
    method: 'POST',
    url: '/login',
    headers: { ...proxied, origin: 'https://app.example.test' },
    payload: { user_id: 'alice' },
  })
  assert.equal(login.statusCode, 303)
  const cookie = String(login.headers['set-cookie'])
  assert.match(cookie, /^__Host-session=sat_[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Secure; /)
  const token = cookie.slice('__Host-session='.length, cookie.indexOf(';'))

  const me = await example.inject({ url: '/me', headers: { ...proxied, cookie: `__Host-session=${token}` } })
  assert.equal(me.statusCode, 200)
  const session = await admin.getSession(me.json().session_id)
  assert.equal(session.ip, '203.0.113.9')
  // Same-origin for this site is https://app.example.test: its plain-http twin is another origin.
  const refused = await example.inject({
    method: 'POST',
    url: '/logout',
    headers: { ...proxied, origin: 'http://app.example.test', cookie: `__Host-session=${token}` },
  })
  assert.equal(refused.statusCode, 403)
})

test('`npm run example` serves the login page against the service it is given', async (t) => {
  const { base, stop } = await npmRunExample(t, 'example', 'devices example', await setup(t))

  const browser = new Browser(base, CHROME_WINDOWS)
  const page = await (await browser.get('/')).text()
  assert.match(page, /<form method="post" action="\/login">/)
  await browser.login('alice')
  assert.equal((await devices(browser)).rows.length, 1)
  await stop()
})

test('a stop whose close fails still ends the example, saying why, with no unhandled rejection', async (t) => {
  const service = await setup(t)
  const start = 'examples/devices-backend/start.ts'
  const { code, output } = await stopWithFailingClose(t, start, 'devices example', service)
  assert.equal(code, 1, output)
  assert.match(output, /could not close the example: close failed \(injected\)/)
  // An unhandled rejection ends Node with the error's stack and its version line.
  assert.doesNotMatch(output, /^Node\.js v\d+/m, output)
})
