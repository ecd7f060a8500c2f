import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { adminSql, auth, buildTestApp, eventually, openSession } from './helper.ts'

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
    name: 'empty body with a JSON content type, where a body is required',
    ...raw(''),
    status: 400,
    code: 'VALIDATION_FAILED',
    message: /body/,
  },
  {
    name: 'a body of spaces with a JSON content type',
    ...raw('   '),
    status: 400,
    code: 'INVALID_JSON',
    message: /not valid JSON/,
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
    // The test's key may read sessions: it learns the token is unknown, and nothing else.
    assert.deepEqual(res.json(), { active: false, reason: 'unknown' }, JSON.stringify(bad))
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
  assert.deepEqual(list.json(), { sessions: [], total: 0, next_cursor: null })

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

/** `{"a":{"a":…}}` with `levels` objects, innermost `{}`. */
const nestedObjects = (levels: number) => `${'{"a":'.repeat(levels - 1)}{}${'}'.repeat(levels - 1)}`
/** `[[…]]` with `levels` arrays. */
const nestedArrays = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`

test('nesting deeper than JSON_MAX_DEPTH is refused before anything recurses over it', async (t) => {
  const { app, config } = await buildTestApp(t)
  assert.equal(config.jsonMaxDepth, 32)
  const tooDeep = /nested deeper than the limit of 32 levels/

  await t.test('metadata nested 4,200 levels (an 8 KB body)', async () => {
    const body = `{"user_id":"alice","metadata":${nestedObjects(4200)}}`
    assert.ok(body.length < 32 * 1024)
    const res = await inject(app, raw(body))
    assertError(res, 400, 'VALIDATION_FAILED', tooDeep)
  })
  await t.test('metadata of arrays nested 4,200 levels', async () => {
    const res = await inject(app, raw(`{"user_id":"alice","metadata":{"a":${nestedArrays(4200)}}}`))
    assertError(res, 400, 'VALIDATION_FAILED', tooDeep)
  })
  await t.test('scopes nested 12,000 levels when creating an API key', async () => {
    const res = await inject(app, {
      url: '/v1/api-keys',
      payload: `{"name":"ci","scopes":${nestedArrays(12_000)}}`,
      headers: JSON_TYPE,
    })
    assertError(res, 400, 'VALIDATION_FAILED', tooDeep)
  })
  await t.test('a body that is nothing but nesting, up to the body limit', async () => {
    const levels = config.bodyLimitBytes / 2
    const res = await inject(app, {
      url: '/v1/sessions/introspect',
      payload: nestedArrays(levels),
      headers: JSON_TYPE,
    })
    assertError(res, 400, 'VALIDATION_FAILED', tooDeep)
  })
  await t.test(
    'deep nesting under a constructor key (which the prototype-poisoning scan walks)',
    async () => {
      const res = await inject(
        app,
        raw(`{"user_id":"alice","metadata":{"constructor":${nestedArrays(5000)}}}`),
      )
      assertError(res, 400, 'VALIDATION_FAILED', tooDeep)
    },
  )
  await t.test('the limit itself is accepted, one more level is not', async () => {
    // The body is level 1 and metadata level 2: 31 levels of metadata make 32.
    const at = await inject(app, raw(`{"user_id":"alice","metadata":${nestedObjects(31)}}`))
    assert.equal(at.statusCode, 201, at.body)
    const over = await inject(app, raw(`{"user_id":"alice","metadata":${nestedObjects(32)}}`))
    assertError(over, 400, 'VALIDATION_FAILED', tooDeep)
  })
})

test('JSON_MAX_DEPTH is a setting', async (t) => {
  const { app } = await buildTestApp(t, { jsonMaxDepth: 4 })
  const ok = await inject(app, raw('{"user_id":"alice","metadata":{"a":{"b":{}}}}'))
  assert.equal(ok.statusCode, 201, ok.body)
  const res = await inject(app, raw('{"user_id":"alice","metadata":{"a":{"b":{"c":{}}}}}'))
  assertError(res, 400, 'VALIDATION_FAILED', /limit of 4 levels/)
})

test('form bodies and query strings cannot nest: bracketed and repeated keys stay flat', async (t) => {
  const { app } = await buildTestApp(t)
  const form = { 'content-type': 'application/x-www-form-urlencoded' }
  const bracketed = `token${'[a]'.repeat(3000)}=x`
  for (const [name, payload] of [
    ['bracketed form keys', `${bracketed}&token=sat_x`],
    ['a form key repeated 5,000 times', Array.from({ length: 5000 }, () => 'token=sat_x').join('&')],
    ['a form value of brackets', `token=${'%5B'.repeat(5000)}`],
  ] as const) {
    await t.test(name, async () => {
      const res = await inject(app, { url: '/oauth2/introspect', payload, headers: form })
      assert.ok(res.statusCode < 500, `${res.statusCode}: ${res.body}`)
      assertNoStack(res.body)
      if (res.statusCode !== 200)
        assertError(res, res.statusCode, (res.json() as { error: { code: string } }).error.code)
    })
  }
  for (const [name, query] of [
    ['bracketed query keys', `limit${'[a]'.repeat(3000)}=1`],
    ['a query key repeated 1,000 times', Array.from({ length: 1000 }, () => 'limit=1').join('&')],
    ['an empty query key and value', '&=&&='],
  ] as const) {
    await t.test(name, async () => {
      const res = await inject(app, { method: 'GET', url: `/v1/users/alice/sessions?${query}` })
      assertError(res, 400, 'VALIDATION_FAILED', /query/)
    })
  }
})

test('an empty body with a JSON content type is no body', async (t) => {
  const { app } = await buildTestApp(t)
  const { session } = await openSession(app)
  const revoke = await inject(app, {
    method: 'DELETE',
    url: `/v1/sessions/${session.id}`,
    payload: '',
    headers: JSON_TYPE,
  })
  assert.equal(revoke.statusCode, 200, revoke.body)
  const again = await inject(app, { method: 'GET', url: `/v1/sessions/${session.id}` })
  assert.equal((again.json() as { status: string }).status, 'revoked')

  const purge = await inject(app, { url: '/v1/admin/purge', payload: '', headers: JSON_TYPE })
  assert.equal(purge.statusCode, 200, purge.body)
  const charset = { 'content-type': 'application/json; charset=utf-8' }
  const users = await inject(app, {
    method: 'DELETE',
    url: '/v1/users/alice/sessions',
    payload: '',
    headers: charset,
  })
  assert.equal(users.statusCode, 200, users.body)

  // A route that needs a body still says so.
  for (const url of ['/v1/sessions', '/v1/sessions/introspect', '/v1/api-keys']) {
    assertError(await inject(app, { url, payload: '', headers: JSON_TYPE }), 400, 'VALIDATION_FAILED', /body/)
  }
})

test('every response says nosniff, and none may be cached but the JWK Set', async (t) => {
  const { app } = await buildTestApp(t)
  const { token } = await openSession(app)
  const cases: Array<Pick<Case, 'method' | 'url' | 'payload' | 'headers' | 'anonymous'>> = [
    { url: '/v1/sessions', payload: { user_id: 'bob' } },
    { url: '/v1/sessions/introspect', payload: { token } },
    { url: '/v1/api-keys', payload: { name: 'gw', scopes: ['introspect'] } },
    { method: 'GET', url: '/v1/api-keys' },
    { url: '/v1/sessions', payload: { user_id: 'bob' }, anonymous: true },
    { url: '/v1/sessions', payload: '{', headers: JSON_TYPE },
    { method: 'GET', url: '/v1/sessions/%E0%A4%A' },
    { method: 'GET', url: '/v1/nothing-here' },
    { method: 'PUT', url: '/v1/sessions' },
    {
      url: '/oauth2/introspect',
      payload: `token=${token}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    },
    {
      url: '/oauth2/introspect',
      payload: 'token=x',
      anonymous: true,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    },
    { method: 'GET', url: '/v1/forward-auth', anonymous: true },
    { method: 'GET', url: '/healthz', anonymous: true },
    { method: 'GET', url: '/readyz', anonymous: true },
    { method: 'GET', url: '/metrics', anonymous: true },
    { method: 'GET', url: '/openapi.json', anonymous: true },
  ]
  for (const c of cases) {
    const res = await inject(app, c)
    const what = `${c.method ?? 'POST'} ${c.url} → ${res.statusCode}`
    assert.equal(res.headers['x-content-type-options'], 'nosniff', what)
    assert.equal(res.headers['cache-control'], 'no-store', what)
  }
  const jwks = await inject(app, { method: 'GET', url: '/.well-known/jwks.json', anonymous: true })
  assert.equal(jwks.statusCode, 200)
  assert.equal(jwks.headers['x-content-type-options'], 'nosniff')
  assert.match(String(jwks.headers['cache-control']), /^public, max-age=\d+$/)
})

interface RawExchange {
  /** Everything the server sent. */
  received: string
  /** Milliseconds from the last write until the server ended the connection. */
  endedAfterMs: number
}

/** Writes `chunks` to the server on one connection and waits (at most `waitMs`) for the server to end it. */
function rawExchange(port: number, chunks: string[], waitMs: number): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let received = ''
    let wroteAt = 0
    const timer = setTimeout(() => {
      socket.destroy()
      reject(
        new Error(
          `the server kept the connection open for ${waitMs} ms; received: ${JSON.stringify(received)}`,
        ),
      )
    }, waitMs)
    socket.setEncoding('utf8')
    socket.on('data', (data: string) => {
      received += data
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ received, endedAfterMs: Date.now() - wroteAt })
    })
    socket.on('connect', () => {
      for (const chunk of chunks) socket.write(chunk)
      wroteAt = Date.now()
    })
  })
}

/** The status and JSON body of a raw HTTP/1.1 response. */
function parseRaw(text: string) {
  const [head = '', body = ''] = text.split('\r\n\r\n')
  const status = Number(head.split(' ')[1])
  return { status, head: head.toLowerCase(), body }
}

test('a client that stalls is cut off after REQUEST_TIMEOUT_MS; kept-alive connections are not', async (t) => {
  const timeoutMs = 500
  const { app } = await buildTestApp(t, { requestTimeoutMs: timeoutMs })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  // Generous: the point is that the connection ends at all, not how fast.
  const deadline = timeoutMs + 5000
  const head = (length: number) =>
    `POST /v1/sessions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${auth().authorization.slice(7)}\r\n` +
    `content-type: application/json\r\ncontent-length: ${length}\r\n\r\n`

  await t.test('a body that never ends', async () => {
    const exchange = await rawExchange(port, [head(100), '{"user_id":"al'], deadline)
    assert.ok(exchange.endedAfterMs <= deadline, `ended after ${exchange.endedAfterMs} ms`)
    if (exchange.received) {
      const res = parseRaw(exchange.received)
      assert.equal(res.status, 408, exchange.received)
      assert.match(res.head, /x-content-type-options: nosniff/)
      assert.deepEqual(Object.keys(JSON.parse(res.body).error).sort(), ['code', 'message'])
      assert.equal(JSON.parse(res.body).error.code, 'REQUEST_TIMEOUT')
    }
  })
  await t.test('headers that never end', async () => {
    const exchange = await rawExchange(port, ['GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: '], deadline)
    assert.ok(exchange.endedAfterMs <= deadline, `ended after ${exchange.endedAfterMs} ms`)
    if (exchange.received) assert.equal(parseRaw(exchange.received).status, 408, exchange.received)
  })
  await t.test('a connection that sends nothing', async () => {
    const exchange = await rawExchange(port, [], deadline)
    assert.ok(exchange.endedAfterMs <= deadline, `ended after ${exchange.endedAfterMs} ms`)
  })
  await t.test('a kept-alive connection idle longer than the request timeout still serves', async () => {
    const socket = connect(port, '127.0.0.1')
    t.after(() => socket.destroy())
    socket.setEncoding('utf8')
    let received = ''
    socket.on('data', (data: string) => {
      received += data
    })
    const request = 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'
    const answers = () => received.split('HTTP/1.1 200').length - 1
    await new Promise<void>((resolve) => socket.on('connect', resolve))
    socket.write(request)
    await eventually(() => answers() === 1, 5000, 'first answer')
    await new Promise((r) => setTimeout(r, timeoutMs * 3))
    assert.equal(socket.destroyed, false, 'the idle kept-alive connection was closed')
    socket.write(request)
    await eventually(() => answers() === 2, 5000, 'second answer on the same connection')
  })
})

test('what the HTTP server refuses is answered in the error shape too', async (t) => {
  const { app } = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const cases = [
    { name: 'not HTTP', send: 'HELLO\r\n\r\n', status: 400, code: 'VALIDATION_FAILED' },
    {
      name: 'a header without a colon',
      send: 'GET /healthz HTTP/1.1\r\nhost: x\r\nbroken\r\n\r\n',
      status: 400,
      code: 'VALIDATION_FAILED',
    },
    {
      name: 'headers over 16 KB',
      send: `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'b'.repeat(20_000)}\r\n\r\n`,
      status: 431,
      code: 'HEADERS_TOO_LARGE',
    },
  ]
  for (const c of cases) {
    await t.test(c.name, async () => {
      const exchange = await rawExchange(port, [c.send], 10_000)
      const res = parseRaw(exchange.received)
      assert.equal(res.status, c.status, exchange.received)
      assert.match(res.head, /content-type: application\/json/)
      assert.match(res.head, /x-content-type-options: nosniff/)
      assertNoStack(res.body)
      const body = JSON.parse(res.body) as { error: { code: string; message: string } }
      assert.deepEqual(Object.keys(body), ['error'])
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message'])
      assert.equal(body.error.code, c.code)
    })
  }
})
