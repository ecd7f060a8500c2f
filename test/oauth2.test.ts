import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import {
  ADMIN_KEY,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  createKey,
  introspect,
  openSession,
  revokeSession,
} from './helper.ts'

// RFC 7662 token introspection (/oauth2/introspect) and RFC 7009 token
// revocation (/oauth2/revoke): form-encoded bodies, client authentication by
// HTTP Basic (client_id = API key id, client_secret = the key) or Bearer.

const SECOND = 1000
const INACTIVE = { active: false }
const HOME_IP = '203.0.113.7'
const FIREFOX_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'
const ENV_ADMIN = 'env-admin'
const FORM = 'application/x-www-form-urlencoded'

/** HTTP Basic client authentication as RFC 6749 §2.3.1 has it: each part form-encoded, then base64. */
function basic(clientId: string, clientSecret: string) {
  const credentials = `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`
  return `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}`
}

const ADMIN_BASIC = basic(ENV_ADMIN, ADMIN_KEY)

/** A form-encoded POST to an OAuth endpoint; `authorization` null sends none. */
function oauthPost(
  app: FastifyInstance,
  path: '/oauth2/introspect' | '/oauth2/revoke',
  params: Record<string, string>,
  authorization: string | null = ADMIN_BASIC,
) {
  return app.inject({
    method: 'POST',
    url: path,
    headers: { 'content-type': FORM, ...(authorization === null ? {} : { authorization }) },
    payload: new URLSearchParams(params).toString(),
  })
}

/** The introspection answer (must be 200 JSON). */
async function oauthIntrospect(
  app: FastifyInstance,
  token: string,
  extra: Record<string, string> = {},
  authorization: string = ADMIN_BASIC,
) {
  const res = await oauthPost(app, '/oauth2/introspect', { token, ...extra }, authorization)
  assert.equal(res.statusCode, 200, res.body)
  assert.match(String(res.headers['content-type']), /^application\/json/)
  return res.json() as Record<string, unknown>
}

/** Revokes; RFC 7009 says 200 with an empty body, whatever the token was. */
async function oauthRevoke(
  app: FastifyInstance,
  token: string,
  extra: Record<string, string> = {},
  authorization: string = ADMIN_BASIC,
) {
  const res = await oauthPost(app, '/oauth2/revoke', { token, ...extra }, authorization)
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.body, '')
  return res
}

function assertUnauthorized(res: LightMyRequestResponse, why = '') {
  assert.equal(res.statusCode, 401, `${why} ${res.body}`)
  assert.equal(res.json().error.code, 'UNAUTHORIZED', why)
  assert.equal(res.headers['www-authenticate'], 'Basic realm="session-authority"', why)
}

function assertForbidden(res: LightMyRequestResponse, why = '') {
  assert.equal(res.statusCode, 403, `${why} ${res.body}`)
  assert.equal(res.json().error.code, 'FORBIDDEN', why)
}

async function getSession(app: FastifyInstance, id: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { status: string; end_reason: string | null; created_at: string }
}

interface JwtLogin {
  access_token: string
  refresh_token: string
  session: { id: string; user_id: string }
}

async function openJwt(app: FastifyInstance, body: Record<string, unknown> = {}, key = ADMIN_KEY) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(key),
    payload: { user_id: 'alice', token_type: 'jwt', ip: HOME_IP, user_agent: CHROME_WINDOWS, ...body },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as JwtLogin
}

async function refresh(app: FastifyInstance, refreshToken: string) {
  return app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    headers: auth(),
    payload: { refresh_token: refreshToken },
  })
}

/** The claims of a JWT, unchecked (the test only reads them). */
function claimsOf(token: string): { exp: number; iat: number; sid: string } {
  const [, payload = ''] = token.split('.')
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
}

const unixSeconds = (iso: string) => Math.floor(Date.parse(iso) / 1000)

/** Every token of a revoked session is inactive, and the session says why it ended. */
async function assertEndedByOAuth(app: FastifyInstance, sessionId: string, tokens: string[]) {
  for (const token of tokens) {
    assert.deepEqual(await oauthIntrospect(app, token), INACTIVE, `token ${token.slice(0, 8)}…`)
    assert.equal((await introspect(app, token)).active, false, `v1 introspection of ${token.slice(0, 8)}…`)
  }
  const session = await getSession(app, sessionId)
  assert.equal(session.status, 'revoked')
  assert.equal(session.end_reason, 'oauth_revoke')
}

// ---------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------

test('client authentication: Basic with the admin key or a created key, or Bearer', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  const gateway = await createKey(app, ['introspect'])

  for (const [why, authorization] of [
    ['Basic, env admin', basic(ENV_ADMIN, ADMIN_KEY)],
    ['Basic, created key', basic(gateway.api_key.id, gateway.key)],
    ['Bearer, env admin', `Bearer ${ADMIN_KEY}`],
    ['Bearer, created key', `Bearer ${gateway.key}`],
    // The parts are form-encoded before base64: an encoded id must be decoded.
    ['Basic, percent-encoded id', `Basic ${Buffer.from(`env%2Dadmin:${ADMIN_KEY}`).toString('base64')}`],
    ['lower-case scheme', `basic ${Buffer.from(`${ENV_ADMIN}:${ADMIN_KEY}`).toString('base64')}`],
  ] as const) {
    const result = await oauthIntrospect(app, token, {}, authorization)
    assert.equal(result.active, true, why)
  }
})

test('a wrong secret, a mismatched id or no credentials is 401 with a Basic challenge', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  const a = await createKey(app, ['introspect', 'sessions:write'])
  const b = await createKey(app, ['introspect', 'sessions:write'])
  const b64 = (s: string) => Buffer.from(s).toString('base64')

  for (const path of ['/oauth2/introspect', '/oauth2/revoke'] as const) {
    for (const [why, authorization] of [
      ['wrong secret', basic(ENV_ADMIN, `${ADMIN_KEY}x`)],
      // The last character changed (to one it is not: a fixed one would be the key itself one time in 64).
      [
        'created key, wrong secret',
        basic(a.api_key.id, `${a.key.slice(0, -1)}${a.key.endsWith('A') ? 'B' : 'A'}`),
      ],
      ["another key's id", basic(a.api_key.id, b.key)],
      ["the admin id with a created key's secret", basic(ENV_ADMIN, a.key)],
      ["a created key's id with the admin secret", basic(b.api_key.id, ADMIN_KEY)],
      ['unknown id', basic('key_0000000000000000', a.key)],
      ['no secret', basic(ENV_ADMIN, '')],
      ['no colon', `Basic ${b64(ENV_ADMIN + ADMIN_KEY)}`],
      ['not base64', 'Basic !!!not-base64!!!'],
      ['empty Basic', 'Basic '],
      ['unknown Bearer key', 'Bearer sak_nope'],
      ['unknown scheme', `Digest ${ADMIN_KEY}`],
      ['none', null],
    ] as const) {
      const res = await oauthPost(app, path, { token }, authorization)
      assertUnauthorized(res, `${path}: ${why}`)
    }
  }
  // None of that touched the session.
  assert.equal((await introspect(app, token)).active, true)
})

test('a revoked API key is refused', async (t) => {
  const { app } = await buildTestApp(t, { apiKeyCacheTtlMs: 0 })
  const { token } = await openSession(app)
  const key = await createKey(app, ['introspect'])
  assert.equal((await oauthIntrospect(app, token, {}, basic(key.api_key.id, key.key))).active, true)
  const res = await app.inject({ method: 'DELETE', url: `/v1/api-keys/${key.api_key.id}`, headers: auth() })
  assert.ok(res.statusCode < 300, res.body)
  assertUnauthorized(await oauthPost(app, '/oauth2/introspect', { token }, basic(key.api_key.id, key.key)))
})

test('scopes: introspect needs `introspect`, revoke needs `sessions:write`', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  const introspectOnly = await createKey(app, ['introspect'])
  const writeOnly = await createKey(app, ['sessions:write'])
  const readOnly = await createKey(app, ['sessions:read'])

  for (const authorization of [
    basic(introspectOnly.api_key.id, introspectOnly.key),
    `Bearer ${introspectOnly.key}`,
  ]) {
    assertForbidden(
      await oauthPost(app, '/oauth2/revoke', { token }, authorization),
      'introspect-only revokes',
    )
  }
  assert.equal((await getSession(app, session.id)).status, 'active')
  assertForbidden(
    await oauthPost(app, '/oauth2/introspect', { token }, basic(writeOnly.api_key.id, writeOnly.key)),
    'write-only introspects',
  )
  for (const path of ['/oauth2/introspect', '/oauth2/revoke'] as const) {
    assertForbidden(await oauthPost(app, path, { token }, basic(readOnly.api_key.id, readOnly.key)), path)
  }
  // With the right scope each works.
  const active = await oauthIntrospect(app, token, {}, basic(introspectOnly.api_key.id, introspectOnly.key))
  assert.equal(active.active, true)
  await oauthRevoke(app, token, {}, basic(writeOnly.api_key.id, writeOnly.key))
  assert.equal((await getSession(app, session.id)).status, 'revoked')
})

// ---------------------------------------------------------------------------
// Introspection (RFC 7662)
// ---------------------------------------------------------------------------

test('introspection of an opaque token: sub, sid, exp, iat, token_type, iss, client_id', async (t) => {
  const { app, config } = await buildTestApp(t, { jwtIssuer: 'https://auth.example.com' })
  const backend = await createKey(app, ['sessions:write'])
  const opened = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(backend.key),
    payload: { user_id: 'alice', ip: HOME_IP, user_agent: CHROME_WINDOWS },
  })
  assert.equal(opened.statusCode, 201, opened.body)
  const { token, session } = opened.json() as { token: string; session: { id: string; created_at: string } }

  const result = await oauthIntrospect(app, token)
  assert.equal(result.active, true)
  assert.equal(result.sub, 'alice')
  assert.equal(result.sid, session.id)
  assert.equal(result.token_type, 'Bearer')
  assert.equal(result.iss, config.jwtIssuer)
  assert.equal(result.client_id, backend.api_key.id)
  assert.ok(Number.isInteger(result.exp), `exp ${result.exp}`)
  assert.ok(Number.isInteger(result.iat), `iat ${result.iat}`)
  assert.equal(result.iat, unixSeconds(session.created_at))
  // exp is when the token stops working: the session's expiry, as the v1 introspection says (same clock).
  const v1 = await introspect(app, token)
  assert.equal(result.exp, unixSeconds(String(v1.expires_at)))
  assert.ok((result.exp as number) > (result.iat as number))
  // Nothing of the token itself comes back.
  assert.ok(!JSON.stringify(result).includes(token))
})

test('introspection of an access JWT and of a refresh token', async (t) => {
  const { app, config } = await buildTestApp(t)
  const login = await openJwt(app)
  const now = Math.floor(Date.parse('2026-01-01T00:00:00Z') / 1000)

  const access = await oauthIntrospect(app, login.access_token)
  assert.equal(access.active, true, JSON.stringify(access))
  assert.equal(access.sub, 'alice')
  assert.equal(access.sid, login.session.id)
  assert.equal(access.token_type, 'Bearer')
  assert.equal(access.iss, config.jwtIssuer)
  assert.equal(access.client_id, ENV_ADMIN)
  assert.ok(Number.isInteger(access.exp) && (access.exp as number) > now, `exp ${access.exp}`)
  assert.ok(Number.isInteger(access.iat) && (access.iat as number) <= now, `iat ${access.iat}`)
  // An access JWT is good until its own exp at the latest.
  assert.ok((access.exp as number) <= claimsOf(login.access_token).exp, 'exp past the JWT exp')

  const refreshResult = await oauthIntrospect(app, login.refresh_token)
  assert.equal(refreshResult.active, true, JSON.stringify(refreshResult))
  assert.equal(refreshResult.token_type, 'refresh_token')
  assert.equal(refreshResult.sub, 'alice')
  assert.equal(refreshResult.sid, login.session.id)
  assert.equal(refreshResult.iss, config.jwtIssuer)
  assert.equal(refreshResult.client_id, ENV_ADMIN)
  assert.ok(Number.isInteger(refreshResult.exp) && (refreshResult.exp as number) > now)
  assert.ok(Number.isInteger(refreshResult.iat))
})

test('a refresh token is inactive to a gateway-only key; active to a key that may refresh', async (t) => {
  const { app } = await buildTestApp(t)
  const login = await openJwt(app)
  const gateway = await createKey(app, ['introspect'])
  const gatewayRead = await createKey(app, ['introspect', 'sessions:read'])
  const backend = await createKey(app, ['introspect', 'sessions:write'])

  // A generic RFC 7662 gateway checks `active` only: a refresh token must never pass for an access token.
  for (const [why, authorization] of [
    ['introspect (Basic)', basic(gateway.api_key.id, gateway.key)],
    ['introspect (Bearer)', `Bearer ${gateway.key}`],
    ['introspect + sessions:read', basic(gatewayRead.api_key.id, gatewayRead.key)],
  ] as const) {
    assert.deepEqual(await oauthIntrospect(app, login.refresh_token, {}, authorization), INACTIVE, why)
    for (const token_type_hint of ['refresh_token', 'access_token']) {
      assert.deepEqual(
        await oauthIntrospect(app, login.refresh_token, { token_type_hint }, authorization),
        INACTIVE,
        `${why}, hint ${token_type_hint}`,
      )
    }
    // The same key still sees the access JWT as active.
    assert.equal((await oauthIntrospect(app, login.access_token, {}, authorization)).active, true, why)
  }
  for (const [why, authorization] of [
    ['introspect + sessions:write', basic(backend.api_key.id, backend.key)],
    ['admin', ADMIN_BASIC],
  ] as const) {
    const result = await oauthIntrospect(app, login.refresh_token, {}, authorization)
    assert.equal(result.active, true, why)
    assert.equal(result.token_type, 'refresh_token', why)
  }
  // Looking was no use: the refresh token still refreshes.
  assert.equal((await refresh(app, login.refresh_token)).statusCode, 200)
})

test('a spent refresh token is inactive; introspecting it does not set off reuse detection', async (t) => {
  const { app, clock, config } = await buildTestApp(t)
  const login = await openJwt(app)
  assert.equal((await oauthIntrospect(app, login.refresh_token)).active, true)

  const res = await refresh(app, login.refresh_token)
  assert.equal(res.statusCode, 200, res.body)
  const next = res.json() as JwtLogin
  assert.deepEqual(await oauthIntrospect(app, login.refresh_token), INACTIVE)
  const fresh = await oauthIntrospect(app, next.refresh_token)
  assert.equal(fresh.active, true)
  assert.equal(fresh.token_type, 'refresh_token')
  assert.equal((await oauthIntrospect(app, next.access_token)).active, true)

  // Past the reuse grace, looking at the spent token is still only a look.
  clock.advance((config.refreshReuseGraceSeconds + 1) * SECOND)
  assert.deepEqual(await oauthIntrospect(app, login.refresh_token), INACTIVE)
  assert.equal((await getSession(app, login.session.id)).status, 'active')
  assert.equal((await oauthIntrospect(app, next.refresh_token)).active, true)
})

test('token_type_hint is only a hint: a wrong or unknown one still finds the token', async (t) => {
  const { app } = await buildTestApp(t)
  const opaque = await openSession(app)
  const login = await openJwt(app)
  for (const [what, token, expected] of [
    ['opaque', opaque.token, 'Bearer'],
    ['access JWT', login.access_token, 'Bearer'],
    ['refresh token', login.refresh_token, 'refresh_token'],
  ] as const) {
    for (const hint of ['access_token', 'refresh_token', 'id_token', 'something_else', '']) {
      const result = await oauthIntrospect(app, token, { token_type_hint: hint })
      assert.equal(result.active, true, `${what}, hint ${hint}`)
      assert.equal(result.token_type, expected, `${what}, hint ${hint}`)
    }
  }
  // Unknown parameters are ignored too.
  const extra = await oauthIntrospect(app, opaque.token, { scope: 'read', foo: 'bar', client_id: 'whatever' })
  assert.equal(extra.active, true)
})

test('inactive answers are exactly {"active":false}, whatever the reason', async (t) => {
  const { app, clock, config } = await buildTestApp(t, { idleTimeoutSeconds: 3600 })
  const gateway = await createKey(app, ['introspect'])
  const callers = [ADMIN_BASIC, basic(gateway.api_key.id, gateway.key)]
  const check = async (token: string, why: string) => {
    for (const authorization of callers) {
      const res = await oauthPost(app, '/oauth2/introspect', { token }, authorization)
      assert.equal(res.statusCode, 200, `${why}: ${res.body}`)
      assert.equal(res.body, '{"active":false}', why)
    }
  }

  await check(`sat_${'A'.repeat(43)}`, 'unknown opaque')
  await check(`srt_${'A'.repeat(43)}`, 'unknown refresh token')
  await check('garbage', 'malformed')
  await check('a.b.c', 'malformed JWT')
  await check('😀'.repeat(10), 'emoji')
  await check('x'.repeat(4000), 'very long')

  const revoked = await openSession(app)
  await revokeSession(app, revoked.session.id)
  await check(revoked.token, 'revoked')

  const revokedJwt = await openJwt(app)
  await revokeSession(app, revokedJwt.session.id)
  await check(revokedJwt.access_token, 'revoked JWT session')
  await check(revokedJwt.refresh_token, 'refresh token of a revoked session')

  const suspended = await openSession(app)
  const res = await app.inject({
    method: 'POST',
    url: `/v1/sessions/${suspended.session.id}/suspend`,
    headers: auth(),
    payload: { reason: 'fraud review' },
  })
  assert.equal(res.statusCode, 200, res.body)
  await check(suspended.token, 'suspended')

  // An access JWT past its exp (and the skew), its session still alive.
  const jwt = await openJwt(app)
  clock.advance((config.accessTokenTtlSeconds + config.jwtClockSkewSeconds + 1) * SECOND)
  await check(jwt.access_token, 'expired JWT')
  assert.equal((await oauthIntrospect(app, jwt.refresh_token)).active, true)

  // A session past its idle timeout.
  const idle = await openSession(app)
  clock.advance(3601 * SECOND)
  await check(idle.token, 'idle-expired')
})

test('ip and user_agent feed the drift check', async (t) => {
  const { app } = await buildTestApp(t)
  const ua = await openSession(app)
  assert.equal((await oauthIntrospect(app, ua.token, { user_agent: CHROME_WINDOWS })).active, true)
  assert.deepEqual(await oauthIntrospect(app, ua.token, { user_agent: FIREFOX_WINDOWS }), INACTIVE)
  assert.equal((await getSession(app, ua.session.id)).status, 'suspended')

  const ip = await openSession(app)
  assert.equal((await oauthIntrospect(app, ip.token, { ip: '203.0.113.50' })).active, true)
  assert.equal((await getSession(app, ip.session.id)).status, 'active')
  assert.deepEqual(await oauthIntrospect(app, ip.token, { ip: '198.51.100.1' }), INACTIVE)
  assert.equal((await getSession(app, ip.session.id)).status, 'suspended')

  // Without the parameters nothing is checked: no drift.
  const plain = await openSession(app)
  assert.equal((await oauthIntrospect(app, plain.token)).active, true)
  assert.equal((await getSession(app, plain.session.id)).status, 'active')
})

test('the body must be a form: JSON or text is 415; a missing token is 400', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  for (const path of ['/oauth2/introspect', '/oauth2/revoke'] as const) {
    const json = await app.inject({
      method: 'POST',
      url: path,
      headers: { authorization: ADMIN_BASIC, 'content-type': 'application/json' },
      payload: JSON.stringify({ token }),
    })
    assert.equal(json.statusCode, 415, `${path} JSON: ${json.body}`)
    assert.equal(json.json().error.code, 'UNSUPPORTED_MEDIA_TYPE')
    // The message says what to send here (a form), never "send JSON".
    assert.match(json.json().error.message, /application\/x-www-form-urlencoded/, json.body)
    assert.doesNotMatch(json.json().error.message, /send JSON/, json.body)
    const text = await app.inject({
      method: 'POST',
      url: path,
      headers: { authorization: ADMIN_BASIC, 'content-type': 'text/plain' },
      payload: `token=${token}`,
    })
    assert.equal(text.statusCode, 415, `${path} text: ${text.body}`)
    assert.match(text.json().error.message, /form \(application\/x-www-form-urlencoded\)/, text.body)

    for (const [why, params] of [
      ['no token', {}],
      ['only a hint', { token_type_hint: 'access_token' }],
    ] as const) {
      const res = await oauthPost(app, path, params)
      assert.equal(res.statusCode, 400, `${path} ${why}: ${res.body}`)
      assert.equal(res.json().error.code, 'VALIDATION_FAILED', `${path} ${why}`)
    }
    const empty = await app.inject({ method: 'POST', url: path, headers: { authorization: ADMIN_BASIC } })
    assert.equal(empty.statusCode, 400, `${path} no body: ${empty.body}`)
  }
  // A charset parameter on the form type is fine.
  const res = await app.inject({
    method: 'POST',
    url: '/oauth2/introspect',
    headers: { authorization: ADMIN_BASIC, 'content-type': `${FORM}; charset=UTF-8` },
    payload: new URLSearchParams({ token }).toString(),
  })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')
})

// ---------------------------------------------------------------------------
// Revocation (RFC 7009)
// ---------------------------------------------------------------------------

test('revoking an unknown or malformed token is a plain 200 with an empty body', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  for (const unknown of [
    `sat_${'A'.repeat(43)}`,
    `srt_${'A'.repeat(43)}`,
    'garbage',
    'a.b.c',
    'eyJhbGciOiJFZERTQSJ9.eyJzaWQiOiJ4In0.c2ln',
    '😀',
  ]) {
    await oauthRevoke(app, unknown)
    await oauthRevoke(app, unknown, { token_type_hint: 'refresh_token' })
  }
  assert.equal((await oauthIntrospect(app, token)).active, true)
  assert.equal((await getSession(app, session.id)).status, 'active')
})

test('revoking an opaque token ends its session', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  const other = await openSession(app)
  await oauthRevoke(app, token)
  await assertEndedByOAuth(app, session.id, [token])
  // Another session of the same user is untouched.
  assert.equal((await oauthIntrospect(app, other.token)).active, true)
  // Revoking again is fine and changes nothing.
  await oauthRevoke(app, token)
  assert.equal((await getSession(app, session.id)).end_reason, 'oauth_revoke')
})

test('revoking a refresh token ends the session: its access JWT is inactive at once', async (t) => {
  const { app } = await buildTestApp(t)
  const login = await openJwt(app)
  assert.equal((await oauthIntrospect(app, login.access_token)).active, true)
  await oauthRevoke(app, login.refresh_token, { token_type_hint: 'refresh_token' })
  await assertEndedByOAuth(app, login.session.id, [login.access_token, login.refresh_token])
  const res = await refresh(app, login.refresh_token)
  assert.equal(res.statusCode, 400, res.body)
})

test('revoking an access JWT ends the session: its refresh token is inactive too', async (t) => {
  const { app } = await buildTestApp(t)
  const login = await openJwt(app)
  // A wrong hint does not matter.
  await oauthRevoke(app, login.access_token, { token_type_hint: 'refresh_token' })
  await assertEndedByOAuth(app, login.session.id, [login.access_token, login.refresh_token])
  const res = await refresh(app, login.refresh_token)
  assert.equal(res.statusCode, 400, res.body)
})

test('an expired access JWT can still be revoked; a forged one cannot', async (t) => {
  const { app, clock, config } = await buildTestApp(t)
  const expired = await openJwt(app)
  const live = await openJwt(app)
  clock.advance((config.accessTokenTtlSeconds + config.jwtClockSkewSeconds + 60) * SECOND)
  assert.deepEqual(await oauthIntrospect(app, expired.access_token), INACTIVE)
  await oauthRevoke(app, expired.access_token)
  await assertEndedByOAuth(app, expired.session.id, [expired.refresh_token])

  // live's header and claims with another JWT's signature: not revoked.
  const fresh = await refresh(app, live.refresh_token)
  assert.equal(fresh.statusCode, 200, fresh.body)
  const next = fresh.json() as JwtLogin
  const [header, payload] = next.access_token.split('.')
  const [, , signature] = expired.access_token.split('.')
  await oauthRevoke(app, `${header}.${payload}.${signature}`)
  assert.equal((await getSession(app, live.session.id)).status, 'active')
  assert.equal((await oauthIntrospect(app, next.access_token)).active, true)
  assert.equal((await oauthIntrospect(app, next.refresh_token)).active, true)
})

test('revoking a session ended otherwise keeps its first end reason', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  const res = await app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${session.id}?reason=user_logout`,
    headers: auth(),
  })
  assert.equal(res.statusCode, 200, res.body)
  await oauthRevoke(app, token)
  const after = await getSession(app, session.id)
  assert.equal(after.status, 'revoked')
  assert.equal(after.end_reason, 'user_logout')
})

test('revocation with Bearer client authentication', async (t) => {
  const { app } = await buildTestApp(t)
  const backend = await createKey(app, ['sessions:write'])
  const { token, session } = await openSession(app)
  await oauthRevoke(app, token, {}, `Bearer ${backend.key}`)
  await assertEndedByOAuth(app, session.id, [token])
})

// ---------------------------------------------------------------------------
// A mainstream OAuth client library against the listening service
// ---------------------------------------------------------------------------

async function listen(app: FastifyInstance) {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  return `http://127.0.0.1:${port}`
}

test('openid-client introspects and revokes with client_secret_basic', async (t) => {
  // openid-client is a devDependency; import it lazily so the rest of the file runs without it.
  const client = await import('openid-client').catch(() => null)
  if (!client) {
    t.skip('openid-client is not installed (npm i -D openid-client)')
    return
  }
  const { app } = await buildTestApp(t)
  const base = await listen(app)
  const key = await createKey(app, ['introspect', 'sessions:write'])
  const { token, session } = await openSession(app)
  const login = await openJwt(app)

  const server = {
    issuer: base,
    introspection_endpoint: `${base}/oauth2/introspect`,
    revocation_endpoint: `${base}/oauth2/revoke`,
  }
  // openid-client defaults to client_secret_post; the service takes HTTP Basic (or Bearer).
  const config = new client.Configuration(server, key.api_key.id, key.key, client.ClientSecretBasic())
  client.allowInsecureRequests(config)

  const active = await client.tokenIntrospection(config, token)
  assert.equal(active.active, true)
  assert.equal(active.sub, 'alice')
  assert.equal(active.sid, session.id)
  assert.equal(active.token_type, 'Bearer')
  assert.equal(active.client_id, ENV_ADMIN)
  assert.equal(typeof active.exp, 'number')

  const refreshInfo = await client.tokenIntrospection(config, login.refresh_token, {
    token_type_hint: 'refresh_token',
  })
  assert.equal(refreshInfo.active, true)
  assert.equal(refreshInfo.token_type, 'refresh_token')

  await client.tokenRevocation(config, token)
  assert.deepEqual({ ...(await client.tokenIntrospection(config, token)) }, INACTIVE)
  assert.equal((await getSession(app, session.id)).end_reason, 'oauth_revoke')

  await client.tokenRevocation(config, login.access_token, { token_type_hint: 'access_token' })
  assert.equal((await client.tokenIntrospection(config, login.refresh_token)).active, false)
  // Unknown tokens revoke fine.
  await client.tokenRevocation(config, 'sat_never-issued')

  // A wrong secret is a rejection the library reports, not a silent "inactive".
  const wrong = new client.Configuration(server, key.api_key.id, `${key.key}x`, client.ClientSecretBasic())
  client.allowInsecureRequests(wrong)
  await assert.rejects(client.tokenIntrospection(wrong, token))
  await assert.rejects(client.tokenRevocation(wrong, token))
})
