/**
 * nginx `auth_request` in front of an API, with examples/nginx/nginx.conf as
 * the configuration (ports and secret substituted): what the README shows is
 * what runs here. Needs the `nginx` binary (Debian: apt-get install nginx-light);
 * without it the test is skipped locally and fails on CI (CI=true).
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, request } from 'node:http'
import { createServer as createTcpServer } from 'node:net'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { findNginx, type PrivateNginx, startNginx } from './fixtures/nginx.ts'
import { auth, buildTestApp, CHROME_WINDOWS, eventually, openSession, revokeSession } from './helper.ts'

const FIREFOX_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'
const SECRET = `gw-${randomBytes(16).toString('hex')}`
const COOKIE = 'sa_session'

const NGINX = findNginx()
const INSTALL_HINT =
  'nginx is not installed: apt-get install nginx-light (Debian/Ubuntu), brew install nginx (macOS); .ci/run installs it on CI'
const skip = NGINX || process.env.CI === 'true' ? false : INSTALL_HINT

/** What the API behind nginx received. */
interface Received {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: string
}

/** A stand-in for the protected API: records every request and echoes its headers back. */
async function startApi(t: TestContext) {
  const received: Received[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const entry = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      }
      received.push(entry)
      res.writeHead(200, { 'content-type': 'application/json', 'x-from-api': 'yes' })
      res.end(JSON.stringify({ headers: req.headers, bodyLength: entry.body.length }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const address = server.address()
  if (!address || typeof address === 'string') throw new Error('no address')
  return {
    port: address.port,
    /** The requests that reached the API under this path. */
    at: (path: string) => received.filter((r) => r.url === path),
  }
}

/** True when this machine lets a socket bind `address` (all of 127/8 is loopback on Linux). */
async function canBind(address: string): Promise<boolean> {
  const server = createTcpServer()
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, address, resolve)
    })
    return true
  } catch {
    return false
  } finally {
    server.close()
  }
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/**
 * One request to nginx from `from` (the end user's address), on a fresh
 * connection, with exactly the headers given (no default User-Agent).
 */
function send(
  nginx: PrivateNginx,
  from: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: nginx.port,
        localAddress: from,
        path,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        )
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(options.body)
  })
}

async function getSession(app: FastifyInstance, id: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { id: string; status: string; ip: string | null; suspension_reason: string | null }
}

/** A path of its own for each check, so "never reached the API" is about this request only. */
const path = (label: string) => `/api/${label}/${randomBytes(4).toString('hex')}?q=1`

test('nginx auth_request in front of an API (examples/nginx/nginx.conf)', { skip }, async (t) => {
  if (!NGINX) assert.fail(`CI=true and ${INSTALL_HINT}`)

  // The end user's address differs from nginx's own (127.0.0.1) where the machine allows it.
  const CLIENT_IP = (await canBind('127.0.0.2')) ? '127.0.0.2' : '127.0.0.1'
  const { app } = await buildTestApp(t, {
    forwardAuthSecret: SECRET,
    trustProxy: '127.0.0.1',
    forwardAuthCookie: COOKIE,
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const servicePort = (app.server.address() as { port: number }).port
  const api = await startApi(t)
  const nginx = await startNginx({ servicePort, apiPort: api.port, secret: SECRET })
  t.after(() => nginx.stop())

  const open = (body: Record<string, unknown> = {}) =>
    openSession(app, { ip: CLIENT_IP, user_agent: CHROME_WINDOWS, ...body })
  const get = (url: string, headers: Record<string, string>) =>
    send(nginx, CLIENT_IP, url, { headers: { 'user-agent': CHROME_WINDOWS, ...headers } })
  const explain = (res: Reply) => `${res.status} ${res.body.slice(0, 300)}\n${nginx.output()}`

  await t.test(
    'an opaque token in Authorization reaches the API with the user and session headers',
    async () => {
      const { token, session } = await open({ user_id: 'alice' })
      const url = path('opaque')
      const res = await get(url, { authorization: `Bearer ${token}` })
      assert.equal(res.status, 200, explain(res))
      assert.equal(res.headers['x-from-api'], 'yes')
      const [seen, ...more] = api.at(url)
      assert.ok(seen, 'the API got the request')
      assert.equal(more.length, 0)
      assert.equal(seen.headers['x-auth-user-id'], 'alice')
      assert.equal(seen.headers['x-auth-session-id'], session.id)
      assert.equal(seen.headers.authorization, `Bearer ${token}`, 'the API still sees the token')
      assert.equal(seen.headers['user-agent'], CHROME_WINDOWS)
      assert.equal(
        seen.headers['x-forward-auth-secret'],
        undefined,
        'the gateway secret stays between nginx and the service',
      )
    },
  )

  await t.test('an access JWT is accepted the same way', async () => {
    const res0 = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: auth(),
      payload: { user_id: 'jwt-user', token_type: 'jwt', ip: CLIENT_IP, user_agent: CHROME_WINDOWS },
    })
    assert.equal(res0.statusCode, 201, res0.body)
    const opened = res0.json() as { access_token: string; session: { id: string } }
    const url = path('jwt')
    const res = await get(url, { authorization: `Bearer ${opened.access_token}` })
    assert.equal(res.status, 200, explain(res))
    const [seen] = api.at(url)
    assert.equal(seen?.headers['x-auth-user-id'], 'jwt-user')
    assert.equal(seen?.headers['x-auth-session-id'], opened.session.id)
  })

  await t.test("the devices widget's API through its one route: my sessions, with my address", async () => {
    const { token, session } = await open({ user_id: 'devices-user' })
    const res = await get('/auth/v1/me/sessions', { cookie: `${COOKIE}=${token}` })
    assert.equal(res.status, 200, explain(res))
    const mine = JSON.parse(res.body) as { sessions: Array<{ id: string; current: boolean; ip: string }> }
    assert.deepEqual(
      mine.sessions.map((s) => [s.id, s.current, s.ip]),
      [[session.id, true, CLIENT_IP]],
    )
    // The session is still active: the address judged was the end user's, not nginx's.
    assert.equal((await getSession(app, session.id)).status, 'active')
  })

  await t.test('the token in the FORWARD_AUTH_COOKIE cookie is accepted', async () => {
    const { token, session } = await open({ user_id: 'cookie-user' })
    const url = path('cookie')
    const res = await get(url, { cookie: `theme=dark; ${COOKIE}=${token}; other=1` })
    assert.equal(res.status, 200, explain(res))
    const [seen] = api.at(url)
    assert.equal(seen?.headers['x-auth-user-id'], 'cookie-user')
    assert.equal(seen?.headers['x-auth-session-id'], session.id)
  })

  await t.test('a POST body goes to the API whole (the check never gets it)', async () => {
    const { token } = await open({ user_id: 'poster' })
    const url = path('post')
    // Larger than nginx keeps in memory (written to client_body_temp_path) and than BODY_LIMIT_BYTES.
    const body = 'x'.repeat(200_000)
    const res = await send(nginx, CLIENT_IP, url, {
      method: 'POST',
      body,
      headers: {
        'user-agent': CHROME_WINDOWS,
        authorization: `Bearer ${token}`,
        'content-type': 'application/xml',
      },
    })
    assert.equal(res.status, 200, explain(res))
    const [seen] = api.at(url)
    assert.equal(seen?.method, 'POST')
    assert.equal(seen?.body.length, body.length)
    assert.equal(seen?.headers['x-auth-user-id'], 'poster')
  })

  await t.test('no token, an unknown token and a malformed one get 401 and never reach the API', async () => {
    const cases: Array<[string, Record<string, string>, string]> = [
      ['none', {}, 'Bearer'],
      ['unknown', { authorization: `Bearer sat_${randomBytes(32).toString('base64url')}` }, 'invalid_token'],
      ['malformed', { authorization: 'Bearer not-a-token' }, 'invalid_token'],
      [
        'unknown-cookie',
        { cookie: `${COOKIE}=sat_${randomBytes(32).toString('base64url')}` },
        'invalid_token',
      ],
    ]
    for (const [label, headers, challenge] of cases) {
      const url = path(label)
      const res = await get(url, headers)
      assert.equal(res.status, 401, `${label}: ${explain(res)}`)
      const www = String(res.headers['www-authenticate'])
      assert.ok(www.startsWith('Bearer'), `${label}: WWW-Authenticate ${www}`)
      if (challenge === 'invalid_token') assert.match(www, /error="invalid_token"/, label)
      else assert.equal(www, 'Bearer', label)
      assert.equal(api.at(url).length, 0, `${label} reached the API`)
    }
  })

  await t.test('a revoked session gets 401 and never reaches the API', async () => {
    const { token, session } = await open({ user_id: 'revoked-user' })
    const before = path('before-revoke')
    assert.equal((await get(before, { authorization: `Bearer ${token}` })).status, 200)
    assert.equal((await revokeSession(app, session.id)).statusCode, 200)
    const url = path('revoked')
    const res = await get(url, { authorization: `Bearer ${token}` })
    assert.equal(res.status, 401, explain(res))
    assert.equal(api.at(url).length, 0)
  })

  await t.test('another browser with the token gets 401 and suspends the session', async () => {
    const { token, session } = await open({ user_id: 'drift-user' })
    const ok = path('drift-ok')
    assert.equal((await get(ok, { authorization: `Bearer ${token}` })).status, 200)
    const url = path('drift')
    const res = await send(nginx, CLIENT_IP, url, {
      headers: { 'user-agent': FIREFOX_WINDOWS, authorization: `Bearer ${token}` },
    })
    assert.equal(res.status, 401, explain(res))
    assert.equal(api.at(url).length, 0)
    const stored = await getSession(app, session.id)
    assert.equal(stored.status, 'suspended')
    // The original browser is turned away too now.
    const after = path('drift-after')
    assert.equal((await get(after, { authorization: `Bearer ${token}` })).status, 401)
    assert.equal(api.at(after).length, 0)
  })

  await t.test("a client's own X-Auth-User-Id / X-Auth-Session-Id never reach the API", async () => {
    const { token, session } = await open({ user_id: 'honest-user' })
    const forged = { 'x-auth-user-id': 'admin', 'x-auth-session-id': '00000000-0000-4000-8000-000000000000' }
    const url = path('forged')
    const res = await get(url, { authorization: `Bearer ${token}`, ...forged })
    assert.equal(res.status, 200, explain(res))
    const [seen] = api.at(url)
    assert.equal(seen?.headers['x-auth-user-id'], 'honest-user', 'the real user, and only it')
    assert.equal(seen?.headers['x-auth-session-id'], session.id)
    assert.ok(!JSON.stringify(seen?.headers).includes('admin'))

    const denied = path('forged-denied')
    const res2 = await get(denied, forged)
    assert.equal(res2.status, 401, explain(res2))
    assert.equal(api.at(denied).length, 0)
  })

  await t.test("the end user's address from nginx is the one the service records", async () => {
    // IP moves are recorded (not suspended) for this session, so the recorded address shows.
    const { token, session } = await open({
      user_id: 'ip-user',
      ip: '203.0.113.7',
      binding: { ip: 'record' },
    })
    const url = path('ip')
    // The client's own forwarding headers are replaced by nginx with its TCP address.
    const res = await get(url, {
      authorization: `Bearer ${token}`,
      'x-forwarded-for': '198.51.100.9',
      'x-real-ip': '198.51.100.9',
    })
    assert.equal(res.status, 200, explain(res))
    const [seen] = api.at(url)
    assert.equal(seen?.headers['x-forwarded-for'], CLIENT_IP)
    assert.equal(seen?.headers['x-real-ip'], CLIENT_IP)
    let ip: string | null = null
    await eventually(
      async () => {
        ip = (await getSession(app, session.id)).ip
        return ip === CLIENT_IP
      },
      5000,
      `the session's IP is ${CLIENT_IP}`,
    ).catch((error: Error) => assert.fail(`${error.message} (it is ${ip})`))
  })

  await t.test(
    'a stolen token from another network gets 401, whatever X-Forwarded-For the thief sends',
    async () => {
      // Opened far away (the default IP policy suspends on a move); the thief claims that address.
      const { token, session } = await open({ user_id: 'victim', ip: '203.0.113.7' })
      const url = path('stolen')
      const res = await get(url, {
        authorization: `Bearer ${token}`,
        'x-forwarded-for': '203.0.113.7',
        'x-real-ip': '203.0.113.7',
      })
      assert.equal(res.status, 401, explain(res))
      assert.equal(api.at(url).length, 0)
      assert.equal((await getSession(app, session.id)).status, 'suspended')
    },
  )

  await t.test('nginx with a wrong gateway secret gets 403 and lets nothing through', async () => {
    const wrong = await startNginx({ servicePort, apiPort: api.port, secret: `${SECRET}-wrong` })
    try {
      const { token } = await open({ user_id: 'secret-user' })
      const url = path('wrong-secret')
      const res = await send(wrong, CLIENT_IP, url, {
        headers: { 'user-agent': CHROME_WINDOWS, authorization: `Bearer ${token}` },
      })
      assert.equal(res.status, 403, `${res.status} ${res.body}\n${wrong.output()}`)
      assert.equal(api.at(url).length, 0)
    } finally {
      await wrong.stop()
    }
  })
})
