import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { buildDevicesPage, CONTENT_SECURITY_POLICY } from '../examples/devices-page/server.ts'
import { npmRunExample, stopWithFailingClose } from './fixtures/example-process.ts'
import { buildTestApp, CHROME_WINDOWS, createKey } from './helper.ts'

/**
 * examples/devices-page over HTTP against a live service: the login, the cookie, and the one gateway
 * route to the self-service API. test/widget-browser.test.ts runs the page itself in chromium.
 */

const COOKIE = 'sa_session'

async function setup(t: TestContext) {
  const { app: service } = await buildTestApp(t, { forwardAuthCookie: COOKIE, trustProxy: '127.0.0.1' })
  const serviceUrl = await service.listen({ host: '127.0.0.1', port: 0 })
  const { key } = await createKey(service, ['sessions:write', 'introspect'])
  const example = buildDevicesPage({ sessionAuthorityUrl: serviceUrl, apiKey: key, cookieName: COOKIE })
  t.after(() => example.close())
  return { service, serviceUrl, key, example }
}

/** Logs in through the form (as a browser on this site posts it) and returns the session cookie's value. */
async function login(example: ReturnType<typeof buildDevicesPage>, origin = 'http://localhost:80') {
  const res = await example.inject({
    method: 'POST',
    url: '/login',
    headers: { origin, 'user-agent': CHROME_WINDOWS, 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'user_id=alice',
  })
  assert.equal(res.statusCode, 303, res.body)
  assert.equal(res.headers.location, '/devices')
  const cookie = String(res.headers['set-cookie'])
  assert.match(cookie, /^sa_session=sat_[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Expires=/)
  return cookie.slice(`${COOKIE}=`.length, cookie.indexOf(';'))
}

test('the page: the element and its file from this origin, under a strict CSP', async (t) => {
  const { example } = await setup(t)
  const page = await example.inject({ url: '/devices' })
  assert.equal(page.statusCode, 200)
  assert.equal(page.headers['content-security-policy'], CONTENT_SECURITY_POLICY)
  assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval|https?:/)
  assert.match(page.body, /<script type="module" src="\/widget\/session-devices\.js"><\/script>/)
  assert.match(page.body, /<session-devices api="\/auth\/v1\/me">/)
  // Every script of the page is a file or a data block: nothing for the CSP to refuse.
  for (const [tag] of page.body.matchAll(/<script[^>]*>/g)) {
    assert.match(tag, /src="\/|type="application\/json"/, tag)
  }
  assert.doesNotMatch(page.body, /style=|<style/)

  const widget = await example.inject({ url: '/widget/session-devices.js' })
  assert.equal(widget.statusCode, 200)
  assert.equal(widget.headers['content-type'], 'text/javascript; charset=utf-8')
  assert.equal(widget.headers['cache-control'], 'public, max-age=300')
  const revalidated = await example.inject({
    url: '/widget/session-devices.js',
    headers: { 'if-none-match': String(widget.headers.etag) },
  })
  assert.equal(revalidated.statusCode, 304)
})

test('the gateway route: /v1/me with the session cookie and the browser client, nothing else', async (t) => {
  const { example } = await setup(t)
  const token = await login(example)
  const browser = { 'user-agent': CHROME_WINDOWS, cookie: `theme=dark; ${COOKIE}=${token}; other=1` }

  const list = await example.inject({ url: '/auth/v1/me/sessions?limit=5', headers: browser })
  assert.equal(list.statusCode, 200, list.body)
  assert.equal(list.headers['cache-control'], 'no-store')
  const { sessions } = list.json() as { sessions: Array<{ current: boolean; ip: string; device: unknown }> }
  assert.equal(sessions.length, 1)
  assert.equal(sessions[0]?.current, true)
  // The browser's address, through this proxy's X-Forwarded-For (the service trusts the proxy).
  assert.equal(sessions[0]?.ip, '127.0.0.1')

  // The service sees this site's origin as the request's own: a POST from this page is taken...
  const own = await example.inject({
    method: 'POST',
    url: '/auth/v1/me/sessions/revoke-others',
    headers: { ...browser, origin: 'http://localhost:80', 'content-type': 'application/json' },
    payload: '{}',
  })
  assert.equal(own.statusCode, 200, own.body)
  assert.deepEqual(own.json(), { revoked: 0 })
  // ...and one from another site's page is refused, though the cookie went along.
  const foreign = await example.inject({
    method: 'POST',
    url: '/auth/v1/me/sessions/revoke-all',
    headers: { ...browser, origin: 'https://evil.example', 'content-type': 'application/json' },
    payload: '{}',
  })
  assert.equal(foreign.statusCode, 403, foreign.body)
  assert.equal(foreign.json().error.code, 'FORBIDDEN')

  // No cookie, no session: the service's own answer comes back, reason and all.
  const none = await example.inject({
    url: '/auth/v1/me/sessions',
    headers: { 'user-agent': CHROME_WINDOWS },
  })
  assert.equal(none.statusCode, 401)
  assert.equal(none.json().error.code, 'SESSION_INACTIVE')
  assert.match(String(none.headers['www-authenticate']), /^Bearer/)

  // Only /v1/me/... reaches the service: no dot segment or encoded slash climbs out of it.
  for (const url of [
    '/auth/v1/me/%2e%2e/sessions',
    '/auth/v1/me/..%2f..%2fv1%2fsessions',
    '/auth/v1/me/sessions/%2F..%2F..%2Fhealthz',
    '/auth/v1/me/.',
  ]) {
    const res = await example.inject({ url, headers: browser })
    assert.equal(res.statusCode, 404, url)
  }
  // The session is still there: none of the above did anything.
  const after = await example.inject({ url: '/auth/v1/me/sessions', headers: browser })
  assert.equal(after.json().sessions.length, 1)
})

test('a login from another site is refused', async (t) => {
  const { example } = await setup(t)
  const res = await example.inject({
    method: 'POST',
    url: '/login',
    headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'user_id=alice',
  })
  assert.equal(res.statusCode, 403)
  assert.equal(res.headers['set-cookie'], undefined)
})

test('`npm run example:devices-page` serves the page against the service it is given', async (t) => {
  const service = await setup(t)
  const { base, stop } = await npmRunExample(t, 'example:devices-page', 'devices page example', service, {
    FORWARD_AUTH_COOKIE: COOKIE,
  })

  const page = await fetch(`${base}/devices`)
  assert.equal(page.status, 200)
  assert.match(await page.text(), /<session-devices api="\/auth\/v1\/me">/)
  const login = await fetch(`${base}/login`, {
    method: 'POST',
    headers: {
      origin: base,
      'user-agent': CHROME_WINDOWS,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'user_id=alice',
    redirect: 'manual',
  })
  assert.equal(login.status, 303)
  const cookie = String(login.headers.get('set-cookie')).split(';')[0] ?? ''
  const list = await fetch(`${base}/auth/v1/me/sessions`, {
    headers: { cookie, 'user-agent': CHROME_WINDOWS },
  })
  assert.equal(list.status, 200)
  assert.equal(((await list.json()) as { sessions: unknown[] }).sessions.length, 1)
  await stop()
})

test('a stop whose close fails still ends the example, saying why, with no unhandled rejection', async (t) => {
  const service = await setup(t)
  const start = 'examples/devices-page/start.ts'
  const { code, output } = await stopWithFailingClose(t, start, 'devices page example', service)
  assert.equal(code, 1, output)
  assert.match(output, /could not close the example: close failed \(injected\)/)
  assert.doesNotMatch(output, /^Node\.js v\d+/m, output)
})
