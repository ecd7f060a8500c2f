import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { Config } from '../src/config.ts'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'
import {
  adminSql,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  eventually,
  introspect,
  openSession,
  revokeSession,
} from './helper.ts'

// /v1/forward-auth: what a gateway (nginx auth_request, Traefik forwardAuth,
// Envoy ext_authz, ...) calls before every request it serves. The gateway proves
// itself (a shared secret and/or its address); the end user's token comes as a
// Bearer header or a cookie; the answer is 200 + identity headers or 401.

const SECRET = 'gateway-secret-0123456789abcdef'
/** The address every session below is opened from (openSession's default) ... */
const HOME_IP = '203.0.113.7'
/** ... another address in its /24 (not drift) ... */
const SAME_NETWORK_IP = '203.0.113.50'
/** ... and one far away (drift). */
const FAR_IP = '198.51.100.1'
const FIREFOX_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
const SECOND = 1000

/** An app whose gateway is authenticated by the shared secret (and whatever `overrides` add). */
function gatewayApp(t: TestContext, overrides: Partial<Config> = {}) {
  return buildTestApp(t, { forwardAuthSecret: SECRET, ...overrides })
}

interface ForwardOptions {
  method?: (typeof METHODS)[number]
  /** The end user's token, sent as `Authorization: Bearer`. */
  token?: string
  /** The gateway's secret; `null` sends none. */
  secret?: string | null
  /** Extra headers; `'user-agent': undefined` sends no User-Agent at all. */
  headers?: Record<string, string | undefined>
  /** The TCP peer (the gateway, or a proxy in front of the service). */
  remoteAddress?: string
  payload?: InjectOptions['payload']
}

/** One forward-auth call as a gateway makes it. */
function forward(app: FastifyInstance, options: ForwardOptions = {}) {
  const { method = 'GET', token, secret = SECRET, headers = {}, remoteAddress, payload } = options
  return app.inject({
    method,
    url: '/v1/forward-auth',
    headers: {
      'user-agent': CHROME_WINDOWS,
      ...(secret === null ? {} : { 'x-forward-auth-secret': secret }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...headers,
    },
    ...(remoteAddress ? { remoteAddress } : {}),
    ...(payload === undefined ? {} : { payload }),
  })
}

function assertAllowed(res: LightMyRequestResponse, session: { id: string; user_id: string }, why = '') {
  assert.equal(res.statusCode, 200, `${why} ${res.body}`)
  assert.equal(res.body, '', why)
  assert.equal(res.headers['x-auth-user-id'], session.user_id, why)
  assert.equal(res.headers['x-auth-session-id'], session.id, why)
}

/**
 * 401, no body, a Bearer challenge (saying invalid_token when a token was presented), no identity.
 * `tokenPresented` undefined: a borderline case (an empty token) where either challenge is fine.
 */
function assertDenied(res: LightMyRequestResponse, tokenPresented: boolean | undefined, why = '') {
  assert.equal(res.statusCode, 401, `${why} ${res.body}`)
  assert.equal(res.body, '', why)
  const challenge = String(res.headers['www-authenticate'] ?? '')
  assert.match(challenge, /^Bearer\b/, `${why}: www-authenticate ${challenge}`)
  if (tokenPresented === true) {
    assert.match(challenge, /error="invalid_token"/, `${why}: www-authenticate ${challenge}`)
  } else if (tokenPresented === false)
    assert.doesNotMatch(challenge, /error=/, `${why}: www-authenticate ${challenge}`)
  assert.equal(res.headers['x-auth-user-id'], undefined, why)
  assert.equal(res.headers['x-auth-session-id'], undefined, why)
}

function assertGatewayRefused(res: LightMyRequestResponse, why = '', method = 'GET') {
  assert.equal(res.statusCode, 403, `${why} ${res.body}`)
  // A HEAD answer has no body to carry the error.
  if (method !== 'HEAD') assert.equal(res.json().error.code, 'GATEWAY_NOT_ALLOWED', why)
  assert.equal(res.headers['x-auth-user-id'], undefined, why)
}

async function sessionStatus(app: FastifyInstance, id: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().status as string
}

async function openJwt(app: FastifyInstance, body: Record<string, unknown> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', token_type: 'jwt', ip: HOME_IP, user_agent: CHROME_WINDOWS, ...body },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as {
    access_token: string
    refresh_token: string
    session: { id: string; user_id: string }
  }
}

// ---------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------

test('shared secret: the right one passes, a wrong or missing one is 403 GATEWAY_NOT_ALLOWED', async (t) => {
  const { app } = await gatewayApp(t)
  const { token, session } = await openSession(app)

  assertAllowed(await forward(app, { token }), session)
  // The gateway check comes first: without it, not even "no token" is said.
  assertDenied(await forward(app), false)

  for (const [why, secret] of [
    ['missing', null],
    ['wrong', 'gateway-secret-0123456789abcdeX'],
    ['a prefix', SECRET.slice(0, -1)],
    ['longer', `${SECRET}x`],
    ['empty', ''],
  ] as const) {
    assertGatewayRefused(await forward(app, { token, secret }), `${why} secret with a token`)
    assertGatewayRefused(await forward(app, { secret }), `${why} secret without a token`)
  }
  // The secret goes in its header, nowhere else.
  assertGatewayRefused(
    await forward(app, { token, secret: null, headers: { 'x-other-header': SECRET } }),
    'secret in another header',
  )
})

test('the secret header name is configurable', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthSecretHeader: 'x-gateway-key' })
  const { token, session } = await openSession(app)
  assertAllowed(await forward(app, { token, secret: null, headers: { 'x-gateway-key': SECRET } }), session)
  // The default header name means nothing now.
  assertGatewayRefused(await forward(app, { token }), 'default header name')
})

test('allowlist: the TCP peer must be a listed address or in a listed CIDR', async (t) => {
  const { app } = await buildTestApp(t, { forwardAuthAllowedIps: '192.0.2.10, 10.20.0.0/16,2001:db8:1::/48' })
  const { token, session } = await openSession(app)

  for (const peer of ['192.0.2.10', '10.20.0.1', '10.20.255.254', '2001:db8:1::5', '2001:db8:1:ffff::1']) {
    assertAllowed(await forward(app, { token, secret: null, remoteAddress: peer }), session, peer)
    assertDenied(await forward(app, { secret: null, remoteAddress: peer }), false, peer)
  }
  for (const peer of ['192.0.2.11', '10.21.0.1', '10.2.0.1', '127.0.0.1', '2001:db8:2::1']) {
    assertGatewayRefused(await forward(app, { token, secret: null, remoteAddress: peer }), peer)
    // A secret header is no way around the allowlist when no secret is configured.
    assertGatewayRefused(await forward(app, { token, remoteAddress: peer }), `${peer} with a header`)
  }
  // The allowlist is about the TCP peer: a forwarded address proves nothing.
  assertGatewayRefused(
    await forward(app, {
      token,
      secret: null,
      remoteAddress: '127.0.0.1',
      headers: { 'x-forwarded-for': '192.0.2.10', 'x-real-ip': '192.0.2.10' },
    }),
    'a forwarded allowlisted address',
  )
})

test('secret and allowlist both configured: both are required', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthAllowedIps: '10.0.0.0/8' })
  const { token, session } = await openSession(app)
  assertAllowed(await forward(app, { token, remoteAddress: '10.0.0.5' }), session)
  assertGatewayRefused(await forward(app, { token, remoteAddress: '192.0.2.5' }), 'right secret, wrong peer')
  assertGatewayRefused(
    await forward(app, { token, remoteAddress: '10.0.0.5', secret: 'wrong-secret-0123456789abcdef' }),
    'right peer, wrong secret',
  )
  assertGatewayRefused(
    await forward(app, { token, remoteAddress: '10.0.0.5', secret: null }),
    'right peer, no secret',
  )
})

test('neither secret nor allowlist configured: forward-auth is off, every call is 403', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  for (const remoteAddress of ['127.0.0.1', '10.0.0.5']) {
    assertGatewayRefused(await forward(app, { token, remoteAddress }), remoteAddress)
    assertGatewayRefused(await forward(app, { remoteAddress }), `${remoteAddress} without a token`)
  }
  for (const method of METHODS) {
    const res = await forward(app, { method, token })
    assert.equal(res.statusCode, 403, method)
  }
})

test('a refused gateway is not told which credential is expected; the log says why', async (t) => {
  const messages = new Set<string>()
  const refused = async (overrides: Partial<Config>, options: ForwardOptions, why: string) => {
    const { app, logs } = await buildTestApp(t, overrides)
    const res = await forward(app, options)
    assertGatewayRefused(res, why)
    const { message } = res.json().error
    messages.add(message)
    for (const hint of [
      /x-forward-auth-secret/i,
      /x-gateway-key/i,
      /secret/i,
      /header/i,
      /FORWARD_AUTH/,
      /address|ALLOWED_IPS/i,
    ]) {
      assert.doesNotMatch(message, hint, `${why}: ${message}`)
    }
    // The operator finds the reason in the log (never the secret itself).
    await eventually(() => logs.text().includes('not an allowed gateway'), 2000, `${why}: a log line`)
    assert.ok(!logs.text().includes(SECRET), why)
    return logs.text()
  }
  const log = await refused(
    { forwardAuthSecret: SECRET, forwardAuthSecretHeader: 'x-gateway-key' },
    {},
    'no secret',
  )
  assert.match(log, /x-gateway-key/)
  await refused({ forwardAuthSecret: SECRET }, { secret: 'wrong-secret-0123456789abcdef' }, 'wrong secret')
  await refused({ forwardAuthAllowedIps: '10.0.0.0/8' }, { remoteAddress: '192.0.2.5' }, 'address')
  await refused({}, {}, 'forward-auth off')
  // One message for every reason: the answer tells a prober nothing.
  assert.equal(messages.size, 1, [...messages].join(' | '))
})

// ---------------------------------------------------------------------------
// The end user's token
// ---------------------------------------------------------------------------

test('the token comes from the Bearer header or, when configured, from a cookie; Bearer wins', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthCookie: 'sa_session' })
  const alice = await openSession(app)
  const bob = await openSession(app, { user_id: 'bob' })
  const cookie = (token: string) => ({ cookie: `theme=dark; sa_session=${token}; other=1` })

  assertAllowed(await forward(app, { token: alice.token }), alice.session, 'bearer')
  assertAllowed(await forward(app, { headers: cookie(bob.token) }), bob.session, 'cookie')
  assertAllowed(await forward(app, { headers: { cookie: `sa_session=${bob.token}` } }), bob.session, 'alone')

  // Both: the Authorization header is the one that counts.
  assertAllowed(
    await forward(app, { token: alice.token, headers: cookie(bob.token) }),
    alice.session,
    'bearer over cookie',
  )
  assertDenied(
    await forward(app, { token: 'sat_not-a-real-token', headers: cookie(bob.token) }),
    true,
    'a bad bearer is not rescued by a good cookie',
  )

  // Another cookie name, or an empty cookie, is no token.
  assertDenied(await forward(app, { headers: { cookie: `session=${bob.token}` } }), false, 'other cookie')
  assertDenied(await forward(app, { headers: { cookie: 'sa_session=' } }), undefined, 'empty cookie')
  // A bad token in the cookie is a presented token.
  assertDenied(await forward(app, { headers: cookie('sat_nope') }), true, 'bad cookie')

  // Revoking the cookie's session denies it at once.
  await revokeSession(app, bob.session.id)
  assertDenied(await forward(app, { headers: cookie(bob.token) }), true, 'revoked cookie')
})

test('without a configured cookie, only the Authorization header carries a token', async (t) => {
  const { app } = await gatewayApp(t)
  const { token, session } = await openSession(app)
  assertAllowed(await forward(app, { token }), session)
  for (const name of ['sa_session', 'session', 'token', 'access_token']) {
    assertDenied(await forward(app, { headers: { cookie: `${name}=${token}` } }), false, name)
  }
  // Authorization must be a Bearer credential.
  assertDenied(await forward(app, { headers: { authorization: token } }), undefined, 'bare token')
  assertDenied(
    await forward(app, {
      headers: { authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}` },
    }),
    undefined,
    'basic',
  )
})

test('every method a gateway may forward is answered the same way', async (t) => {
  const { app } = await gatewayApp(t)
  const { token, session } = await openSession(app)
  for (const method of METHODS) {
    assertAllowed(await forward(app, { method, token }), session, method)
    assertDenied(await forward(app, { method }), false, `${method} without a token`)
    assertDenied(await forward(app, { method, token: 'sat_unknown' }), true, `${method} unknown token`)
    assertGatewayRefused(await forward(app, { method, token, secret: 'nope-nope-nope-nope' }), method, method)
  }
})

test('the request body is ignored, whatever its size or content type', async (t) => {
  const { app } = await gatewayApp(t)
  const { token, session } = await openSession(app)
  const megabyte = 'x'.repeat(1024 * 1024)
  const bodies: Array<[string, string | Buffer, string]> = [
    ['1 MB of text', megabyte, 'text/plain'],
    ['invalid JSON', '{"token": nope', 'application/json'],
    ['JSON that is not an object', '"just a string"', 'application/json'],
    ['a 1 MB JSON document', JSON.stringify({ data: megabyte }), 'application/json'],
    ['a form', 'a=1&b=2', 'application/x-www-form-urlencoded'],
    ['binary', Buffer.alloc(2 * 1024 * 1024, 0xff), 'application/octet-stream'],
    ['invalid UTF-8 as JSON', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 'application/json'],
    [
      'multipart',
      '--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--',
      'multipart/form-data; boundary=b',
    ],
    ['an unheard-of type', 'hello', 'application/x-unheard-of'],
  ]
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const) {
    for (const [what, payload, type] of bodies) {
      const why = `${method} ${what}`
      const headers = { 'content-type': type }
      assertAllowed(await forward(app, { method, token, headers, payload }), session, why)
      assertDenied(await forward(app, { method, headers, payload }), false, `${why}, no token`)
      assertGatewayRefused(await forward(app, { method, token, headers, payload, secret: null }), why)
    }
  }
  // A body with no content type at all.
  assertAllowed(await forward(app, { method: 'POST', token, payload: megabyte }), session, 'untyped')
})

test('allowed: 200 with no body and the identity headers; the metadata listed in FORWARD_AUTH_METADATA', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthMetadata: 'tenant,plan=X-Plan,seats,beta,missing' })
  const { token, session } = await openSession(app, {
    metadata: { tenant: 't1', plan: { tier: 'pro', yearly: true }, seats: 5, beta: false, secret: 'hidden' },
  })
  const res = await forward(app, { token })
  assertAllowed(res, session)
  assert.equal(res.headers['x-auth-meta-tenant'], 't1')
  assert.equal(res.headers['x-plan'], '{"tier":"pro","yearly":true}')
  assert.equal(res.headers['x-auth-meta-plan'], undefined)
  assert.equal(res.headers['x-auth-meta-seats'], '5')
  assert.equal(res.headers['x-auth-meta-beta'], 'false')
  // A listed key the session lacks sends no header; an unlisted one is never sent.
  assert.equal(res.headers['x-auth-meta-missing'], undefined)
  assert.equal(res.headers['x-auth-meta-secret'], undefined)
  assert.ok(!JSON.stringify(res.headers).includes('hidden'), 'an unlisted metadata value leaked')
})

test('non-ASCII user ids and metadata are percent-encoded', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthMetadata: 'tenant,plan=X-Plan' })
  const { token, session } = await openSession(app, {
    user_id: 'zoë',
    metadata: { tenant: 'Zürich AG', plan: { name: 'Prämie' } },
  })
  const res = await forward(app, { token })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.headers['x-auth-user-id'], 'zo%C3%AB')
  assert.equal(decodeURIComponent(String(res.headers['x-auth-user-id'])), 'zoë')
  assert.equal(res.headers['x-auth-session-id'], session.id)
  assert.equal(res.headers['x-auth-meta-tenant'], encodeURIComponent('Zürich AG'))
  assert.equal(decodeURIComponent(String(res.headers['x-plan'])), '{"name":"Prämie"}')
  assert.doesNotMatch(String(res.headers['x-plan']), /[^\x20-\x7e]/)

  // A value that is printable ASCII passes as it is.
  const ascii = await openSession(app, { user_id: 'user@example.com', metadata: { tenant: 'a b/c' } })
  const plain = await forward(app, { token: ascii.token })
  assert.equal(plain.headers['x-auth-user-id'], 'user@example.com')
  assert.equal(plain.headers['x-auth-meta-tenant'], 'a b/c')

  // A control character (header injection) never reaches a header raw.
  const evil = await openSession(app, { user_id: 'eve', metadata: { tenant: 'x\r\nx-auth-user-id: admin' } })
  const injected = await forward(app, { token: evil.token })
  assert.equal(injected.statusCode, 200, injected.body)
  assert.equal(injected.headers['x-auth-user-id'], 'eve')
  assert.equal(injected.headers['x-auth-meta-tenant'], encodeURIComponent('x\r\nx-auth-user-id: admin'))
})

test('identity headers are unambiguous: `%` is encoded too, so no two user ids give the same header', async (t) => {
  const { app } = await gatewayApp(t, { forwardAuthMetadata: 'tenant' })
  const ids = [
    'alice',
    '%61lice',
    '%2561lice',
    'a%',
    ' alice',
    'alice ',
    'a+b',
    'a b',
    'user@example.com',
    'zoë',
    'zo%C3%AB',
    'x y',
    'x%20y',
  ]
  const headers = new Map<string, string>()
  for (const id of ids) {
    const { token } = await openSession(app, { user_id: id, metadata: { tenant: id } })
    const res = await forward(app, { token })
    assert.equal(res.statusCode, 200, `${JSON.stringify(id)}: ${res.body}`)
    const header = String(res.headers['x-auth-user-id'])
    // An upstream that decodes gets the id back exactly, never another one.
    assert.equal(decodeURIComponent(header), id, JSON.stringify(id))
    assert.equal(res.headers['x-auth-meta-tenant'], header, `metadata of ${JSON.stringify(id)}`)
    const clash = headers.get(header)
    assert.equal(clash, undefined, `${JSON.stringify(id)} and ${JSON.stringify(clash)} both give ${header}`)
    headers.set(header, id)
  }
  // Plain ids stay readable; only what needs it is encoded.
  assert.equal(headers.get('alice'), 'alice')
  assert.equal(headers.get('user@example.com'), 'user@example.com')
  assert.equal(headers.get('a b'), 'a b')
  assert.equal(headers.get('%2561lice'), '%61lice')
  assert.equal(headers.get('%20alice'), ' alice')
  assert.equal(headers.get('a%2Bb'), 'a+b')
})

test('a metadata key that makes no valid header name is refused at start, never a 500 per request', async (t) => {
  // FORWARD_AUTH_METADATA accepts `:` in a key; `x-auth-meta-org:id` is no HTTP header name.
  let built: Awaited<ReturnType<typeof gatewayApp>>
  try {
    built = await gatewayApp(t, { forwardAuthMetadata: 'org:id,tenant' })
  } catch (err) {
    assert.match(String(err), /FORWARD_AUTH_METADATA|forwardAuthMetadata/)
    return
  }
  // Accepted: then it must work (the key under some valid header name, or skipped).
  const { app } = built
  const { token, session } = await openSession(app, { metadata: { 'org:id': 'o1', tenant: 't1' } })
  const res = await forward(app, { token })
  assertAllowed(res, session)
  assert.equal(res.headers['x-auth-meta-tenant'], 't1')
})

test('an identity header that repeats another, or frames the answer, is refused at start', async (t) => {
  for (const [setting, overrides] of [
    ['FORWARD_AUTH_METADATA (plan)', { forwardAuthMetadata: 'plan=X-Auth-User-Id' }],
    ['FORWARD_AUTH_METADATA (team)', { forwardAuthMetadata: 'plan,team=x-auth-meta-plan' }],
    ['FORWARD_AUTH_METADATA (size)', { forwardAuthMetadata: 'size=content-length' }],
    ['FORWARD_AUTH_METADATA (trace)', { forwardAuthMetadata: 'trace=x-request-id' }],
    ['FORWARD_AUTH_SESSION_HEADER', { forwardAuthSessionHeader: 'x-auth-user-id' }],
    ['FORWARD_AUTH_USER_HEADER', { forwardAuthUserHeader: 'Cache-Control' }],
  ] as Array<[string, Partial<Config>]>) {
    await assert.rejects(gatewayApp(t, overrides), (err: Error) => {
      assert.equal(err.name, 'ConfigError')
      assert.ok(err.message.includes(setting), err.message)
      return true
    })
  }
})

test('the identity header names are configurable', async (t) => {
  const { app } = await gatewayApp(t, {
    forwardAuthUserHeader: 'x-user',
    forwardAuthSessionHeader: 'x-session',
  })
  const { token, session } = await openSession(app)
  const res = await forward(app, { token })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.headers['x-user'], 'alice')
  assert.equal(res.headers['x-session'], session.id)
  assert.equal(res.headers['x-auth-user-id'], undefined)
  assert.equal(res.headers['x-auth-session-id'], undefined)
})

test('denied: no token, unknown, malformed, revoked, suspended, expired', async (t) => {
  const { app, clock } = await gatewayApp(t, { idleTimeoutSeconds: 600 })
  assertDenied(await forward(app), false, 'no token')
  assertDenied(await forward(app, { headers: { authorization: 'Bearer ' } }), undefined, 'empty bearer')
  assertDenied(await forward(app, { token: `sat_${'A'.repeat(43)}` }), true, 'unknown')
  assertDenied(await forward(app, { token: 'garbage' }), true, 'malformed')
  assertDenied(await forward(app, { token: 'a.b.c' }), true, 'malformed JWT')

  const revoked = await openSession(app)
  assertAllowed(await forward(app, { token: revoked.token }), revoked.session)
  await revokeSession(app, revoked.session.id)
  assertDenied(await forward(app, { token: revoked.token }), true, 'revoked')

  const suspended = await openSession(app)
  const suspend = await app.inject({
    method: 'POST',
    url: `/v1/sessions/${suspended.session.id}/suspend`,
    headers: auth(),
    payload: {},
  })
  assert.equal(suspend.statusCode, 200, suspend.body)
  assertDenied(await forward(app, { token: suspended.token }), true, 'suspended')

  const idle = await openSession(app)
  clock.advance(601 * SECOND)
  assertDenied(await forward(app, { token: idle.token }), true, 'idle-expired')
})

test('an access JWT works as the Bearer token until it expires; a refresh token is no access token', async (t) => {
  const { app, clock, config } = await gatewayApp(t)
  const jwt = await openJwt(app)
  assertAllowed(await forward(app, { token: jwt.access_token }), jwt.session, 'access JWT')
  assertDenied(await forward(app, { token: jwt.refresh_token }), true, 'refresh token')

  // Past its lifetime and the tolerated skew the JWT is refused, though the session lives on.
  clock.advance((config.accessTokenTtlSeconds + config.jwtClockSkewSeconds + 1) * SECOND)
  assertDenied(await forward(app, { token: jwt.access_token }), true, 'expired JWT')
  assert.equal(await sessionStatus(app, jwt.session.id), 'active')

  // A revoked JWT session is denied at once.
  const other = await openJwt(app)
  assertAllowed(await forward(app, { token: other.access_token }), other.session)
  await revokeSession(app, other.session.id)
  assertDenied(await forward(app, { token: other.access_token }), true, 'revoked JWT session')
  // A live session's JWT with another JWT's signature.
  const fresh = await openJwt(app)
  assertAllowed(await forward(app, { token: fresh.access_token }), fresh.session)
  const [header, payload] = fresh.access_token.split('.')
  const [, , signature] = other.access_token.split('.')
  assertDenied(await forward(app, { token: `${header}.${payload}.${signature}` }), true, 'forged JWT')
})

// ---------------------------------------------------------------------------
// The end user's client: trusted proxies and drift
// ---------------------------------------------------------------------------

test('from a trusted proxy, X-Forwarded-For is the user IP and drift is judged against it', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  const proxy = '10.1.2.3'
  const { token, session } = await openSession(app)

  const near = await forward(app, {
    token,
    remoteAddress: proxy,
    headers: { 'x-forwarded-for': SAME_NETWORK_IP },
  })
  assertAllowed(near, session, 'same /24')
  assert.equal(await sessionStatus(app, session.id), 'active')

  // A chain: the trusted hops are skipped, the client is the first untrusted one from the right.
  assertAllowed(
    await forward(app, {
      token,
      remoteAddress: proxy,
      headers: { 'x-forwarded-for': `${SAME_NETWORK_IP}, 10.9.9.9` },
    }),
    session,
    'chain through another trusted proxy',
  )
  assert.equal(await sessionStatus(app, session.id), 'active')

  const far = await forward(app, { token, remoteAddress: proxy, headers: { 'x-forwarded-for': FAR_IP } })
  assertDenied(far, true, 'far IP')
  assert.equal(await sessionStatus(app, session.id), 'suspended')
  // Suspended stays suspended, from home too.
  assertDenied(
    await forward(app, { token, remoteAddress: proxy, headers: { 'x-forwarded-for': HOME_IP } }),
    true,
    'back home',
  )
})

test('a user cannot hide a far address behind a forged X-Forwarded-For entry', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  const { token, session } = await openSession(app)
  // The user sent "X-Forwarded-For: 203.0.113.50" themselves; the trusted proxy appended the real peer.
  const res = await forward(app, {
    token,
    remoteAddress: '10.1.2.3',
    headers: { 'x-forwarded-for': `${SAME_NETWORK_IP}, ${FAR_IP}` },
  })
  assertDenied(res, true, 'the real client is the far one')
  assert.equal(await sessionStatus(app, session.id), 'suspended')
})

test('from an untrusted peer X-Forwarded-For and X-Real-IP are ignored, and so is the peer address', async (t) => {
  for (const trustProxy of [undefined, '10.0.0.0/8']) {
    await t.test(`trustProxy ${trustProxy ?? 'unset'}`, async (t) => {
      const { app } = await gatewayApp(t, trustProxy ? { trustProxy } : {})
      const { token, session } = await openSession(app)
      for (const remoteAddress of ['192.0.2.99', FAR_IP, ...(trustProxy ? [] : ['10.1.2.3'])]) {
        const variants: Array<Record<string, string>> = [
          { 'x-forwarded-for': FAR_IP },
          { 'x-real-ip': FAR_IP },
          {},
        ]
        for (const headers of variants) {
          const why = `${remoteAddress} ${JSON.stringify(headers)}`
          assertAllowed(await forward(app, { token, remoteAddress, headers }), session, why)
        }
      }
      assert.equal(await sessionStatus(app, session.id), 'active')
    })
  }
})

test("a forwarded hop that is a trusted proxy's own address is not taken for the user IP", async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  for (const xff of [
    // Only trusted hops: the address found is a proxy's own, never the user's; it is not checked.
    '10.9.9.9',
    '10.9.9.9, 10.8.8.8',
    '10.9.9.9:8080',
    // An address with a port (some proxies append one): the user is still in the bound /24.
    `${SAME_NETWORK_IP}:1234`,
    `[::ffff:${SAME_NETWORK_IP}]:1234`,
  ]) {
    const { token, session } = await openSession(app)
    const res = await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-forwarded-for': xff } })
    assertAllowed(res, session, `X-Forwarded-For ${xff}`)
    assert.equal(await sessionStatus(app, session.id), 'active', `X-Forwarded-For ${xff}`)
  }
  const { token, session } = await openSession(app)
  assertAllowed(
    await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-real-ip': '10.9.9.9' } }),
    session,
    'X-Real-IP of a proxy',
  )
  assert.equal(await sessionStatus(app, session.id), 'active')
})

// What ipaddr.js (and inet_aton) would read as an address but Postgres inet refuses, and what is no address at all.
const NOT_ADDRESSES = [
  'garbage',
  'unknown',
  'unknown, 10.9.9.9',
  '127.1',
  '0x7f.0.0.1',
  '2130706433',
  '1.2.3',
  '010.0.0.1',
  'fe80::1%eth0',
  '[fe80::1%eth0]:443',
]

test('from a trusted proxy, a forwarded value that is no address is a missing address: drift for a bound session', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  for (const xff of NOT_ADDRESSES) {
    const { token, session } = await openSession(app)
    const res = await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-forwarded-for': xff } })
    assertDenied(res, true, `X-Forwarded-For ${xff}`)
    const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    assert.equal(stored.json().status, 'suspended', `X-Forwarded-For ${xff}`)
    assert.equal(stored.json().suspension_reason, 'ip_drift', `X-Forwarded-For ${xff}`)
  }
  for (const real of ['garbage', '127.1', 'fe80::1%eth0']) {
    const { token, session } = await openSession(app)
    const res = await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-real-ip': real } })
    assertDenied(res, true, `X-Real-IP ${real}`)
    assert.equal(await sessionStatus(app, session.id), 'suspended', `X-Real-IP ${real}`)
  }
})

test('a forwarded value that is no address is never stored: the bookkeeping of every session is written', async (t) => {
  // A session opened without an address has none to drift from: these uses are allowed, and must
  // neither poison the write-behind batch (Postgres inet refuses `127.1` and zone ids) nor be stored.
  const { app, clock, config } = await gatewayApp(t, { trustProxy: '10.0.0.0/8', writeBehindIntervalMs: 20 })
  const sql = adminSql()
  t.after(() => sql.end())
  const unbound = await openSession(app, { ip: undefined })
  const normal = await openSession(app, { user_id: 'bob' })
  clock.advance(SECOND)
  const usedAt = clock.now()
  for (const xff of NOT_ADDRESSES) {
    const res = await forward(app, {
      token: unbound.token,
      remoteAddress: '10.1.2.3',
      headers: { 'x-forwarded-for': xff },
    })
    assertAllowed(res, unbound.session, `X-Forwarded-For ${xff}`)
  }
  assertAllowed(
    await forward(app, {
      token: normal.token,
      remoteAddress: '10.1.2.3',
      headers: { 'x-forwarded-for': SAME_NETWORK_IP },
    }),
    normal.session,
  )
  const row = async (id: string) => {
    const [found] = await sql`
      select host(ip) as ip, last_seen_at from ${sql(config.dbSchema)}.sessions where id = ${id}`
    return found as { ip: string | null; last_seen_at: Date }
  }
  await eventually(
    async () =>
      (await row(unbound.session.id)).last_seen_at.getTime() === usedAt &&
      (await row(normal.session.id)).last_seen_at.getTime() === usedAt,
    5000,
    'both uses are written',
  )
  const alice = await row(unbound.session.id)
  const bob = await row(normal.session.id)
  assert.equal(alice?.ip, null, 'no address was stored for the session used without one')
  assert.equal(bob?.ip, SAME_NETWORK_IP)
  assert.equal(await sessionStatus(app, unbound.session.id), 'active')
})

test('from a trusted proxy without X-Forwarded-For, X-Real-IP is the user IP', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  const { token, session } = await openSession(app)
  assertAllowed(
    await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-real-ip': SAME_NETWORK_IP } }),
    session,
  )
  assert.equal(await sessionStatus(app, session.id), 'active')
  assertDenied(
    await forward(app, { token, remoteAddress: '10.1.2.3', headers: { 'x-real-ip': FAR_IP } }),
    true,
    'far X-Real-IP',
  )
  assert.equal(await sessionStatus(app, session.id), 'suspended')
})

test('a trusted proxy without any forwarded address: the address is missing, never the proxy address', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8,198.51.100.0/24' })
  // Bound to an address: a trusted proxy always forwards one, so none is drift (IP_DRIFT_POLICY suspend).
  for (const remoteAddress of [FAR_IP, '10.1.2.3']) {
    const { token, session } = await openSession(app)
    assertDenied(await forward(app, { token, remoteAddress }), true, remoteAddress)
    const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    assert.equal(stored.json().status, 'suspended', remoteAddress)
    assert.equal(stored.json().suspension_reason, 'ip_drift', remoteAddress)
  }
  // Opened without an address: nothing to check.
  const unbound = await openSession(app, { ip: undefined })
  assertAllowed(await forward(app, { token: unbound.token, remoteAddress: '10.1.2.3' }), unbound.session)
  // Under `record` there is no client to rebind to: allowed, nothing recorded.
  const recorded = await openSession(app, { binding: { ip: 'record' } })
  assertAllowed(await forward(app, { token: recorded.token, remoteAddress: '10.1.2.3' }), recorded.session)
  assert.equal(await sessionStatus(app, recorded.session.id), 'active')
  // Not behind a trusted proxy, the address is never checked (the peer is the gateway itself).
  const direct = await openSession(app)
  assertAllowed(await forward(app, { token: direct.token, remoteAddress: '192.0.2.99' }), direct.session)
  assert.equal(await sessionStatus(app, direct.session.id), 'active')
})

test('User-Agent drift suspends the session', async (t) => {
  const { app } = await gatewayApp(t)
  const { token, session } = await openSession(app)
  assertAllowed(await forward(app, { token, headers: { 'user-agent': CHROME_WINDOWS } }), session)
  assertDenied(await forward(app, { token, headers: { 'user-agent': FIREFOX_WINDOWS } }), true, 'Firefox')
  assert.equal(await sessionStatus(app, session.id), 'suspended')
  assertDenied(await forward(app, { token, headers: { 'user-agent': CHROME_WINDOWS } }), true, 'Chrome again')
  // The same verdict for every caller: introspection agrees.
  assert.equal((await introspect(app, token)).active, false)
})

const CHROME_121_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36'

test('no User-Agent at all, for a session bound to a browser, is drift (suspended by default)', async (t) => {
  const { app } = await gatewayApp(t)
  for (const [why, userAgent] of [
    ['no User-Agent header', undefined],
    ['an empty User-Agent', ''],
  ] as const) {
    const { token, session } = await openSession(app)
    assertDenied(await forward(app, { token, headers: { 'user-agent': userAgent } }), true, why)
    const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    assert.equal(stored.json().status, 'suspended', why)
    assert.equal(stored.json().suspension_reason, 'user_agent_drift', why)
    assertDenied(await forward(app, { token }), true, `${why}, then the right browser`)
  }
  const res = await app.inject({
    method: 'GET',
    url: '/v1/users/alice/events?type=session.suspended',
    headers: auth(),
  })
  const [event] = res.json().events
  assert.deepEqual(event.data.dimensions, ['user_agent'])
  assert.equal(event.data.current.user_agent, null, 'the event shows the User-Agent as missing')
  assert.equal(event.data.previous.user_agent, CHROME_WINDOWS)

  // Opened without a User-Agent: nothing to check.
  const unbound = await openSession(app, { user_agent: undefined })
  assertAllowed(
    await forward(app, { token: unbound.token, headers: { 'user-agent': undefined } }),
    unbound.session,
  )
  // Under `record` (or `ignore`) a missing User-Agent changes nothing.
  for (const policy of ['record', 'ignore']) {
    const { token, session } = await openSession(app, { binding: { user_agent: policy } })
    assertAllowed(await forward(app, { token, headers: { 'user-agent': undefined } }), session, policy)
    const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    assert.equal(stored.json().status, 'active', policy)
    assert.equal(stored.json().user_agent, CHROME_WINDOWS, policy)
  }
  // /v1/sessions/introspect is unchanged: a caller passes user_agent only when it has one.
  const api = await openSession(app)
  assert.equal((await introspect(app, api.token, { ip: HOME_IP })).active, true)
})

test('a User-Agent longer than the API accepts is cut to 1,024 characters before it is judged or stored', async (t) => {
  const { app } = await gatewayApp(t)
  const padding = ` ${'x'.repeat(15 * 1024)}`
  // A browser update followed, and a new browser recorded: what is stored is capped like the API's user_agent.
  const updated = await openSession(app)
  assertAllowed(
    await forward(app, { token: updated.token, headers: { 'user-agent': CHROME_121_WINDOWS + padding } }),
    updated.session,
  )
  const recorded = await openSession(app, { binding: { user_agent: 'record' } })
  assertAllowed(
    await forward(app, { token: recorded.token, headers: { 'user-agent': FIREFOX_WINDOWS + padding } }),
    recorded.session,
  )
  for (const [session, expected] of [
    [updated.session, CHROME_121_WINDOWS],
    [recorded.session, FIREFOX_WINDOWS],
  ] as const) {
    const stored = (
      await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
    ).json()
    assert.equal(stored.status, 'active')
    assert.equal(stored.user_agent.length, 1024)
    assert.ok(stored.user_agent.startsWith(expected), stored.user_agent.slice(0, 120))
    // The same long User-Agent again is the bound one, not another client.
    const again = await forward(app, {
      token: session === updated.session ? updated.token : recorded.token,
      headers: { 'user-agent': expected + padding },
    })
    assertAllowed(again, session)
  }
})

test('a client alternating two browser versions rewrites the session at most once, not once per request', async (t) => {
  // The interval does not bound it here (the clock moves on between requests): only moving forward does.
  const { app, clock, config } = await gatewayApp(t, { writeBehindIntervalMs: 10 })
  const sql = adminSql()
  t.after(() => sql.end())
  const schema = sql(config.dbSchema)
  await sql`create table ${schema}.ua_writes (user_agent text)`
  await sql.unsafe(`
    create function "${config.dbSchema}".count_ua_write() returns trigger language plpgsql as $$
    begin insert into "${config.dbSchema}".ua_writes values (new.user_agent); return new; end $$`)
  await sql`
    create trigger count_ua_write after update on ${schema}.sessions for each row
    when (old.user_agent is distinct from new.user_agent) execute function ${schema}.count_ua_write()`

  const { token, session } = await openSession(app)
  for (let i = 0; i < 200; i++) {
    for (const userAgent of [CHROME_121_WINDOWS, CHROME_WINDOWS]) {
      clock.advance(SECOND)
      assertAllowed(
        await forward(app, { token, headers: { 'user-agent': userAgent } }),
        session,
        `round ${i}`,
      )
    }
  }
  const writes = await sql`select user_agent from ${schema}.ua_writes`
  assert.deepEqual(
    writes.map((w) => w.user_agent),
    [CHROME_121_WINDOWS],
    `${writes.length} User-Agent writes for 400 requests`,
  )
  const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(stored.json().user_agent, CHROME_121_WINDOWS, 'the newer version is the one kept')
  const changes = await app.inject({ method: 'GET', url: '/v1/users/alice/events', headers: auth() })
  assert.deepEqual(
    changes
      .json()
      .events.filter((e: { session_id: string }) => e.session_id === session.id)
      .map((e: { type: string }) => e.type),
    ['session.created'],
  )
})

test('a drifted access JWT suspends its session too', async (t) => {
  const { app } = await gatewayApp(t, { trustProxy: '10.0.0.0/8' })
  const jwt = await openJwt(app)
  assertAllowed(
    await forward(app, {
      token: jwt.access_token,
      remoteAddress: '10.0.0.1',
      headers: { 'x-forwarded-for': SAME_NETWORK_IP },
    }),
    jwt.session,
  )
  assertDenied(
    await forward(app, {
      token: jwt.access_token,
      remoteAddress: '10.0.0.1',
      headers: { 'x-forwarded-for': FAR_IP },
    }),
    true,
  )
  assert.equal(await sessionStatus(app, jwt.session.id), 'suspended')
})

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

test('forward-auth is not access-logged by default', async (t) => {
  const { app, logs } = await gatewayApp(t)
  const { token } = await openSession(app)
  const allowed = await forward(app, { token, headers: { 'x-request-id': 'quiet-forward-auth-1' } })
  assert.equal(allowed.statusCode, 200)
  const denied = await forward(app, { headers: { 'x-request-id': 'quiet-forward-auth-2' } })
  assert.equal(denied.statusCode, 401)
  assert.ok(!logs.text().includes('quiet-forward-auth'), logs.text())
})

test('forward-auth is access-logged with LOG_INTROSPECTION=true', async (t) => {
  const { app, logs } = await gatewayApp(t, { logIntrospection: true })
  const { token } = await openSession(app)
  const res = await forward(app, { token, headers: { 'x-request-id': 'loud-forward-auth' } })
  assert.equal(res.statusCode, 200)
  assert.ok(logs.text().includes('loud-forward-auth'))
  // The secret and the token never reach the log.
  assert.ok(!logs.text().includes(SECRET))
  assert.ok(!logs.text().includes(token))
})

test('when Postgres goes away forward-auth answers 503, never 200', async (t) => {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 })
  t.after(() => proxy.close())
  const { app } = await gatewayApp(t, {
    databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
    l1TtlMs: 200,
  })
  const { token, session } = await openSession(app)
  assertAllowed(await forward(app, { token }), session)
  await proxy.cut()
  await new Promise((r) => setTimeout(r, 250))
  const res = await forward(app, { token })
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.headers['x-auth-user-id'], undefined)
  await proxy.restore()
  assertAllowed(await forward(app, { token }), session)
})
