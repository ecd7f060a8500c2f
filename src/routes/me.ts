import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Static, Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible'
import type { Config } from '../config.ts'
import { Errors } from '../errors.ts'
import { Nullable, Timestamp, Uuid, withErrors } from '../schemas.ts'
import { expiresAt } from '../sessions/expiry.ts'
import type { Introspection } from '../sessions/introspection.ts'
import { Device, type SessionRow } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import type { TenantStore } from '../tenants/store.ts'
import { EVERY_TENANT, onlyTenant, type Tenancy } from '../tenants/tenancy.ts'
import { endUserAgent, presentedToken } from './end-user.ts'
import {
  IdCursor,
  nextCursor,
  nextPositionCursor,
  PositionCursor,
  pageQuery,
  pageReply,
  positionOf,
  UUID_ID,
} from './paging.ts'

// The self-service API: the end user's own sessions and history, authorised by the user's own session
// token (Bearer or the forward-auth cookie), never by an API key. It only ever reaches the sessions of
// the token's user in the token's tenant, and every call is an introspection with the caller's own
// client, so a drifted or suspended session cannot manage anything.

/** What the end user sees of one of their sessions: their device, where and when; no metadata, no client. */
const MySession = Type.Object(
  {
    id: Uuid(),
    current: Type.Boolean({ description: 'This is the session whose token made the call' }),
    device: Device,
    ip: Nullable(Type.String({ description: 'Where the session was last seen from' })),
    created_at: Timestamp('Signed in'),
    last_seen_at: Timestamp('Last active'),
    expires_at: Timestamp(),
  },
  { title: 'MySession' },
)

/** The events an end user is shown: sign-ins, suspensions, sign-outs and expiries of their sessions. */
const SHOWN_EVENTS = [
  'session.created',
  'session.new_device',
  'session.suspended',
  'session.resumed',
  'session.revoked',
  'session.expired',
  'refresh_token.reused',
]

const MyEvent = Type.Object(
  {
    id: Type.String(),
    type: Type.String({ description: SHOWN_EVENTS.join(', ') }),
    session_id: Uuid(),
    current: Type.Boolean({ description: 'It happened to the session whose token made the call' }),
    created_at: Timestamp(),
    device: Device,
    ip: Nullable(Type.String()),
    reason: Nullable(Type.String({ description: 'Why a session was suspended or ended' })),
  },
  { title: 'MyEvent' },
)

const Revoked = Type.Object({ revoked: Type.Integer({ description: 'How many sessions this call ended' }) })

const ListQuery = Type.Object(pageQuery({ default: 50, maximum: 200 }, PositionCursor), {
  additionalProperties: false,
})
const EventsQuery = Type.Object(pageQuery({ default: 20, maximum: 100 }, IdCursor), {
  additionalProperties: false,
})

/** The caller: the session its token belongs to, as the introspection found it. */
interface Me {
  session: SessionRow
  who: Tenancy
}

declare module 'fastify' {
  interface FastifyRequest {
    me?: Me
  }
}

const tags = ['self-service']
const security = [{ sessionToken: [] }]
const description =
  "Authorised by the end user's own session token (`Authorization: Bearer` or the FORWARD_AUTH_COOKIE cookie), never an API key. An inactive token is 401 SESSION_INACTIVE with `error.reason`. POSTs must be `application/json`."

type Settings = Pick<Config, 'forwardAuthCookie' | 'selfServiceRateLimit'>

const selfServiceRoutes: FastifyPluginAsyncTypebox<{
  sessions: SessionService
  tenants: TenantStore
  config: Settings
}> = async (app, { sessions, tenants, config }) => {
  const limiter =
    config.selfServiceRateLimit > 0
      ? new RateLimiterMemory({ points: config.selfServiceRateLimit, duration: 60, keyPrefix: 'me' })
      : null

  /** CORS for an origin the caller's tenant (or, before credentials are known, any tenant) allows. */
  function allowOrigin(reply: FastifyReply, origin: string) {
    reply.header('access-control-allow-origin', origin)
    reply.header('access-control-allow-credentials', 'true')
    reply.header('vary', 'Origin')
  }

  /** Whether the request comes from the page's own origin (not another site's page). */
  function sameOrigin(request: FastifyRequest, origin: string): boolean {
    if (request.headers['sec-fetch-site'] === 'same-origin') return true
    return origin.toLowerCase() === `${request.protocol}://${request.host}`.toLowerCase()
  }

  async function authenticate(request: FastifyRequest, reply: FastifyReply) {
    if (limiter) {
      try {
        await limiter.consume(request.ip)
      } catch (err) {
        if (!(err instanceof RateLimiterRes)) throw err
        const seconds = Math.max(1, Math.ceil(err.msBeforeNext / 1000))
        reply.header('retry-after', String(seconds))
        throw new Errors.RATE_LIMITED(seconds)
      }
    }
    const origin = request.headers.origin
    const token = presentedToken(request, config.forwardAuthCookie)
    const result = token
      ? await sessions.introspect(EVERY_TENANT, token, {
          ip: request.ip,
          user_agent: endUserAgent(request),
          required: { user_agent: true, ip: true },
        })
      : ({ active: false } as Introspection)
    const allowed =
      origin !== undefined && result.active
        ? tenants.policy(result.session.tenant_id).selfServiceOrigins.includes(origin.toLowerCase())
        : false
    // A session's answers are readable by its own tenant's pages only; a refusal (no session to name
    // a tenant) by any page a preflight would have let through, so it can say "signed out".
    if (allowed && origin) allowOrigin(reply, origin)
    else if (!result.active && origin && tenants.someTenantAllowsOrigin(origin)) allowOrigin(reply, origin)
    if (!result.active) {
      reply.header('www-authenticate', token ? 'Bearer error="invalid_token"' : 'Bearer')
      const reason = result.reason ?? 'unknown'
      const message = token
        ? `this session is ${reason === 'unknown' ? 'not known' : reason}`
        : 'no session token'
      throw Object.assign(new Errors.SESSION_INACTIVE(message), { reason })
    }
    // A cookie goes with every request the browser makes; a page of another site must not act with it.
    const byCookie = !request.headers.authorization
    if (request.method === 'POST' && byCookie && origin && !allowed && !sameOrigin(request, origin)) {
      throw new Errors.FORBIDDEN('self-service from this origin')
    }
    request.me = { session: result.session, who: onlyTenant(result.session.tenant_id) }
  }

  // Every POST is JSON, which no cross-site form can send and cross-origin fetch must preflight.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    if (String(body).trim() === '' || String(body).trim() === '{}') return done(null, {})
    done(new Errors.VALIDATION_FAILED('body: send {} or nothing'), undefined)
  })
  app.addHook('onRequest', async (request, reply) => {
    if (request.method === 'OPTIONS') return
    if (
      request.method === 'POST' &&
      !String(request.headers['content-type'] ?? '').startsWith('application/json')
    ) {
      throw new Errors.UNSUPPORTED_MEDIA_TYPE(
        JSON.stringify(String(request.headers['content-type'] ?? 'none').slice(0, 100)),
      )
    }
    await authenticate(request, reply)
  })

  /** The caller, once authenticated (every route but the preflight). */
  const me = (request: FastifyRequest): Me => {
    if (!request.me) throw new Errors.SESSION_INACTIVE('no session token')
    return request.me
  }

  app.get(
    '/v1/me/sessions',
    {
      schema: {
        operationId: 'listMySessions',
        tags,
        security,
        description,
        summary: 'My live sessions (devices), newest first, this one marked `current`',
        querystring: ListQuery,
        response: withErrors({ 200: pageReply({ sessions: Type.Array(MySession), total: Type.Integer() }) }),
      },
    },
    async (request) => {
      const { session, who } = me(request)
      const page = {
        limit: request.query.limit ?? 50,
        after: positionOf(request.query.cursor ?? null, UUID_ID),
      }
      const [rows, total] = await Promise.all([
        sessions.listForUser(who, session.user_id, page),
        sessions.countForUser(who, session.user_id),
      ])
      return {
        sessions: rows.map((row) => ({
          id: row.id,
          current: row.id === session.id,
          device: row.device,
          ip: row.ip,
          created_at: row.created_at,
          last_seen_at: row.last_seen_at,
          expires_at: expiresAt(row),
        })),
        total,
        next_cursor: nextPositionCursor(rows, page, (row) => row.id),
      }
    },
  )

  app.post(
    '/v1/me/sessions/:id/revoke',
    {
      schema: {
        operationId: 'revokeMySession',
        tags,
        security,
        description,
        summary: 'Sign out one of my sessions (this one too); 404 if it is not mine',
        params: Type.Object({ id: Uuid('Session id') }),
        response: withErrors({ 200: Revoked }),
      },
    },
    async (request) => {
      const { session, who } = me(request)
      const before = await sessions.get(who, request.params.id, session.user_id)
      const open = before.status === 'active' || before.status === 'suspended'
      await sessions.revoke(who, before.id, 'self_service', 'session', session.user_id)
      return { revoked: open ? 1 : 0 }
    },
  )

  app.post(
    '/v1/me/sessions/revoke-others',
    {
      schema: {
        operationId: 'revokeMyOtherSessions',
        tags,
        security,
        description,
        summary: 'Sign out all my other sessions (every device but this one)',
        response: withErrors({ 200: Revoked }),
      },
    },
    async (request) => {
      const { session, who } = me(request)
      return { revoked: await sessions.revokeAllForUser(who, session.user_id, session.id, 'self_service') }
    },
  )

  app.post(
    '/v1/me/sessions/revoke-all',
    {
      schema: {
        operationId: 'revokeAllMySessions',
        tags,
        security,
        description,
        summary: 'Sign out everywhere, this session included',
        response: withErrors({ 200: Revoked }),
      },
    },
    async (request) => {
      const { session, who } = me(request)
      return { revoked: await sessions.revokeAllForUser(who, session.user_id, null, 'self_service') }
    },
  )

  app.get(
    '/v1/me/events',
    {
      schema: {
        operationId: 'listMyEvents',
        tags,
        security,
        description,
        summary: 'My recent security activity, newest first: sign-ins, new devices, suspensions, sign-outs',
        querystring: EventsQuery,
        response: withErrors({ 200: pageReply({ events: Type.Array(MyEvent) }) }),
      },
    },
    async (request) => {
      const { session, who } = me(request)
      const limit = request.query.limit ?? 20
      const events = await sessions.listEvents(who, {
        userId: session.user_id,
        type: null,
        types: SHOWN_EVENTS,
        since: null,
        until: null,
        before: request.query.cursor ?? null,
        limit,
      })
      return {
        events: events.map((event) => myEvent(event, session.id)),
        next_cursor: nextCursor(events, limit, (last) => last.id),
      }
    },
  )

  // The CORS preflight of each path: what a browser asks before a credentialed cross-origin call.
  for (const url of [
    '/v1/me/sessions',
    '/v1/me/sessions/:id/revoke',
    '/v1/me/sessions/revoke-others',
    '/v1/me/sessions/revoke-all',
    '/v1/me/events',
  ]) {
    app.options(url, { schema: { hide: true } }, async (request, reply) => {
      const origin = request.headers.origin
      if (origin && tenants.someTenantAllowsOrigin(origin)) {
        allowOrigin(reply, origin)
        reply.header('access-control-allow-methods', 'GET, POST')
        reply.header('access-control-allow-headers', 'authorization, content-type')
        reply.header('access-control-max-age', '600')
      }
      return reply.code(204).send()
    })
  }
}

/** The device of an event that names none (a sign-out): every part unknown. */
const UNKNOWN_DEVICE: Static<typeof Device> = {
  browser: null,
  browser_version: null,
  os: null,
  os_version: null,
  type: 'unknown',
}

/** An event as the end user sees it: what, when, on which device, and why; nothing else of its data. */
function myEvent(
  event: { id: string; type: string; session_id: string; data: Record<string, unknown>; created_at: Date },
  currentId: string,
): Static<typeof MyEvent> {
  const { device, ip, reason } = event.data
  return {
    id: event.id,
    type: event.type,
    session_id: event.session_id,
    current: event.session_id === currentId,
    created_at: event.created_at,
    device: device && typeof device === 'object' ? (device as Static<typeof Device>) : UNKNOWN_DEVICE,
    ip: typeof ip === 'string' ? ip : null,
    reason: typeof reason === 'string' ? reason : null,
  }
}

export default selfServiceRoutes
