import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { ADMIN_KEY, auth, buildTestApp, type TestApp } from './helper.ts'

/**
 * Logs never contain a session token, an Authorization header or an API key,
 * whatever the request did with them; every request's log lines carry its
 * request id, and a caller's x-request-id is reused and echoed.
 */

interface LogLine {
  level: number
  msg?: string
  reqId?: unknown
  req?: { method: string; url: string }
  res?: { statusCode: number }
  responseTime?: number
  err?: unknown
  code?: string
  status?: number
  [key: string]: unknown
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function parseLines(logs: TestApp['logs']): LogLine[] {
  return logs.lines.map((line) => {
    let parsed: LogLine | undefined
    try {
      parsed = JSON.parse(line) as LogLine
    } catch {
      assert.fail(`a log line is not JSON: ${line}`)
    }
    return parsed
  })
}

/** Pieces of a secret long enough to matter: a log must not hold even part of one. */
function fragments(secret: string, size = 16): string[] {
  if (secret.length <= size) return [secret]
  const out = new Set<string>()
  for (let i = 0; i + size <= secret.length; i += 4) out.add(secret.slice(i, i + size))
  out.add(secret.slice(-size))
  return [...out]
}

/** Sends requests through the app, remembering each one's x-request-id. */
function client(app: FastifyInstance) {
  const sent: Array<{ id: string; res: LightMyRequestResponse }> = []
  return {
    sent,
    async send(options: InjectOptions) {
      const res = await app.inject(options)
      assert.ok(res.statusCode < 500, `${options.method} ${options.url}: ${res.statusCode} ${res.body}`)
      const id = res.headers['x-request-id']
      assert.equal(typeof id, 'string', `no x-request-id on ${options.method} ${options.url}`)
      sent.push({ id: id as string, res })
      return res
    },
  }
}

/** Every way a secret reaches the service; returns the secrets involved. */
async function handleSecrets(app: FastifyInstance) {
  const { send, sent } = client(app)
  const json = { ...auth(), 'content-type': 'application/json' }

  // Opening a session: the token is in the reply.
  const opened = await send({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', ip: '203.0.113.7', user_agent: 'Mozilla/5.0' },
  })
  assert.equal(opened.statusCode, 201, opened.body)
  const { token, session } = opened.json() as { token: string; session: { id: string } }

  // Introspecting: the token is in the body.
  const active = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token },
  })
  assert.equal(active.json().active, true)

  // Creating an API key: the key is in the reply; then it is used.
  const created = await send({
    method: 'POST',
    url: '/v1/api-keys',
    headers: auth(),
    payload: { name: 'gateway', scopes: ['introspect', 'sessions:read'] },
  })
  assert.equal(created.statusCode, 201, created.body)
  const { key: apiKey } = created.json() as { key: string }
  const withNewKey = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(apiKey),
    payload: { token },
  })
  assert.equal(withNewKey.json().active, true)
  const forbidden = await send({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(apiKey),
    payload: { user_id: 'alice' },
  })
  assert.equal(forbidden.statusCode, 403, forbidden.body)

  // Keys that are not valid, in several places.
  const invalidKey = `sak_${randomBytes(32).toString('base64url')}`
  const rejected = await send({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth(invalidKey) })
  assert.equal(rejected.statusCode, 401, rejected.body)
  const tokenAsKey = await send({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth(token) })
  assert.equal(tokenAsKey.statusCode, 401, tokenAsKey.body)
  const basic = `Basic ${Buffer.from(`admin:${ADMIN_KEY}`).toString('base64')}`
  const basicAuth = await send({
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: basic },
  })
  assert.equal(basicAuth.statusCode, 401, basicAuth.body)
  const longKey = `sak_${randomBytes(600).toString('base64url')}`
  const tooLong = await send({ method: 'GET', url: '/v1/users/alice/sessions', headers: auth(longKey) })
  assert.equal(tooLong.statusCode, 401, tooLong.body)

  // Other headers that carry secrets.
  const withCookie = await send({
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: {
      ...auth(),
      cookie: `session=${token}`,
      'x-api-key': apiKey,
      'proxy-authorization': `Bearer ${token}`,
    },
  })
  assert.equal(withCookie.statusCode, 200, withCookie.body)

  // Requests that fail while carrying the token.
  const unknownField = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token, scope: 'admin' },
  })
  assert.equal(unknownField.statusCode, 400, unknownField.body)
  const badIp = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token, ip: 'not-an-ip' },
  })
  assert.equal(badIp.statusCode, 400, badIp.body)
  const longToken = `sat_${randomBytes(7000).toString('base64url')}`
  const oversized = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token: longToken },
  })
  assert.equal(oversized.statusCode, 400, oversized.body)
  for (const payload of [
    `{"token": ${token}}`,
    `{"token": "${token}" }}`,
    `${token}`,
    `{"token": "${token}"`,
  ]) {
    const broken = await send({ method: 'POST', url: '/v1/sessions/introspect', headers: json, payload })
    assert.equal(broken.statusCode, 400, broken.body)
  }
  const plain = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: { ...auth(), 'content-type': 'text/plain' },
    payload: token,
  })
  assert.equal(plain.statusCode >= 400 && plain.statusCode < 500, true, plain.body)
  const wrongKeyWithToken = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(invalidKey),
    payload: { token },
  })
  assert.equal(wrongKeyWithToken.statusCode, 401, wrongKeyWithToken.body)

  // Ending the session, then checking the token again.
  const revoked = await send({ method: 'DELETE', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(revoked.statusCode, 200, revoked.body)
  const inactive = await send({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token },
  })
  assert.deepEqual(inactive.json(), { active: false, reason: 'revoked' })

  // Every secret above went through requests that were answered.
  for (const { res } of sent) assert.doesNotMatch(res.headers['x-request-id'] as string, /sa[tk]_/)
  return {
    secrets: { token, apiKey, invalidKey, longKey, longToken, adminKey: ADMIN_KEY, basic },
    sent,
  }
}

function assertNoSecrets(text: string, secrets: Record<string, string>) {
  for (const [name, secret] of Object.entries(secrets)) {
    assert.ok(!text.includes(secret), `the logs contain the ${name}`)
    for (const piece of fragments(secret)) {
      assert.ok(!text.includes(piece), `the logs contain part of the ${name}: ${piece}`)
    }
  }
  // No request headers are dumped, censored or not.
  for (const header of ['authorization', 'proxy-authorization', 'cookie', 'x-api-key']) {
    assert.doesNotMatch(text, new RegExp(`"${header}"\\s*:`, 'i'), `the logs hold a ${header} header`)
  }
  assert.doesNotMatch(text, /(bearer|basic) [A-Za-z0-9+/=_-]{8,}/i, 'the logs contain a credential')
  assert.doesNotMatch(
    text,
    /sa[tk]_[A-Za-z0-9_-]{8,}/,
    'the logs contain something shaped like a token or key',
  )
}

for (const logLevel of ['info', 'trace'] as const) {
  test(`logs at level ${logLevel} never contain a token, an Authorization header or an API key`, async (t) => {
    const { app, logs } = await buildTestApp(t, { logLevel, logIntrospection: true })
    const { secrets, sent } = await handleSecrets(app)
    const text = logs.text()

    // The capture did see the requests, so this test can fail.
    const lines = parseLines(logs)
    const incoming = lines.filter((l) => l.msg === 'incoming request')
    assert.equal(incoming.length, sent.length, 'one "incoming request" line per request')
    assert.ok(text.includes('/v1/sessions/introspect'), 'the requests that carried tokens were logged')
    assert.ok(text.includes('unknown or revoked API key'), 'the refused keys were logged')
    assert.ok(text.includes('body.scope'), 'the validation failure next to the token was logged')

    assertNoSecrets(text, secrets)
  })
}

test('every request log line carries the request id', async (t) => {
  const { app, logs } = await buildTestApp(t, { logIntrospection: true })
  const { sent } = await handleSecrets(app)
  const lines = parseLines(logs)

  const ids = sent.map((s) => s.id)
  assert.equal(new Set(ids).size, ids.length, 'each request got its own id')
  for (const id of ids) assert.match(id, UUID)

  // Lines about a request: Fastify's own, the error handler's, and anything logged with an error.
  const requestLines = lines.filter(
    (l) =>
      l.req !== undefined ||
      l.res !== undefined ||
      l.responseTime !== undefined ||
      l.err !== undefined ||
      l.code !== undefined,
  )
  assert.ok(requestLines.length >= 2 * sent.length, 'request lines were logged')
  for (const line of requestLines) {
    assert.equal(typeof line.reqId, 'string', `a request log line has no reqId: ${JSON.stringify(line)}`)
    assert.ok(ids.includes(line.reqId as string), `reqId ${String(line.reqId)} is not one a reply carried`)
  }
  // Every line that names a request id names one that was answered.
  for (const line of lines.filter((l) => l.reqId !== undefined)) assert.ok(ids.includes(line.reqId as string))

  // Each request has its "incoming" and "completed" lines under its id, and the status it was answered with.
  for (const { id, res } of sent) {
    const mine = lines.filter((l) => l.reqId === id)
    assert.equal(mine.filter((l) => l.msg === 'incoming request').length, 1, `incoming line of ${id}`)
    const completed = mine.filter((l) => l.msg === 'request completed')
    assert.equal(completed.length, 1, `completed line of ${id}`)
    assert.equal(completed[0]?.res?.statusCode, res.statusCode)
  }
  // Refusals are logged with their code under the request's id.
  const refusals = lines.filter((l) => l.code !== undefined)
  assert.ok(refusals.some((l) => l.code === 'UNAUTHORIZED'))
  assert.ok(refusals.some((l) => l.code === 'VALIDATION_FAILED'))
})

test("a caller's x-request-id is reused, logged and echoed", async (t) => {
  const { app, logs } = await buildTestApp(t)
  const cases = [
    { method: 'GET', url: '/v1/users/alice/sessions', status: 200, headers: auth() },
    { method: 'GET', url: '/v1/users/alice/sessions', status: 401, headers: auth('wrong-key') },
    { method: 'POST', url: '/v1/sessions', status: 400, headers: auth(), payload: { user_id: 42 } },
    { method: 'GET', url: '/v1/nothing-here', status: 404 },
  ] as const
  for (const [i, c] of cases.entries()) {
    const requestId = `caller-req.${i}:7f3a_${randomBytes(4).toString('hex')}`
    const res = await app.inject({
      method: c.method,
      url: c.url,
      headers: { ...('headers' in c ? c.headers : {}), 'x-request-id': requestId },
      payload: 'payload' in c ? c.payload : undefined,
    })
    assert.equal(res.statusCode, c.status, res.body)
    assert.equal(res.headers['x-request-id'], requestId, `${c.method} ${c.url} did not echo the request id`)
    const mine = parseLines(logs).filter((l) => l.reqId === requestId)
    assert.deepEqual(
      mine.filter((l) => l.msg === 'incoming request' || l.msg === 'request completed').map((l) => l.msg),
      ['incoming request', 'request completed'],
      `${c.method} ${c.url} was not logged under the caller's request id`,
    )
  }
})

test('an unusable x-request-id is replaced, not logged', async (t) => {
  const { app, logs } = await buildTestApp(t)
  const unusable = [
    'has spaces in it',
    'x'.repeat(129),
    '{"level":60,"msg":"forged"}',
    'id\u00e9',
    `sat_${randomBytes(32).toString('base64url')} `,
    '',
  ]
  for (const given of unusable) {
    const res = await app.inject({
      method: 'GET',
      url: '/v1/nothing-here',
      headers: { 'x-request-id': given },
    })
    assert.equal(res.statusCode, 404)
    const echoed = res.headers['x-request-id']
    assert.match(String(echoed), UUID, `${JSON.stringify(given)} was not replaced`)
    assert.ok(
      parseLines(logs).some((l) => l.reqId === echoed),
      'the replacement id is the one logged',
    )
    if (given.length > 0) assert.ok(!logs.text().includes(given), `${JSON.stringify(given)} reached the logs`)
  }
  // Two requests without an id get two different ones.
  const a = await app.inject({ method: 'GET', url: '/v1/nothing-here' })
  const b = await app.inject({ method: 'GET', url: '/v1/nothing-here' })
  assert.match(String(a.headers['x-request-id']), UUID)
  assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id'])
})

test('health probes are answered with the request id but not logged at info (they come every few seconds)', async (t) => {
  const { app, logs } = await buildTestApp(t)
  for (const url of ['/healthz', '/readyz']) {
    const res = await app.inject({ method: 'GET', url, headers: { 'x-request-id': `probe-${url.slice(1)}` } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['x-request-id'], `probe-${url.slice(1)}`)
    assert.ok(!logs.text().includes(`probe-${url.slice(1)}`))
  }
})

test('introspection is not access-logged by default (one line per gateway request would drown the log)', async (t) => {
  const { app, logs } = await buildTestApp(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: { ...auth(), 'x-request-id': 'quiet-introspection' },
    payload: { token: 'sat_unknown' },
  })
  assert.equal(res.statusCode, 200)
  assert.ok(!logs.text().includes('quiet-introspection'))
})
