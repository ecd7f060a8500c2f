import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { parse } from 'yaml'
import { auth, buildTestApp, CHROME_WINDOWS, eventually, twoReplicas } from './helper.ts'

// Tenant B's admin key walks every operation of openapi.yaml (and the routes
// the document hides) against tenant A's things: A's sessions (opaque, JWT,
// suspended), tokens, user, API key, webhook subscription and delivery. For
// each call B must read nothing of A's, change nothing of A's, and learn
// nothing of whether A's things exist: its answer is the one it gets for a
// thing that does not exist, ids aside. An operation without an entry in the
// table fails the walk, so a new route forces a decision.

const TENANT_B = 'b'
const SECRET = 'gateway-secret-0123456789abcdef'
const HOME_IP = '203.0.113.7'
const HTTP_METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete', 'options', 'trace'] as const
const GATEWAY_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
/** The order of the walk: reads first, deletions last (a leak that destroys A's thing would hide later ones). */
const WALK_ORDER = ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH', 'DELETE']
const PACKAGE_VERSION: string = JSON.parse(
  await readFile(new URL('../package.json', import.meta.url), 'utf8'),
).version
/** What fills the wildcard of a hidden route. */
const WILDCARD = 'orders/42'

/** What a call names: tenant A's things, or (the ghost) things of the same shapes that do not exist. */
interface Target {
  tenant: string
  userId: string
  sessionId: string
  jwtSessionId: string
  suspendedSessionId: string
  opaqueToken: string
  accessToken: string
  refreshToken: string
  suspendedToken: string
  keyId: string
  webhookId: string
  deliveryId: string
}

/** An API key: who calls. */
interface Caller {
  key: string
  keyId: string
}

type Check = (res: LightMyRequestResponse, x: Target) => void

interface Call {
  /** What the call tries (in failure messages). */
  what: string
  params?: (x: Target) => Record<string, string>
  query?: (x: Target) => Record<string, string>
  body?: (x: Target) => Record<string, unknown>
  /** A form-encoded body (the /oauth2 endpoints). */
  form?: (x: Target) => Record<string, string>
  headers?: (x: Target) => Record<string, string>
  /**
   * How the caller's API key is sent: Bearer (the default), HTTP Basic with
   * its id, client_id and client_secret in the form, or not at all (public
   * routes and gateways).
   */
  auth?: 'bearer' | 'basic' | 'form' | 'none'
  expect: Check
}

interface Entry {
  /** What tenant B's admin key (or a gateway serving only B) tries, and must get. */
  calls: Call[]
  /** The same operation by A (read-only ones): A does see what B was refused, so the table names real things. */
  own?: Omit<Call, 'what'>
  /** A forward-auth route: B's calls go to the replica whose gateway serves only B, A's to the one serving A. */
  gateway?: true
}

// ---------------------------------------------------------------------------
// What B must get
// ---------------------------------------------------------------------------

const status =
  (code: number): Check =>
  (res) =>
    assert.equal(res.statusCode, code, res.body)

const error =
  (code: number, name: string): Check =>
  (res) => {
    assert.equal(res.statusCode, code, res.body)
    assert.equal(res.json().error.code, name, res.body)
  }

const notFound = (name: string) => error(404, name)
/** A platform route: a tenant's admin does not pass. */
const platformOnly = error(403, 'FORBIDDEN')

const json =
  (code: number, body: unknown): Check =>
  (res) => {
    assert.equal(res.statusCode, code, res.body)
    assert.deepEqual(res.json(), body)
  }

const inactive = json(200, { active: false })
/** The self-service API answering an API key, which is no session token. */
const notYours: Check = (res) => {
  assert.equal(res.statusCode, 401, res.body)
  assert.equal(res.json().error.code, 'SESSION_INACTIVE', res.body)
  assert.equal(res.json().error.reason, 'unknown', res.body)
}
/** What /v1 introspection tells a key that may read sessions about a token it cannot see: unknown. */
const unknownToken = json(200, { active: false, reason: 'unknown' })
const revokedNone = json(200, { revoked: 0 })
const noEvents = json(200, { events: [], next_cursor: null })
/** RFC 7009: 200 with an empty body, whether something was revoked or not. */
const revokeAnswered: Check = (res) => {
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.body, '')
}
const denied: Check = (res) => {
  assert.equal(res.statusCode, 401, res.body)
  assert.equal(res.headers['x-auth-user-id'], undefined)
}

/** A's own call of a read: 200 and the named thing in it. */
const sees =
  (field: keyof Target): Check =>
  (res, x) => {
    assert.equal(res.statusCode, 200, res.body)
    assert.ok(res.body.includes(x[field]), `${field} ${x[field]} not in ${res.body.slice(0, 500)}`)
  }

const activeFor: Check = (res, x) => {
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().active, true, res.body)
  assert.ok(res.body.includes(x.userId), res.body)
}

// ---------------------------------------------------------------------------
// The table: one entry per operation
// ---------------------------------------------------------------------------

/** One call per token of A's, sent as `{ token }` in a JSON or a form body. */
function tokenCalls(expect: Check, encoding: 'body' | 'form', rest: Partial<Call> = {}): Call[] {
  const tokens: Array<[string, keyof Target]> = [
    ["A's opaque token", 'opaqueToken'],
    ["A's access JWT", 'accessToken'],
    ["A's refresh token", 'refreshToken'],
    ["A's suspended session's token", 'suspendedToken'],
  ]
  return tokens.map(([what, name]) => ({
    what,
    expect,
    [encoding]: (x: Target) => ({ token: x[name] }),
    ...rest,
  }))
}

/** The calls of an /oauth2 endpoint: tokens form-encoded, B authenticated with HTTP Basic (and once in the form). */
const oauthCalls = (expect: Check): Call[] => [
  ...tokenCalls(expect, 'form', { auth: 'basic' }),
  {
    what: "A's opaque token, client_secret_post",
    auth: 'form',
    expect,
    form: (x) => ({ token: x.opaqueToken }),
  },
]

const sessionIds = (expect: Check, extra: Omit<Call, 'what' | 'expect' | 'params'> = {}): Call[] => [
  { what: "A's opaque session", params: (x) => ({ id: x.sessionId }), expect, ...extra },
  { what: "A's JWT session", params: (x) => ({ id: x.jwtSessionId }), expect, ...extra },
  { what: "A's suspended session", params: (x) => ({ id: x.suspendedSessionId }), expect, ...extra },
]

const gatewayEntry: Entry = {
  gateway: true,
  calls: [
    {
      what: "A's opaque token at a gateway serving only B",
      auth: 'none',
      headers: (x) => gatewayHeaders(x.opaqueToken),
      expect: denied,
    },
    {
      what: "A's access JWT at a gateway serving only B",
      auth: 'none',
      headers: (x) => gatewayHeaders(x.accessToken),
      expect: denied,
    },
  ],
  own: {
    auth: 'none',
    headers: (x) => gatewayHeaders(x.accessToken),
    expect: (res, x) => {
      assert.equal(res.statusCode, 200, res.body)
      assert.equal(res.headers['x-auth-user-id'], x.userId)
      assert.equal(res.headers['x-auth-session-id'], x.jwtSessionId)
    },
  },
}

function gatewayHeaders(token: string) {
  return { 'x-forward-auth-secret': SECRET, authorization: `Bearer ${token}`, 'user-agent': CHROME_WINDOWS }
}

/** Every operation of openapi.yaml, as `METHOD /path/{param}`. */
const TABLE: Record<string, Entry> = {
  'GET /metrics': { calls: [{ what: 'the metrics', expect: status(200) }] },
  // The end user's own API: B's API key is no session token (the sessions of a token's own tenant only
  // are the subject of test/self-service.test.ts).
  'GET /v1/me/sessions': { calls: [{ what: "B's key as a session token", expect: notYours }] },
  'GET /v1/me/events': { calls: [{ what: "B's key as a session token", expect: notYours }] },
  'POST /v1/me/sessions/revoke-others': {
    calls: [{ what: "B's key as a session token", body: () => ({}), expect: notYours }],
  },
  'POST /v1/me/sessions/revoke-all': {
    calls: [{ what: "B's key as a session token", body: () => ({}), expect: notYours }],
  },
  'POST /v1/me/sessions/{id}/revoke': {
    calls: sessionIds(notYours, { body: () => ({}) }),
  },
  'GET /healthz': { calls: [{ what: 'the liveness probe', expect: json(200, { status: 'ok' }) }] },
  'GET /readyz': { calls: [{ what: 'the readiness probe', expect: status(200) }] },

  'POST /v1/sessions': {
    calls: [
      {
        what: "a login of B's own user",
        body: () => ({ user_id: 'user-b', ip: HOME_IP, user_agent: CHROME_WINDOWS }),
        expect: (res) => {
          assert.equal(res.statusCode, 201, res.body)
          assert.equal(res.json().session.user_id, 'user-b')
        },
      },
    ],
  },
  'POST /v1/sessions/refresh': {
    calls: [
      {
        what: "A's refresh token",
        body: (x) => ({ refresh_token: x.refreshToken }),
        expect: error(400, 'REFRESH_TOKEN_INVALID'),
      },
    ],
  },
  'POST /v1/sessions/introspect': {
    calls: tokenCalls(unknownToken, 'body'),
    own: {
      body: (x) => ({ token: x.opaqueToken, ip: HOME_IP, user_agent: CHROME_WINDOWS }),
      expect: activeFor,
    },
  },
  'GET /v1/sessions/{id}': {
    calls: [
      ...sessionIds(notFound('SESSION_NOT_FOUND')),
      {
        what: "A's session, naming A's tenant in x-tenant-id",
        params: (x) => ({ id: x.sessionId }),
        headers: (x) => ({ 'x-tenant-id': x.tenant }),
        expect: notFound('TENANT_NOT_FOUND'),
      },
    ],
    own: { params: (x) => ({ id: x.sessionId }), expect: sees('sessionId') },
  },
  'DELETE /v1/sessions/{id}': {
    calls: [
      ...sessionIds(notFound('SESSION_NOT_FOUND')),
      {
        what: "A's session, logging its user out everywhere",
        params: (x) => ({ id: x.sessionId }),
        query: () => ({ scope: 'user' }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
    ],
  },
  'POST /v1/sessions/{id}/revoke': {
    calls: [
      ...sessionIds(notFound('SESSION_NOT_FOUND'), { body: () => ({ reason: 'b' }) }),
      {
        what: "A's session, logging its user out everywhere",
        params: (x) => ({ id: x.sessionId }),
        body: () => ({ scope: 'user' }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
    ],
  },
  'POST /v1/sessions/revoke': {
    calls: [
      ...tokenCalls(notFound('SESSION_NOT_FOUND'), 'body'),
      {
        what: "A's opaque token, logging its user out everywhere",
        body: (x) => ({ token: x.opaqueToken, scope: 'user' }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
    ],
  },
  'POST /v1/sessions/{id}/suspend': {
    calls: sessionIds(notFound('SESSION_NOT_FOUND'), { body: () => ({ reason: 'b' }) }),
  },
  'POST /v1/sessions/{id}/resume': {
    calls: sessionIds(notFound('SESSION_NOT_FOUND'), { body: () => ({ ip: '198.51.100.1' }) }),
  },
  'POST /v1/admin/sessions/revoke': {
    calls: [
      { what: "A's user", body: (x) => ({ user_ids: [x.userId] }), expect: revokedNone },
      {
        what: "every user but B's own",
        body: () => ({ all_users_except: ['user-b'] }),
        expect: revokedNone,
      },
    ],
  },
  'POST /v1/admin/purge': { calls: [{ what: 'a purge of every tenant', expect: platformOnly }] },

  ...Object.fromEntries(GATEWAY_METHODS.map((method) => [`${method} /v1/forward-auth`, gatewayEntry])),

  'POST /oauth2/introspect': {
    calls: oauthCalls(inactive),
    own: { auth: 'basic', form: (x) => ({ token: x.opaqueToken }), expect: activeFor },
  },
  'POST /oauth2/revoke': { calls: oauthCalls(revokeAnswered) },

  'POST /v1/webhooks': {
    calls: [
      {
        what: "a subscription of B's own",
        body: () => ({ url: 'https://hooks.example.com/b' }),
        expect: status(201),
      },
    ],
  },
  'GET /v1/webhooks': {
    calls: [{ what: 'the list', expect: status(200) }],
    own: { expect: sees('webhookId') },
  },
  'GET /v1/webhooks/{id}': {
    calls: [
      {
        what: "A's subscription",
        params: (x) => ({ id: x.webhookId }),
        expect: notFound('WEBHOOK_NOT_FOUND'),
      },
    ],
    own: { params: (x) => ({ id: x.webhookId }), expect: sees('webhookId') },
  },
  'PATCH /v1/webhooks/{id}': {
    calls: [
      {
        what: "A's subscription, sent elsewhere and disabled",
        params: (x) => ({ id: x.webhookId }),
        body: () => ({ url: 'https://evil.example.com/', enabled: false }),
        expect: notFound('WEBHOOK_NOT_FOUND'),
      },
    ],
  },
  'DELETE /v1/webhooks/{id}': {
    calls: [
      {
        what: "A's subscription",
        params: (x) => ({ id: x.webhookId }),
        expect: notFound('WEBHOOK_NOT_FOUND'),
      },
    ],
  },
  'GET /v1/webhooks/{id}/deliveries': {
    calls: [
      {
        what: "A's subscription's deliveries",
        params: (x) => ({ id: x.webhookId }),
        expect: notFound('WEBHOOK_NOT_FOUND'),
      },
    ],
    own: {
      params: (x) => ({ id: x.webhookId }),
      expect: (res, x) => {
        assert.equal(res.statusCode, 200, res.body)
        assert.ok(
          res.json().deliveries.some((d: { id: string }) => d.id === x.deliveryId),
          res.body,
        )
      },
    },
  },
  'POST /v1/webhooks/deliveries/{delivery_id}/retry': {
    calls: [
      {
        what: "A's delivery",
        params: (x) => ({ delivery_id: x.deliveryId }),
        expect: notFound('DELIVERY_NOT_FOUND'),
      },
    ],
  },
  'GET /v1/events': {
    calls: [
      { what: 'every event', expect: status(200) },
      { what: "A's user's events", query: (x) => ({ user_id: x.userId }), expect: noEvents },
    ],
    own: { query: (x) => ({ user_id: x.userId }), expect: sees('sessionId') },
  },

  'GET /v1/users/{user_id}/sessions': {
    calls: [
      {
        what: "A's user",
        params: (x) => ({ user_id: x.userId }),
        query: (x) => ({ current_session_id: x.sessionId }),
        expect: json(200, { sessions: [], total: 0, next_cursor: null }),
      },
    ],
    own: { params: (x) => ({ user_id: x.userId }), expect: sees('jwtSessionId') },
  },
  'DELETE /v1/users/{user_id}/sessions': {
    calls: [
      { what: "A's user", params: (x) => ({ user_id: x.userId }), expect: revokedNone },
      {
        what: "A's user but one of A's sessions",
        params: (x) => ({ user_id: x.userId }),
        query: (x) => ({ except_session_id: x.sessionId }),
        expect: revokedNone,
      },
    ],
  },
  'POST /v1/users/{user_id}/sessions/revoke': {
    calls: [
      { what: "A's user", params: (x) => ({ user_id: x.userId }), expect: revokedNone },
      {
        what: "A's user but one of A's sessions",
        params: (x) => ({ user_id: x.userId }),
        body: (x) => ({ except_session_id: x.sessionId, reason: 'b' }),
        expect: revokedNone,
      },
    ],
  },
  'POST /v1/users/{user_id}/sessions/{id}/revoke': {
    calls: [
      {
        what: "A's user's session",
        params: (x) => ({ user_id: x.userId, id: x.sessionId }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
      {
        what: "A's user's JWT session",
        params: (x) => ({ user_id: x.userId, id: x.jwtSessionId }),
        body: () => ({ reason: 'b' }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
    ],
  },
  'DELETE /v1/users/{user_id}/sessions/{id}': {
    calls: [
      {
        what: "A's user's session",
        params: (x) => ({ user_id: x.userId, id: x.sessionId }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
      {
        what: "A's user's JWT session",
        params: (x) => ({ user_id: x.userId, id: x.jwtSessionId }),
        expect: notFound('SESSION_NOT_FOUND'),
      },
    ],
  },
  'GET /v1/users/{user_id}/events': {
    calls: [{ what: "A's user", params: (x) => ({ user_id: x.userId }), expect: noEvents }],
    own: { params: (x) => ({ user_id: x.userId }), expect: sees('suspendedSessionId') },
  },

  'POST /v1/api-keys': {
    calls: [
      {
        what: "a key of A's tenant",
        body: (x) => ({ name: 'into a', scopes: ['admin'], tenant_id: x.tenant }),
        expect: notFound('TENANT_NOT_FOUND'),
      },
      {
        what: 'a key that spans tenants',
        body: () => ({ name: 'platform', scopes: ['platform'] }),
        expect: platformOnly,
      },
      {
        what: "a key of B's own",
        body: () => ({ name: 'own', scopes: ['introspect'] }),
        expect: (res) => {
          assert.equal(res.statusCode, 201, res.body)
          assert.equal(res.json().api_key.tenant_id, TENANT_B)
        },
      },
    ],
  },
  'GET /v1/api-keys': {
    calls: [{ what: 'the list', expect: status(200) }],
    own: { expect: sees('keyId') },
  },
  'DELETE /v1/api-keys/{id}': {
    calls: [{ what: "A's key", params: (x) => ({ id: x.keyId }), expect: notFound('API_KEY_NOT_FOUND') }],
  },

  'POST /v1/tenants': {
    calls: [{ what: 'a new tenant', body: () => ({ id: 'c', name: 'C' }), expect: platformOnly }],
  },
  'GET /v1/tenants': { calls: [{ what: 'the list', expect: platformOnly }] },
  'GET /v1/tenants/{id}': {
    calls: [{ what: "A's tenant", params: (x) => ({ id: x.tenant }), expect: platformOnly }],
  },
  'PATCH /v1/tenants/{id}': {
    calls: [
      {
        what: "A's tenant, a longer idle timeout",
        params: (x) => ({ id: x.tenant }),
        body: () => ({ settings: { idle_timeout: 31_536_000 } }),
        expect: platformOnly,
      },
    ],
  },

  'GET /.well-known/jwks.json': { calls: [{ what: 'the public keys', auth: 'none', expect: status(200) }] },
  'GET /v1/signing-keys': { calls: [{ what: 'the public parts', expect: status(200) }] },
  'POST /v1/signing-keys/rotate': {
    calls: [{ what: 'a new key for every tenant', expect: platformOnly }],
  },

  'GET /openapi.json': { calls: [{ what: 'the document', auth: 'none', expect: status(200) }] },

  // The widget is one public file, the same for every caller: nothing of any tenant's in it.
  'GET /widget/session-devices.js': {
    calls: [{ what: 'the devices element', auth: 'none', expect: status(200) }],
  },
  'GET /widget/{version}/session-devices.js': {
    calls: [
      {
        what: "this version's devices element",
        auth: 'none',
        params: () => ({ version: PACKAGE_VERSION }),
        expect: status(200),
      },
    ],
  },
}

/** Routes the document hides (`schema: { hide: true }`): they get entries too. */
const HIDDEN: Record<string, Entry> = {
  'GET /openapi.yaml': { calls: [{ what: 'the document', auth: 'none', expect: status(200) }] },
  ...Object.fromEntries(
    [
      '/v1/me/sessions',
      '/v1/me/sessions/{id}/revoke',
      '/v1/me/sessions/revoke-others',
      '/v1/me/sessions/revoke-all',
      '/v1/me/events',
    ].map((path) => [
      `OPTIONS ${path}`,
      {
        calls: [
          {
            what: 'a CORS preflight',
            auth: 'none',
            params: (x: Target) => ({ id: x.sessionId }),
            expect: status(204),
          },
        ],
      },
    ]),
  ),
  ...Object.fromEntries(GATEWAY_METHODS.map((method) => [`${method} /v1/forward-auth/*`, gatewayEntry])),
}

// ---------------------------------------------------------------------------
// The operations: of the document, and of the app itself
// ---------------------------------------------------------------------------

async function documentedOperations(): Promise<string[]> {
  const text = await readFile(new URL('../openapi.yaml', import.meta.url), 'utf8')
  const doc = parse(text) as { paths: Record<string, Record<string, unknown>> }
  const operations: string[] = []
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of HTTP_METHODS) {
      if (item[method]) operations.push(`${method.toUpperCase()} ${path}`)
    }
  }
  return operations
}

/**
 * The routes the app answers, as `METHOD /path/{param}`, read from Fastify's
 * route tree; the HEAD that Fastify adds beside a GET is left out (the walk
 * sends it beside every GET).
 */
function appRoutes(app: FastifyInstance): string[] {
  const stack: string[] = []
  const routes = new Set<string>()
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const start = line.search(/[^│├└─\s]/)
    if (start < 0) continue
    const depth = start / 4 - 1
    const match = /^(\S+)(?: \(([A-Z, ]+)\))?$/.exec(line.slice(start).trim())
    if (!match?.[1]) continue
    // The wildcard child of /v1/forward-auth is printed as `*`.
    const piece = match[1].startsWith('/') ? match[1] : `/${match[1]}`
    stack.length = depth
    stack.push(piece)
    const path = stack.join('').replace(/:(\w+)/g, '{$1}')
    for (const method of match[2]?.split(', ') ?? []) routes.add(`${method} ${path}`)
  }
  return [...routes].filter((route) => {
    const [method, path] = route.split(' ')
    return !(method === 'HEAD' && routes.has(`GET ${path}`) && !TABLE[route] && !HIDDEN[route])
  })
}

// ---------------------------------------------------------------------------
// The world: tenant A with its things, tenant B with its admin key
// ---------------------------------------------------------------------------

const hex = (bytes: number) => randomBytes(bytes).toString('hex')
const basic = (caller: Caller) =>
  `Basic ${Buffer.from(`${encodeURIComponent(caller.keyId)}:${encodeURIComponent(caller.key)}`).toString('base64')}`

async function expectOk(res: LightMyRequestResponse | Promise<LightMyRequestResponse>, code = 200) {
  const done = await res
  assert.equal(done.statusCode, code, done.body)
  return done.json()
}

async function createTenantKey(app: FastifyInstance, tenant: string | undefined): Promise<Caller> {
  const body = await expectOk(
    app.inject({
      method: 'POST',
      url: '/v1/api-keys',
      headers: auth(),
      payload: { name: `admin of ${tenant ?? 'default'}`, scopes: ['admin'], tenant_id: tenant },
    }),
    201,
  )
  return { key: body.key, keyId: body.api_key.id }
}

/**
 * Two replicas on one schema: `main`, whose gateway serves tenant A
 * (`default`), and `gatewayB`, whose gateway serves only tenant B. Neither
 * sends webhooks, so A's delivery stays as it is made.
 */
async function setUp(t: TestContext) {
  const common = { forwardAuthSecret: SECRET, webhookPollMs: 0, apiKeyCacheTtlMs: 0 }
  const [main, gatewayB] = await twoReplicas(t, common, { ...common, forwardAuthTenants: TENANT_B })
  await expectOk(
    main.app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(),
      payload: { id: TENANT_B, name: 'B' },
    }),
    201,
  )
  const a = await createTenantKey(main.app, undefined)
  const b = await createTenantKey(main.app, TENANT_B)
  const userId = `user-a-${hex(6)}`
  const asA = (options: InjectOptions) =>
    main.app.inject({ ...options, headers: { ...auth(a.key), ...options.headers } })

  // The subscription first, so A's first login is delivered to it.
  const { webhook } = await expectOk(
    asA({ method: 'POST', url: '/v1/webhooks', payload: { url: 'https://hooks.example.com/a' } }),
    201,
  )
  const open = (body: Record<string, unknown>) =>
    expectOk(
      asA({
        method: 'POST',
        url: '/v1/sessions',
        payload: { user_id: userId, ip: HOME_IP, user_agent: CHROME_WINDOWS, ...body },
      }),
      201,
    )
  const metadata = { plan: `plan-${hex(6)}` }
  const opaque = await open({ metadata })
  const jwt = await open({ token_type: 'jwt', metadata })
  const suspended = await open({ metadata })
  await expectOk(asA({ method: 'POST', url: `/v1/sessions/${suspended.session.id}/suspend`, payload: {} }))

  let deliveryId = ''
  await eventually(
    async () => {
      const res = await asA({ method: 'GET', url: `/v1/webhooks/${webhook.id}/deliveries` })
      deliveryId = (res.json().deliveries as Array<{ id: string }> | undefined)?.at(-1)?.id ?? ''
      return deliveryId !== ''
    },
    10_000,
    "a delivery of A's first login",
  )

  const target: Target = {
    tenant: 'default',
    userId,
    sessionId: opaque.session.id,
    jwtSessionId: jwt.session.id,
    suspendedSessionId: suspended.session.id,
    opaqueToken: opaque.token,
    accessToken: jwt.access_token,
    refreshToken: jwt.refresh_token,
    suspendedToken: suspended.token,
    keyId: a.keyId,
    webhookId: webhook.id,
    deliveryId,
  }
  // Nothing B's answers may hold (a delivery id is a small number: it is looked for in no answer).
  const secrets: Record<string, string> = {
    ...Object.fromEntries(
      Object.entries(target).filter(([name]) => !['tenant', 'deliveryId'].includes(name)),
    ),
    key: a.key,
    metadata: metadata.plan,
  }
  return { main, gatewayB, a, b, target, ghost: ghostOf(target), secrets }
}

/** Things of the same shapes as A's that do not exist (a JWT of an unknown session, its signature then wrong). */
function ghostOf(x: Target): Target {
  const token = (prefix: string) => prefix + randomBytes(32).toString('base64url')
  const [header, payload] = x.accessToken.split('.') as [string, string]
  const sessionId = randomUUID()
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
  const forged = { ...claims, sid: sessionId, sub: `user-g-${hex(6)}`, jti: randomUUID() }
  return {
    tenant: `nosuch${hex(4)}`,
    userId: `user-g-${hex(6)}`,
    sessionId: randomUUID(),
    jwtSessionId: sessionId,
    suspendedSessionId: randomUUID(),
    opaqueToken: token('sat_'),
    accessToken: `${header}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${randomBytes(64).toString('base64url')}`,
    refreshToken: token('srt_'),
    suspendedToken: token('sat_'),
    keyId: `key_${hex(8)}`,
    webhookId: `wh_${hex(8)}`,
    deliveryId: String(900_000_000_000 + Math.floor(Math.random() * 1_000_000)),
  }
}

/** The request of a call of an operation, naming the things of `x`, made by `caller`. */
function requestOf(operation: string, call: Omit<Call, 'what'>, x: Target, caller: Caller): InjectOptions {
  const [method, template] = operation.split(' ') as [InjectOptions['method'], string]
  const params = call.params?.(x) ?? {}
  const path = template
    .replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = params[name]
      if (value === undefined) throw new Error(`${operation}: no value for {${name}}`)
      return encodeURIComponent(value)
    })
    .replace('*', WILDCARD)
  const query = call.query ? `?${new URLSearchParams(call.query(x))}` : ''
  const how = call.auth ?? 'bearer'
  const headers: Record<string, string> = {}
  if (how === 'bearer') headers.authorization = `Bearer ${caller.key}`
  if (how === 'basic') headers.authorization = basic(caller)
  let payload: string | undefined
  if (call.form) {
    const form = call.form(x)
    if (how === 'form') Object.assign(form, { client_id: caller.keyId, client_secret: caller.key })
    headers['content-type'] = 'application/x-www-form-urlencoded'
    payload = new URLSearchParams(form).toString()
  } else if (call.body) {
    headers['content-type'] = 'application/json'
    payload = JSON.stringify(call.body(x))
  }
  Object.assign(headers, call.headers?.(x))
  return { method, url: path + query, headers, ...(payload === undefined ? {} : { payload }) }
}

const requestText = (request: InjectOptions) =>
  `${request.url} ${JSON.stringify(request.headers)} ${String(request.payload ?? '')}`

/** The things of a Target a call names: those whose value, swapped for the ghost's, changes the request. */
function namedBy(operation: string, call: Call, target: Target, ghost: Target, caller: Caller) {
  const text = requestText(requestOf(operation, call, target, caller))
  return (Object.keys(target) as Array<keyof Target>).filter(
    (name) => requestText(requestOf(operation, call, { ...target, [name]: ghost[name] }, caller)) !== text,
  )
}

/** An answer with every thing of `x` the request named written as its name: what an echo looks like. */
function normalized(res: LightMyRequestResponse, named: Array<keyof Target>, x: Target) {
  let body = res.body
  for (const name of [...named].sort((p, q) => x[q].length - x[p].length)) {
    body = body.replaceAll(x[name], `<${name}>`)
  }
  return {
    status: res.statusCode,
    body,
    'content-type': res.headers['content-type'],
    'www-authenticate': res.headers['www-authenticate'],
  }
}

/** Nothing of A's in the answer, but what the request itself named (compared with the ghost's answer instead). */
function assertReadsNothing(
  res: LightMyRequestResponse,
  echoes: string[],
  secrets: Record<string, string>,
  why: string,
) {
  const headers = JSON.stringify(res.headers)
  for (const [name, value] of Object.entries(secrets)) {
    if (echoes.includes(value)) continue
    assert.ok(!res.body.includes(value), `${why}: the answer holds A's ${name}: ${res.body.slice(0, 500)}`)
    assert.ok(!headers.includes(value), `${why}: a header holds A's ${name}: ${headers}`)
  }
}

/** What A sees of its own things (reads that change nothing), per replica. */
async function snapshot(main: FastifyInstance, gatewayB: FastifyInstance, a: Caller, x: Target) {
  const reads: Array<[string, FastifyInstance, InjectOptions]> = []
  const get = (url: string, app = main) =>
    reads.push([`${url} (${app === main ? 'main' : 'gateway B'})`, app, { method: 'GET', url }])
  for (const id of [x.sessionId, x.jwtSessionId, x.suspendedSessionId]) {
    get(`/v1/sessions/${id}`)
    get(`/v1/sessions/${id}`, gatewayB)
  }
  get(`/v1/users/${x.userId}/sessions`)
  get(`/v1/users/${x.userId}/events?limit=200`)
  get('/v1/events?limit=200')
  get('/v1/api-keys')
  get('/v1/webhooks')
  get(`/v1/webhooks/${x.webhookId}`)
  get(`/v1/webhooks/${x.webhookId}/deliveries`)
  // Looking at a refresh token does not count as a use: unspent, it stays active.
  reads.push([
    'the refresh token',
    main,
    {
      method: 'POST',
      url: '/oauth2/introspect',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ token: x.refreshToken }).toString(),
    },
  ])
  const seen: Record<string, string> = {}
  for (const [label, app, options] of reads) {
    const res = await app.inject({ ...options, headers: { ...options.headers, ...auth(a.key) } })
    seen[label] = `${res.statusCode} ${res.body}`
  }
  return seen
}

/**
 * One call of B: what it must get, nothing of A's read, and the answer it
 * gets for things that do not exist (ids aside); beside a GET, the HEAD too.
 */
async function checkCall(
  app: FastifyInstance,
  operation: string,
  call: Call,
  {
    target,
    ghost,
    b,
    secrets,
  }: { target: Target; ghost: Target; b: Caller; secrets: Record<string, string> },
) {
  const why = `${operation}: ${call.what}`
  const request = requestOf(operation, call, target, b)
  const named = namedBy(operation, call, target, ghost, b)
  const echoes = named.map((name) => target[name])
  const res = await app.inject(request)
  call.expect(res, target)
  assertReadsNothing(res, echoes, secrets, why)

  if (named.length > 0) {
    const answer = await app.inject(requestOf(operation, call, ghost, b))
    assert.deepEqual(
      normalized(res, named, target),
      normalized(answer, named, ghost),
      `${why}: answered unlike for a thing that does not exist`,
    )
  }
  if (request.method === 'GET') {
    const head = await app.inject({ ...request, method: 'HEAD' })
    assert.equal(head.statusCode, res.statusCode, `${why}: HEAD answered ${head.statusCode}`)
    assertReadsNothing(head, echoes, secrets, `${why} (HEAD)`)
  }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

test('every operation of openapi.yaml and every route of the app has an entry, and no entry is stale', async (t) => {
  const documented = await documentedOperations()
  assert.ok(documented.length > 30, `only ${documented.length} operations parsed`)
  const missing = documented.filter((operation) => !TABLE[operation])
  assert.deepEqual(missing, [], `no entry for: ${missing.join(', ')} (decide what tenant B must get)`)
  const stale = Object.keys(TABLE).filter((operation) => !documented.includes(operation))
  assert.deepEqual(
    stale,
    [],
    `entries of no documented operation: ${stale.join(', ')} (hidden ones go in HIDDEN)`,
  )

  const { app } = await buildTestApp(t)
  await app.ready()
  const routes = appRoutes(app)
  assert.ok(
    routes.includes('GET /v1/sessions/{id}') && routes.includes('GET /v1/forward-auth/*'),
    routes.join(', '),
  )
  const unlisted = routes.filter((route) => !TABLE[route] && !HIDDEN[route])
  assert.deepEqual(unlisted, [], `routes with no entry: ${unlisted.join(', ')}`)
  const gone = Object.keys(HIDDEN).filter((route) => !routes.includes(route))
  assert.deepEqual(gone, [], `hidden entries of no route: ${gone.join(', ')}`)
})

test("tenant B reads, changes and learns nothing of tenant A's things, on every operation", async (t) => {
  const { main, gatewayB, a, b, target, ghost, secrets } = await setUp(t)
  let before = await snapshot(main.app, gatewayB.app, a, target)
  // Any use of A's sessions from here on would move their last use.
  main.clock.advance(2000)
  gatewayB.clock.advance(2000)

  const rank = (operation: string) => WALK_ORDER.indexOf(operation.split(' ')[0] ?? '')
  const operations = [...(await documentedOperations()), ...Object.keys(HIDDEN)].sort(
    (p, q) => rank(p) - rank(q),
  )
  for (const operation of operations) {
    const entry = TABLE[operation] ?? HIDDEN[operation]
    await t.test(operation, async () => {
      assert.ok(entry, `${operation} has no entry in the table: decide what tenant B must get`)
      const app = entry.gateway ? gatewayB.app : main.app
      let failure: unknown = null
      try {
        for (const call of entry.calls) await checkCall(app, operation, call, { target, ghost, b, secrets })
      } catch (err) {
        failure = err
      }
      // Taken whether the calls passed or not, so that a change is blamed on the operation that made it.
      const after = await snapshot(main.app, gatewayB.app, a, target)
      const changed = Object.keys(after).filter((label) => after[label] !== before[label])
      const was = changed.map((label) => [label, before[label]])
      before = after
      if (failure) throw failure
      assert.deepEqual(
        changed.map((label) => [label, after[label]]),
        [],
        `${operation} changed what A sees; before: ${JSON.stringify(was)}`,
      )
    })
  }

  await t.test('A still sees and uses all its own things, with its own key', async () => {
    for (const operation of operations) {
      const entry = TABLE[operation] ?? HIDDEN[operation]
      if (!entry?.own) continue
      const res = await main.app.inject(requestOf(operation, entry.own, target, a))
      entry.own.expect(res, target)
    }
    const refreshed = await main.app.inject({
      method: 'POST',
      url: '/v1/sessions/refresh',
      headers: auth(a.key),
      payload: { refresh_token: target.refreshToken },
    })
    assert.equal(refreshed.statusCode, 200, refreshed.body)
  })

  await t.test("a login of B for A's user id, at a limit of one session, ends none of A's", async () => {
    const listed = async (caller: Caller) => {
      const res = main.app.inject({
        method: 'GET',
        url: `/v1/users/${target.userId}/sessions`,
        headers: auth(caller.key),
      })
      return ((await expectOk(res)).sessions as Array<{ id: string; status: string }>).map(
        ({ id, status }) => `${id} ${status}`,
      )
    }
    const ofA = await listed(a)
    assert.equal(ofA.length, 3, ofA.join(', '))
    const res = await main.app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: auth(b.key),
      payload: { user_id: target.userId, max_sessions: 1, on_limit: 'evict_oldest' },
    })
    assert.equal(res.statusCode, 201, res.body)
    assert.deepEqual(await listed(a), ofA)
    assert.deepEqual(await listed(b), [`${res.json().session.id} active`])
  })
})
