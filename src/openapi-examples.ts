// An example for every operation of the OpenAPI document, by operationId: what a generated client's
// reader and an API explorer show. They are checked against the schemas by the document's linter
// (test/contract.test.ts), so an example that no longer fits its operation fails the tests.

const at = '2026-01-01T09:00:00.000Z'
const later = '2026-01-01T09:30:00.000Z'
const end = '2026-01-01T21:00:00.000Z'
const CHROME =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const SESSION_ID = '0b8f2a51-3c8e-4f55-9a59-2f1d6c1e7a10'
const OTHER_SESSION_ID = '5d2c9e0a-7b41-4a8e-b7f3-91c4e8d2a6b3'
const TOKEN = 'sat_q0Vbq3zC1xT0n2m8Jc6Ew5rK4yH7uP9aL2sD5fG8hJk'
const REFRESH_TOKEN = 'srt_aKPwEJRTlXP4cSkApw0c_v_7W0BgGYNTb8BiVbukzv8'
const ACCESS_TOKEN =
  'eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Ik10M28ifQ.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl'
const WEBHOOK_ID = 'wh_39f5dd1fea785113'
const DELIVERY_ID = '42'

const WIDGET_SOURCE =
  "/**\n * <session-devices>: the signed-in user's devices, from session-authority's self-service API.\n …\n"

const login = { user_id: 'alice', ip: '203.0.113.7', user_agent: CHROME, metadata: { plan: 'pro' } }

const session = {
  id: SESSION_ID,
  user_id: 'alice',
  status: 'active',
  token_type: 'opaque',
  client_id: 'key_0bba1f4d0a342f6b',
  binding: {},
  suspended_at: null,
  suspension_reason: null,
  ip: '203.0.113.7',
  bound_ip: '203.0.113.7',
  user_agent: CHROME,
  device: {
    browser: 'Chrome',
    browser_version: '120.0.0.0',
    os: 'Windows',
    os_version: '10',
    type: 'desktop',
  },
  metadata: { plan: 'pro' },
  created_at: at,
  last_seen_at: at,
  expires_at: later,
  idle_expires_at: later,
  absolute_expires_at: end,
  ended_at: null,
  end_reason: null,
}
const phone = {
  browser: 'Mobile Safari',
  browser_version: '17.1',
  os: 'iOS',
  os_version: '17.1',
  type: 'mobile',
}
const revoked = { ...session, status: 'revoked', ended_at: later, end_reason: 'user_logout' }
const suspended = {
  ...session,
  status: 'suspended',
  suspended_at: later,
  suspension_reason: 'support_ticket',
}
const jwtSession = { ...session, token_type: 'jwt' }

const event = {
  id: '1042',
  session_id: SESSION_ID,
  user_id: 'alice',
  type: 'session.revoked',
  data: { reason: 'user_logout' },
  created_at: later,
}
const eventsPage = { events: [event], next_cursor: '1041' }

const apiKey = {
  id: 'key_0bba1f4d0a342f6b',
  name: 'gateway',
  tenant_id: 'default',
  scopes: ['introspect'],
  created_at: at,
  revoked_at: null,
}
const webhook = {
  id: WEBHOOK_ID,
  tenant_id: 'default',
  url: 'https://backend.example.com/hooks/sessions',
  event_types: ['session.revoked', 'session.suspended'],
  enabled: true,
  created_at: at,
  updated_at: at,
}
const delivery = {
  id: DELIVERY_ID,
  event_id: '1042',
  event_type: 'session.revoked',
  status: 'dead',
  attempts: 8,
  next_attempt_at: later,
  last_status: 503,
  last_error: 'HTTP 503',
  created_at: at,
  delivered_at: null,
}
const tenant = {
  id: 'acme',
  name: 'Acme',
  settings: { idle_timeout: 900, max_sessions_per_user: 5 },
  created_at: at,
  updated_at: at,
}
const signingKey = {
  kid: 'Mt3oVlDo3q139Kdu_RA7vaMoxac_wCSTeULmNFuy2KE',
  alg: 'EdDSA',
  current: true,
  created_at: at,
  retired_at: null,
  publish_until: null,
}
const jwk = {
  kty: 'OKP',
  kid: signingKey.kid,
  alg: 'EdDSA',
  use: 'sig',
  crv: 'Ed25519',
  x: '09BnffHho4WfeSxfO-S3cIbr7K52lW9YheCgraI81_o',
}
const jwtPair = {
  token_type: 'jwt',
  access_token: ACCESS_TOKEN,
  expires_in: 300,
  refresh_token: REFRESH_TOKEN,
  session: jwtSession,
}
const gatewayRefused = {
  error: { code: 'GATEWAY_NOT_ALLOWED', message: 'not an allowed gateway: wrong or missing secret' },
}

export interface OperationExamples {
  /** The request body, in the operation's one media type. */
  request?: unknown
  /** Path and query parameters, by name. */
  params?: Record<string, unknown>
  /** Response bodies, by status. */
  responses?: Record<string, unknown>
}

export const examples: Record<string, OperationExamples> = {
  healthz: { responses: { 200: { status: 'ok' } } },
  readyz: {
    responses: {
      200: {
        status: 'ready',
        postgres: 'up',
        redis: 'up',
        invalidation_feed: 'live',
        invalidation_feed_lag_ms: 212,
      },
    },
  },
  getMetrics: { responses: { 200: 'introspections_total{result="active"} 1027\n' } },
  getOpenApiDocument: {
    responses: { 200: { openapi: '3.0.3', info: { title: 'session-authority', version: '1' }, paths: {} } },
  },
  getWidget: { responses: { 200: WIDGET_SOURCE } },
  getVersionedWidget: { params: { version: '0.1.0' }, responses: { 200: WIDGET_SOURCE } },
  openSession: {
    request: login,
    responses: { 201: { token_type: 'opaque', token: TOKEN, session } },
  },
  refreshSession: {
    request: { refresh_token: REFRESH_TOKEN, ip: '203.0.113.7', user_agent: CHROME },
    responses: { 200: jwtPair },
  },
  introspectSession: {
    request: { token: TOKEN, ip: '203.0.113.7', user_agent: CHROME },
    responses: {
      200: {
        active: true,
        session_id: SESSION_ID,
        user_id: 'alice',
        tenant_id: 'default',
        token_type: 'opaque',
        client_id: apiKey.id,
        created_at: at,
        last_seen_at: later,
        expires_at: '2026-01-01T10:00:00.000Z',
        absolute_expires_at: end,
        metadata: { plan: 'pro' },
      },
    },
  },
  getSession: { params: { id: SESSION_ID }, responses: { 200: session } },
  revokeSession: {
    params: { id: SESSION_ID },
    request: { reason: 'user_logout' },
    responses: { 200: revoked },
  },
  revokeSessionByToken: { request: { token: TOKEN, reason: 'user_logout' }, responses: { 200: revoked } },
  deleteSession: { params: { id: SESSION_ID, reason: 'user_logout' }, responses: { 200: revoked } },
  suspendSession: {
    params: { id: SESSION_ID },
    request: { reason: 'support_ticket' },
    responses: { 200: suspended },
  },
  resumeSession: {
    params: { id: SESSION_ID },
    request: { ip: '198.51.100.23', user_agent: CHROME },
    responses: { 200: { ...session, ip: '198.51.100.23', bound_ip: '198.51.100.23' } },
  },
  revokeSessionsInBulk: {
    request: { all_users_except: ['admin-1', 'admin-2'], reason: 'security_incident' },
    responses: { 200: { revoked: 1317 } },
  },
  purge: {
    responses: { 200: { expired: 12, sessions_deleted: 340, events_deleted: 2211, devices_forgotten: 15 } },
  },
  oauthIntrospect: {
    request: { token: TOKEN, token_type_hint: 'access_token' },
    responses: {
      200: {
        active: true,
        sub: 'alice',
        sid: SESSION_ID,
        client_id: apiKey.id,
        token_type: 'Bearer',
        iss: 'session-authority',
        iat: 1767258000,
        exp: 1767261600,
      },
    },
  },
  oauthRevoke: { request: { token: REFRESH_TOKEN, token_type_hint: 'refresh_token' } },
  createWebhook: {
    request: { url: webhook.url, event_types: webhook.event_types },
    responses: { 201: { webhook, secret: 'whsec_euAbwWs7D6tA65uU83q2sSGrfu6M2ydExshd6cohSOI=' } },
  },
  listWebhooks: { responses: { 200: { webhooks: [webhook], next_cursor: null } } },
  getWebhook: { params: { id: WEBHOOK_ID }, responses: { 200: webhook } },
  updateWebhook: {
    params: { id: WEBHOOK_ID },
    request: { enabled: false },
    responses: { 200: { ...webhook, enabled: false } },
  },
  deleteWebhook: { params: { id: WEBHOOK_ID } },
  listWebhookDeliveries: {
    params: { id: WEBHOOK_ID, status: 'dead' },
    responses: { 200: { deliveries: [delivery], next_cursor: null } },
  },
  retryWebhookDelivery: {
    params: { delivery_id: DELIVERY_ID },
    responses: { 200: { ...delivery, status: 'pending', next_attempt_at: later } },
  },
  listEvents: { params: { user_id: 'alice', type: 'session.revoked' }, responses: { 200: eventsPage } },
  listUserSessions: {
    params: { user_id: 'alice', current_session_id: SESSION_ID },
    responses: {
      200: {
        sessions: [
          { ...session, current: true },
          { ...session, id: OTHER_SESSION_ID, current: false },
        ],
        total: 2,
        next_cursor: null,
      },
    },
  },
  revokeUserSessions: {
    params: { user_id: 'alice' },
    request: { except_session_id: SESSION_ID, reason: 'logout_other_devices' },
    responses: { 200: { revoked: 2 } },
  },
  deleteUserSessions: {
    params: { user_id: 'alice', except_session_id: SESSION_ID },
    responses: { 200: { revoked: 2 } },
  },
  revokeUserSession: {
    params: { user_id: 'alice', id: OTHER_SESSION_ID },
    request: { reason: 'user_signed_out_device' },
    responses: { 200: { ...revoked, id: OTHER_SESSION_ID, end_reason: 'user_signed_out_device' } },
  },
  deleteUserSession: {
    params: { user_id: 'alice', id: OTHER_SESSION_ID },
    responses: { 200: { ...revoked, id: OTHER_SESSION_ID } },
  },
  listUserEvents: { params: { user_id: 'alice' }, responses: { 200: eventsPage } },
  createApiKey: {
    request: { name: 'gateway', scopes: ['introspect'] },
    responses: { 201: { key: 'sak_vnK6oOS_6jm9WNTDy95WfL6MfrB77QMYuxghiP_1HLE', api_key: apiKey } },
  },
  listApiKeys: { responses: { 200: { api_keys: [apiKey], next_cursor: null } } },
  revokeApiKey: { params: { id: apiKey.id }, responses: { 200: { ...apiKey, revoked_at: later } } },
  createTenant: {
    request: { id: 'acme', name: 'Acme', settings: tenant.settings },
    responses: { 201: tenant },
  },
  listTenants: { responses: { 200: { tenants: [tenant], next_cursor: null } } },
  getTenant: { params: { id: 'acme' }, responses: { 200: tenant } },
  updateTenant: {
    params: { id: 'acme' },
    request: { settings: { ...tenant.settings, ip_drift_policy: 'suspend' } },
    responses: { 200: { ...tenant, settings: { ...tenant.settings, ip_drift_policy: 'suspend' } } },
  },
  listMySessions: {
    params: { limit: 50 },
    responses: {
      200: {
        sessions: [
          {
            id: SESSION_ID,
            current: true,
            device: session.device,
            ip: session.ip,
            created_at: at,
            last_seen_at: later,
            expires_at: later,
          },
          {
            id: OTHER_SESSION_ID,
            current: false,
            device: phone,
            ip: '198.51.100.23',
            created_at: at,
            last_seen_at: at,
            expires_at: later,
          },
        ],
        total: 2,
        next_cursor: null,
      },
    },
  },
  revokeMySession: { params: { id: OTHER_SESSION_ID }, responses: { 200: { revoked: 1 } } },
  revokeMyOtherSessions: { responses: { 200: { revoked: 1 } } },
  revokeAllMySessions: {
    responses: {
      200: { revoked: 2 },
      '4XX': {
        error: { code: 'SESSION_INACTIVE', message: 'this session is suspended', reason: 'suspended' },
      },
    },
  },
  listMyEvents: {
    responses: {
      200: {
        events: [
          {
            id: '1043',
            type: 'session.new_device',
            session_id: OTHER_SESSION_ID,
            current: false,
            created_at: at,
            device: phone,
            ip: '198.51.100.23',
            reason: null,
          },
        ],
        next_cursor: null,
      },
    },
  },
  getJwks: { responses: { 200: { keys: [jwk] } } },
  listSigningKeys: { responses: { 200: { keys: [signingKey], next_cursor: null } } },
  rotateSigningKey: { responses: { 201: signingKey } },
  ...Object.fromEntries(
    ['Get', 'Head', 'Post', 'Put', 'Patch', 'Delete', 'Options'].map((method) => [
      `forwardAuth${method}`,
      { responses: { 403: gatewayRefused } },
    ]),
  ),
}
