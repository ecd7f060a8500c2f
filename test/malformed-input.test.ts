import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { adminSql, auth, buildTestApp, openSession } from './helper.ts'

/**
 * The service promises that no input produces a 5xx or a stack trace: every
 * malformed request gets a 4xx in the one error shape, `{ error: { code, message } }`,
 * whose message says what was wrong.
 */

const JSON_TYPE = { 'content-type': 'application/json' }
const A_UUID = '0b6d3d4e-6f7a-4c55-9b1e-2f0c8a1d9e42'
const SQL_ID = "1'%20or%201=1--"
const SQL_USER = encodeURIComponent("x'; drop table sessions;--")

/** Signs of a stack trace or of the service's files leaking into a reply. */
const STACK_SIGNS = [
  /\n\s*at /,
  /\bat [\w$.<>[\] ]+ \(/,
  /\bat (file|node):/,
  /file:\/\//,
  /node:internal/,
  /node_modules/,
  /\/(src|test|dist)\//,
  /[\w-]+\.(ts|js|mjs|cjs):\d+/,
]

function assertNoStack(body: string) {
  for (const sign of STACK_SIGNS)
    assert.doesNotMatch(body, sign, `the reply looks like it leaks internals: ${body}`)
}

/** Asserts the reply is exactly `{ error: { code, message } }` with this status and code, and no internals. */
function assertError(res: LightMyRequestResponse, status: number, code: string, message?: RegExp) {
  assert.equal(res.statusCode, status, `expected ${status} ${code}, got ${res.statusCode}: ${res.body}`)
  assert.match(String(res.headers['content-type']), /^application\/json/)
  assertNoStack(res.body)
  const body = res.json() as Record<string, unknown>
  assert.deepEqual(Object.keys(body), ['error'], `not the error shape: ${res.body}`)
  const error = body.error as Record<string, unknown>
  assert.equal(typeof error, 'object')
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message'], `not the error shape: ${res.body}`)
  assert.equal(error.code, code, `expected code ${code}: ${res.body}`)
  assert.equal(typeof error.message, 'string')
  assert.ok((error.message as string).length > 0, 'the message is empty')
  if (message) assert.match(error.message as string, message)
}

interface Case {
  name: string
  method?: InjectOptions['method']
  url: string
  /** An object is sent as JSON; a string or Buffer is sent as is, with `headers` saying what it is. */
  payload?: unknown
  headers?: Record<string, string>
  /** Send no Authorization header. */
  anonymous?: boolean
  status: number
  code: string
  message?: RegExp
}

function inject(app: FastifyInstance, c: Pick<Case, 'method' | 'url' | 'payload' | 'headers' | 'anonymous'>) {
  const options: InjectOptions = {
    method: c.method ?? 'POST',
    url: c.url,
    headers: { ...(c.anonymous ? {} : auth()), ...c.headers },
  }
  if (c.payload !== undefined) options.payload = c.payload as InjectOptions['payload']
  return app.inject(options)
}

const open = (payload: unknown) => ({ url: '/v1/sessions', payload })
const raw = (payload: string | Buffer) => ({ url: '/v1/sessions', payload, headers: JSON_TYPE })

const cases: Case[] = [
  // Bodies that are not JSON.
  {
    name: 'invalid JSON',
    ...raw('{"user_id": "alice",'),
    status: 400,
    code: 'INVALID_JSON',
    message: /not valid JSON/,
  },
  {
    name: 'truncated JSON string',
    ...raw('{"user_id": "ali'),
    status: 400,
    code: 'INVALID_JSON',
    message: /not valid JSON/,
  },
  {
    name: 'empty body with a JSON content type',
    ...raw(''),
    status: 400,
    code: 'INVALID_JSON',
    message: /empty/i,
  },
  {
    name: 'non-UTF-8 bytes inside a JSON string',
    ...raw(Buffer.concat([Buffer.from('{"user_id":"al'), Buffer.from([0xff, 0xfe]), Buffer.from('ice"}')])),
    status: 400,
    code: 'INVALID_JSON',
    message: /UTF-8/,
  },
  {
    name: 'non-UTF-8 bytes in the introspect body',
    url: '/v1/sessions/introspect',
    payload: Buffer.concat([
      Buffer.from('{"token":"sat_'),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from('"}'),
    ]),
    headers: JSON_TYPE,
    status: 400,
    code: 'INVALID_JSON',
    message: /UTF-8/,
  },

  // Bodies that are JSON but not the object the route takes.
  { name: 'a JSON array body', ...raw('[]'), status: 400, code: 'VALIDATION_FAILED', message: /body/ },
  { name: 'a JSON null body', ...raw('null'), status: 400, code: 'VALIDATION_FAILED', message: /body/ },
  { name: 'a JSON string body', ...raw('"alice"'), status: 400, code: 'VALIDATION_FAILED', message: /body/ },
  { name: 'user_id missing', ...open({}), status: 400, code: 'VALIDATION_FAILED', message: /user_id/ },
  {
    name: 'user_id a number',
    ...open({ user_id: 42 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'user_id null',
    ...open({ user_id: null }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'user_id empty',
    ...open({ user_id: '' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'user_id longer than 256 characters',
    ...open({ user_id: 'u'.repeat(257) }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'metadata an array',
    ...open({ user_id: 'alice', metadata: [1, 2] }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata/,
  },
  {
    name: 'metadata a string',
    ...open({ user_id: 'alice', metadata: '{"a":1}' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata/,
  },
  {
    name: 'metadata null',
    ...open({ user_id: 'alice', metadata: null }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata/,
  },
  {
    name: 'idle_timeout a string',
    ...open({ user_id: 'alice', idle_timeout: '60' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /idle_timeout/,
  },
  {
    name: 'idle_timeout negative',
    ...open({ user_id: 'alice', idle_timeout: -60 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /idle_timeout/,
  },
  {
    name: 'idle_timeout 0',
    ...open({ user_id: 'alice', idle_timeout: 0 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /idle_timeout/,
  },
  {
    name: 'idle_timeout a fraction',
    ...open({ user_id: 'alice', idle_timeout: 1.5 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /idle_timeout/,
  },
  {
    name: 'absolute_lifetime beyond a year',
    ...open({ user_id: 'alice', absolute_lifetime: 1e12 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /absolute_lifetime/,
  },
  {
    name: 'ip not an IP',
    ...open({ user_id: 'alice', ip: 'not-an-ip' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /ip/,
  },
  {
    name: 'ip with an out-of-range octet',
    ...open({ user_id: 'alice', ip: '999.1.1.1' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /ip/,
  },
  {
    name: 'ip a number',
    ...open({ user_id: 'alice', ip: 2130706433 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /ip/,
  },
  {
    name: 'user_agent a number',
    ...open({ user_id: 'alice', user_agent: 5 }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_agent/,
  },

  // Fields the route does not know.
  {
    name: 'unknown field when opening a session',
    ...open({ user_id: 'alice', role: 'admin' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /role/,
  },
  {
    name: 'unknown field when introspecting',
    url: '/v1/sessions/introspect',
    payload: { token: 'sat_x', include_secret: true },
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /include_secret/,
  },
  {
    name: 'unknown field when creating an API key',
    url: '/v1/api-keys',
    payload: { name: 'ci', scopes: ['introspect'], expires: 'never' },
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /expires/,
  },
  {
    name: 'unknown scope when creating an API key',
    url: '/v1/api-keys',
    payload: { name: 'ci', scopes: ['root'] },
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /scopes/,
  },

  // Characters that have no place in an identifier, or that Postgres cannot store.
  {
    name: '\\u0000 in user_id',
    ...raw('{"user_id":"al\\u0000ice"}'),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: '\\u0000 inside a metadata value',
    ...raw('{"user_id":"alice","metadata":{"note":"a\\u0000b"}}'),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata|cannot be stored/,
  },
  {
    name: '\\u0000 inside a metadata key',
    ...raw('{"user_id":"alice","metadata":{"a\\u0000":1}}'),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata|cannot be stored/,
  },
  {
    name: '\\u0000 deep inside metadata',
    ...open({ user_id: 'alice', metadata: { a: [{ b: { c: 'x\u0000y' } }] } }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata|cannot be stored/,
  },
  {
    name: 'user_id with control characters',
    ...open({ user_id: 'al\u0007ice\r\n' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'user_id with DEL',
    ...open({ user_id: 'alice\u007f' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'user_id with a lone surrogate',
    ...raw('{"user_id":"al\\ud800ice"}'),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id/,
  },
  {
    name: 'a lone surrogate inside metadata',
    ...raw('{"user_id":"alice","metadata":{"note":"\\udfff"}}'),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /metadata|cannot be stored/,
  },
  {
    name: 'user_agent with a newline (log forging)',
    ...open({ user_id: 'alice', user_agent: 'Mozilla/5.0\n{"level":60,"msg":"forged"}' }),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_agent/,
  },

  // Sizes.
  {
    name: 'a 10 MB body',
    ...open({ user_id: 'alice', metadata: { blob: 'x'.repeat(10 * 1024 * 1024) } }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
    message: /too large/i,
  },
  {
    name: 'a 100 KB user_agent under the default body limit',
    ...open({ user_id: 'alice', user_agent: 'A'.repeat(100 * 1024) }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
    message: /too large/i,
  },
  {
    name: 'metadata over the size limit',
    ...open({ user_id: 'alice', metadata: { blob: 'x'.repeat(9000) } }),
    status: 400,
    code: 'METADATA_TOO_LARGE',
    message: /metadata is \d+ bytes.*limit is 8192/,
  },
  {
    name: 'a 9000-character token to introspect',
    url: '/v1/sessions/introspect',
    payload: { token: `sat_${'A'.repeat(8996)}` },
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /token/,
  },
  {
    name: 'token a number',
    url: '/v1/sessions/introspect',
    payload: { token: 12345 },
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /token/,
  },
  {
    name: 'token missing',
    url: '/v1/sessions/introspect',
    payload: {},
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /token/,
  },

  // SQL in identifiers: a session id is a UUID, so it never reaches a query.
  {
    name: 'SQL as a session id (GET)',
    method: 'GET',
    url: `/v1/sessions/${SQL_ID}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /id/,
  },
  {
    name: 'SQL as a session id (DELETE)',
    method: 'DELETE',
    url: `/v1/sessions/${SQL_ID}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /id/,
  },
  {
    name: 'SQL as current_session_id',
    method: 'GET',
    url: `/v1/users/alice/sessions?current_session_id=${SQL_ID}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /current_session_id/,
  },
  {
    name: 'SQL as an events cursor',
    method: 'GET',
    url: `/v1/users/alice/events?before=${SQL_ID}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /before/,
  },

  {
    name: 'malformed percent-encoding in a user_id path segment',
    method: 'GET',
    url: '/v1/users/%E0%A4%A/sessions',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id|url|path/i,
  },
  {
    name: 'malformed percent-encoding in a session id',
    method: 'GET',
    url: '/v1/sessions/%E0%A4%A',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /id|url|path/i,
  },
  {
    name: 'a 10 000-character user_id path segment',
    method: 'GET',
    url: `/v1/users/${'u'.repeat(10_000)}/sessions`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /user_id|path/i,
  },

  // Content types other than JSON.
  {
    name: 'text/plain body',
    url: '/v1/sessions',
    payload: '{"user_id":"alice"}',
    headers: { 'content-type': 'text/plain' },
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    message: /media type|content type/i,
  },
  {
    name: 'form-encoded body',
    url: '/v1/sessions',
    payload: 'user_id=alice',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    message: /media type|content type/i,
  },
  {
    name: 'XML body',
    url: '/v1/sessions/introspect',
    payload: '<token>sat_x</token>',
    headers: { 'content-type': 'application/xml' },
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    message: /media type|content type/i,
  },

  // Routes and methods that do not exist.
  {
    name: 'unknown route',
    method: 'GET',
    url: '/v1/nothing-here',
    status: 404,
    code: 'NOT_FOUND',
    message: /GET \/v1\/nothing-here/,
  },
  {
    name: 'unknown route below a known one',
    method: 'GET',
    url: `/v1/sessions/${A_UUID}/children`,
    status: 404,
    code: 'NOT_FOUND',
    message: /no route/,
  },
  {
    name: 'unknown route without credentials',
    method: 'POST',
    url: '/admin',
    anonymous: true,
    status: 404,
    code: 'NOT_FOUND',
    message: /POST \/admin/,
  },
  {
    name: 'unknown route with a query string (not echoed)',
    method: 'GET',
    url: '/v1/nothing?<script>=1',
    status: 404,
    code: 'NOT_FOUND',
    message: /^no route GET \/v1\/nothing$/,
  },
  {
    name: 'wrong method on a known path (PUT /v1/sessions)',
    method: 'PUT',
    url: '/v1/sessions',
    payload: { user_id: 'alice' },
    status: 405,
    code: 'METHOD_NOT_ALLOWED',
    message: /PUT/,
  },
  {
    name: 'wrong method on a known path (PATCH /v1/sessions/:id)',
    method: 'PATCH',
    url: `/v1/sessions/${A_UUID}`,
    payload: { status: 'active' },
    status: 405,
    code: 'METHOD_NOT_ALLOWED',
    message: /PATCH/,
  },

  // Query parameters.
  {
    name: 'limit=99999',
    method: 'GET',
    url: '/v1/users/alice/sessions?limit=99999',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /limit/,
  },
  {
    name: 'limit=0',
    method: 'GET',
    url: '/v1/users/alice/sessions?limit=0',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /limit/,
  },
  {
    name: 'limit not a number',
    method: 'GET',
    url: '/v1/users/alice/sessions?limit=ten',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /limit/,
  },
  {
    name: 'limit with 400 digits',
    method: 'GET',
    url: `/v1/users/alice/events?limit=${'9'.repeat(400)}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /limit/,
  },
  {
    name: 'limit given twice',
    method: 'GET',
    url: '/v1/users/alice/sessions?limit=1&limit=2',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /limit/,
  },
  {
    name: 'unknown query parameter',
    method: 'GET',
    url: '/v1/users/alice/sessions?debug=1',
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /debug/,
  },
  {
    name: 'events cursor beyond bigint',
    method: 'GET',
    url: `/v1/users/alice/events?before=${'9'.repeat(19)}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /before/,
  },
  {
    name: 'a 10 000-character revoke reason',
    method: 'DELETE',
    url: `/v1/sessions/${A_UUID}?reason=${'r'.repeat(10_000)}`,
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /reason/,
  },

  // Prototype poisoning.
  {
    name: '__proto__ key at the top level',
    ...raw('{"user_id":"alice","__proto__":{"isAdmin":true}}'),
    status: 400,
    code: 'INVALID_JSON',
    message: /JSON|prototype/,
  },
  {
    name: '__proto__ key inside metadata',
    ...raw('{"user_id":"alice","metadata":{"__proto__":{"polluted":true}}}'),
    status: 400,
    code: 'INVALID_JSON',
    message: /JSON|prototype/,
  },
  {
    name: 'constructor.prototype inside metadata',
    ...raw('{"user_id":"alice","metadata":{"constructor":{"prototype":{"polluted":true}}}}'),
    status: 400,
    code: 'INVALID_JSON',
    message: /JSON|prototype/,
  },
  {
    name: '__proto__ key when creating an API key',
    url: '/v1/api-keys',
    payload: '{"name":"ci","scopes":["introspect"],"__proto__":{"scopes":["admin"]}}',
    headers: JSON_TYPE,
    status: 400,
    code: 'INVALID_JSON',
    message: /JSON|prototype/,
  },

  // Credentials that are not.
  {
    name: 'no Authorization header',
    url: '/v1/sessions',
    payload: { user_id: 'alice' },
    anonymous: true,
    status: 401,
    code: 'UNAUTHORIZED',
    message: /Bearer/,
  },
  {
    name: 'Authorization with neither the Bearer nor the Basic scheme',
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: 'Digest username="admin"' },
    status: 401,
    code: 'UNAUTHORIZED',
    message: /Bearer/,
  },
  {
    name: 'HTTP Basic with credentials that are no API key',
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: 'Basic YWRtaW46YWRtaW4=' },
    status: 401,
    code: 'UNAUTHORIZED',
    message: /unknown or revoked/,
  },
  {
    name: 'HTTP Basic that is not base64 of id:key',
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: 'Basic %%%' },
    status: 401,
    code: 'UNAUTHORIZED',
    message: /Bearer/,
  },
  {
    name: 'a 10 000-character API key',
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: `Bearer ${'k'.repeat(10_000)}` },
    status: 401,
    code: 'UNAUTHORIZED',
    message: /unknown or revoked/,
  },
  {
    name: 'SQL as an API key',
    method: 'GET',
    url: '/v1/users/alice/sessions',
    headers: { authorization: "Bearer ' or 1=1--" },
    status: 401,
    code: 'UNAUTHORIZED',
    message: /unknown or revoked/,
  },
]

test('malformed input is refused with a 4xx in the error shape', async (t) => {
  const { app } = await buildTestApp(t)
  for (const c of cases) {
    await t.test(c.name, async () => {
      assertError(await inject(app, c), c.status, c.code, c.message)
    })
  }
  // None of the poisoned bodies reached an object's prototype, and no key was created by one.
  const probe = {} as Record<string, unknown>
  assert.equal(probe.isAdmin, undefined)
  assert.equal(probe.polluted, undefined)
  const keys = await inject(app, { method: 'GET', url: '/v1/api-keys' })
  assert.deepEqual(
    (keys.json() as { api_keys: Array<{ id: string }> }).api_keys.map((k) => k.id),
    ['env-admin'],
  )
})

test('a 100 KB user_agent is refused by its own limit when the body limit allows it', async (t) => {
  const { app } = await buildTestApp(t, { bodyLimitBytes: 1024 * 1024 })
  const res = await inject(app, open({ user_id: 'alice', user_agent: 'A'.repeat(100 * 1024) }))
  assertError(res, 400, 'VALIDATION_FAILED', /user_agent/)
  const fine = await inject(app, open({ user_id: 'alice', user_agent: 'A'.repeat(1024) }))
  assert.equal(fine.statusCode, 201, fine.body)
})

test('malformed tokens of sane length are simply inactive', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  const malformed = [
    '',
    'sat_',
    `${token}x`,
    token.slice(0, -1),
    `${token.slice(0, -1)}!`,
    ` ${token}`,
    token.toUpperCase(),
    `Bearer ${token}`,
    `sat_${'A'.repeat(43)}`,
    'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.',
    "' or 1=1--",
    "sat_'; drop table sessions;--",
    '\u0000',
    `sat_${'\u0000'.repeat(43)}`,
    '\ud800',
    '🔑'.repeat(20),
    'x'.repeat(8192),
  ]
  for (const bad of malformed) {
    const res = await inject(app, { url: '/v1/sessions/introspect', payload: { token: bad } })
    assert.equal(res.statusCode, 200, `${JSON.stringify(bad)}: ${res.body}`)
    assert.deepEqual(res.json(), { active: false }, JSON.stringify(bad))
  }
  // The real token still works after all that.
  const res = await inject(app, { url: '/v1/sessions/introspect', payload: { token } })
  assert.equal(res.json().active, true)
})

test('SQL in a user_id is just a string, and the tables survive it', async (t) => {
  const { app, config } = await buildTestApp(t)
  await openSession(app, { user_id: 'alice' })

  const list = await inject(app, { method: 'GET', url: `/v1/users/${SQL_USER}/sessions` })
  assert.equal(list.statusCode, 200, list.body)
  assert.deepEqual(list.json(), { sessions: [] })

  const events = await inject(app, { method: 'GET', url: `/v1/users/${SQL_USER}/events` })
  assert.equal(events.statusCode, 200, events.body)
  assert.deepEqual(events.json(), { events: [], next_cursor: null })

  const revoke = await inject(app, { method: 'DELETE', url: `/v1/users/${SQL_USER}/sessions` })
  assert.equal(revoke.statusCode, 200, revoke.body)
  assert.deepEqual(revoke.json(), { revoked: 0 })

  // The same string in a body is stored and found again as it is.
  const sqlUser = "x'; drop table sessions;--"
  const opened = await openSession(app, { user_id: sqlUser })
  assert.equal(opened.session.user_id, sqlUser)
  const again = await inject(app, { method: 'GET', url: `/v1/users/${SQL_USER}/sessions` })
  assert.deepEqual(
    (again.json() as { sessions: Array<{ id: string }> }).sessions.map((s) => s.id),
    [opened.session.id],
  )

  const sql = adminSql()
  try {
    const tables = await sql<{ name: string | null }[]>`
      select to_regclass(${`${config.dbSchema}.sessions`})::text as name
      union all select to_regclass(${`${config.dbSchema}.session_events`})::text`
    assert.deepEqual(
      tables.map((r) => r.name),
      [`${config.dbSchema}.sessions`, `${config.dbSchema}.session_events`],
    )
    const [count] = await sql<{ n: number }[]>`
      select count(*)::int as n from ${sql(config.dbSchema)}.sessions`
    assert.equal(count?.n, 2)
  } finally {
    await sql.end()
  }
  const alice = await inject(app, { method: 'GET', url: '/v1/users/alice/sessions' })
  assert.equal((alice.json() as { sessions: unknown[] }).sessions.length, 1)
})

test('a user_id of any accepted length can be used in the path', async (t) => {
  const { app } = await buildTestApp(t)
  for (const length of [100, 101, 256]) {
    await t.test(`${length} characters`, async () => {
      const userId = 'u'.repeat(length)
      const { session } = await openSession(app, { user_id: userId })
      const res = await inject(app, { method: 'GET', url: `/v1/users/${userId}/sessions` })
      assert.equal(res.statusCode, 200, res.body)
      assert.deepEqual(
        (res.json() as { sessions: Array<{ id: string }> }).sessions.map((s) => s.id),
        [session.id],
      )
    })
  }
  await t.test('257 characters', async () => {
    const res = await inject(app, { method: 'GET', url: `/v1/users/${'u'.repeat(257)}/sessions` })
    assertError(res, 400, 'VALIDATION_FAILED', /user_id/)
  })
})
