import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import fastJson from 'fast-json-stringify'
import { allows } from '../api-keys/api-keys.ts'
import type { Clock } from '../clock.ts'
import { nextTurn } from '../next-turn.ts'
import { noBodyIsEmpty, Text, Timestamp, Uuid, withErrors } from '../schemas.ts'
import {
  Ip,
  type Issued,
  type JwtPair,
  Metadata,
  OpenSessionInput,
  TokenType,
  UserAgent,
} from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { SessionView, sessionView } from './session-views.ts'

const OpaqueIssued = Type.Object(
  {
    token_type: Type.Literal('opaque'),
    token: Type.String({ description: 'The session token. Shown once: only its hash is stored.' }),
    session: SessionView,
  },
  { title: 'OpaqueSessionIssued' },
)

/** What a JWT login or a refresh returns. */
const JwtIssued = Type.Object(
  {
    token_type: Type.Literal('jwt'),
    access_token: Type.String({ description: 'A signed access JWT (RFC 9068 profile, `typ: at+jwt`)' }),
    expires_in: Type.Integer({ description: 'Seconds until the access JWT expires' }),
    refresh_token: Type.String({
      description:
        'Exchanges for the next pair at /v1/sessions/refresh, once. Shown once: only its hash is stored.',
    }),
    session: SessionView,
  },
  { title: 'JwtSessionIssued' },
)

const OpenSessionReply = Type.Union([OpaqueIssued, JwtIssued])

const RefreshBody = Type.Object(
  {
    refresh_token: Type.String({
      // As long as any token may be: a wrong kind of token is REFRESH_TOKEN_INVALID, whatever its length.
      maxLength: 8192,
      description: 'The refresh token of the latest pair',
    }),
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  {
    additionalProperties: false,
    description:
      "ip and user_agent (the end user's, when you have them) are judged against the session's client as in introspection: drift under a suspend policy suspends the session and the refresh fails with SESSION_SUSPENDED, spending nothing",
  },
)

const IntrospectBody = Type.Object(
  {
    token: Type.String({ maxLength: 8192, description: 'The token to check' }),
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  { additionalProperties: false },
)

const InactiveReason = Type.Union(
  [Type.Literal('suspended'), Type.Literal('revoked'), Type.Literal('expired'), Type.Literal('unknown')],
  {
    description:
      "Why, for callers whose key can read sessions: the token's session is suspended, revoked or expired (or the access JWT's own exp has passed), or the token is unknown (never issued, malformed, or another tenant's). Other callers (a gateway's introspect-only key) get no reason",
  },
)

const activeFields = {
  session_id: Uuid(),
  user_id: Type.String(),
  tenant_id: Type.String({ description: "The session's tenant (user ids are per tenant)" }),
  token_type: TokenType,
  created_at: Timestamp(),
  last_seen_at: Timestamp('This use'),
  expires_at: Timestamp('The earliest of the slid idle expiry, the absolute expiry and (JWT) the token exp'),
  absolute_expires_at: Timestamp(),
  metadata: Metadata,
}
const activeOptionalFields = {
  jti: Type.Optional(Type.String({ description: 'The access JWT id (JWT only)' })),
  client_id: Type.Optional(Type.String({ description: 'The API key that opened the session' })),
}

const IntrospectionActive = Type.Object(
  { active: Type.Literal(true), ...activeFields, ...activeOptionalFields },
  { title: 'IntrospectionActive' },
)
const IntrospectionInactive = Type.Object(
  { active: Type.Literal(false), reason: Type.Optional(InactiveReason) },
  { title: 'IntrospectionInactive' },
)
/** The answer as documented: one of two shapes, told apart by `active`. */
const IntrospectReply = Type.Union([IntrospectionActive, IntrospectionInactive])

/**
 * The same answer as the serialiser writes it: one flat object, so the hot path never tries each
 * branch of the union in turn (which is what a serialiser does with `anyOf`).
 */
const introspectionJson = fastJson(
  Type.Object({
    active: Type.Boolean(),
    reason: Type.Optional(InactiveReason),
    ...Object.fromEntries(Object.entries(activeFields).map(([name, field]) => [name, Type.Optional(field)])),
    ...activeOptionalFields,
  }),
)

/** The introspection route's serialisers: the flat one for its answer, the schema's own for errors. */
function introspectionSerializer({ schema, httpStatus }: { schema: unknown; httpStatus?: string }) {
  return httpStatus === '200' ? introspectionJson : fastJson(schema as object)
}

const SessionParams = Type.Object({ id: Uuid('Session id') })

const revokeFields = {
  scope: Type.Optional(
    Type.Union([Type.Literal('session'), Type.Literal('user')], {
      description:
        "`user`: revoke every session of this session's user (log out everywhere). Default `session`, or `user` with LOGOUT_ALL_ON_LOGOUT",
    }),
  ),
  reason: Type.Optional(Text({ maxLength: 200, description: 'Recorded with the revocation (default: api)' })),
}

const RevokeBody = Type.Object(revokeFields, { additionalProperties: false })
const RevokeQuery = Type.Object(revokeFields, { additionalProperties: false })

const RevokeTokenBody = Type.Object(
  {
    token: Type.String({
      maxLength: 8192,
      description: 'An opaque session token, an access JWT (expired or not) or a refresh token',
    }),
    ...revokeFields,
  },
  { additionalProperties: false },
)

const SuspendBody = Type.Object(
  {
    reason: Type.Optional(
      Text({ maxLength: 200, description: 'Recorded with the suspension (default: api)' }),
    ),
  },
  { additionalProperties: false },
)

const ResumeBody = Type.Object(
  {
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  {
    additionalProperties: false,
    description:
      'Given fields bind the session to that client from now on; without them it stays bound as before',
  },
)

/** A JWT login's or a refresh's answer on the wire. */
function jwtView(issued: JwtPair, nowMs: number) {
  return {
    token_type: 'jwt' as const,
    access_token: issued.access_token,
    expires_in: Math.max(0, Math.round((issued.access_token_expires_at.getTime() - nowMs) / 1000)),
    refresh_token: issued.refresh_token,
    session: sessionView(issued.session),
  }
}

function issuedView(issued: Issued, nowMs: number) {
  if (issued.token_type === 'jwt') return jwtView(issued, nowMs)
  return { token_type: 'opaque' as const, token: issued.token, session: sessionView(issued.session) }
}

const tags = ['sessions']

const sessionRoutes: FastifyPluginAsyncTypebox<{
  sessions: SessionService
  logIntrospection: boolean
  clock: Clock
}> = async (app, { sessions, logIntrospection, clock }) => {
  app.post(
    '/v1/sessions',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'openSession',
        tags,
        summary: 'Open a session (login)',
        body: OpenSessionInput,
        response: withErrors({ 201: OpenSessionReply }),
      },
    },
    async (request, reply) => {
      const issued = await sessions.open(request.tenancy, request.body, request.caller?.keyId ?? null)
      return reply.code(201).send(issuedView(issued, clock.now()))
    },
  )

  app.post(
    '/v1/sessions/refresh',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'refreshSession',
        tags,
        summary: 'Exchange a refresh token for a new access JWT and a new refresh token',
        description:
          'The refresh token is spent. Presented again within REFRESH_REUSE_GRACE_SECONDS it returns the same new pair (tabs refreshing together); after that, the session is revoked as stolen (REFRESH_TOKEN_REUSED).',
        body: RefreshBody,
        response: withErrors({ 200: JwtIssued }),
      },
    },
    async (request) => {
      const { refresh_token, ip, user_agent } = request.body
      const pair = await sessions.refresh(request.tenancy, refresh_token, { ip, user_agent })
      return jwtView(pair, clock.now())
    },
  )

  app.post(
    '/v1/sessions/introspect',
    {
      // Called for every request a gateway serves: no access log lines unless asked
      // (it is counted in /metrics); server errors are logged either way.
      ...(logIntrospection ? {} : { logLevel: 'warn' }),
      config: { scope: 'introspect' },
      schema: {
        operationId: 'introspectSession',
        tags,
        summary: 'Check a token: is it active, whose is it, when does it expire',
        body: IntrospectBody,
        response: withErrors({ 200: IntrospectReply }),
      },
      serializerCompiler: introspectionSerializer,
    },
    async (request) => {
      const { token, ip, user_agent } = request.body
      const result = await sessions.introspect(request.tenancy, token, { ip, user_agent })
      await nextTurn()
      if (!result.active) {
        // Why is for callers trusted with sessions; a gateway's key learns only "inactive".
        const trusted = request.caller && allows(request.caller.scopes, 'sessions:read')
        return trusted
          ? { active: false as const, reason: result.reason ?? ('unknown' as const) }
          : { active: false as const }
      }
      const { session, claims } = result
      return {
        active: true as const,
        session_id: session.id,
        user_id: session.user_id,
        tenant_id: session.tenant_id,
        token_type: session.token_type,
        jti: claims?.jti,
        client_id: session.client_id ?? undefined,
        created_at: session.created_at,
        last_seen_at: result.seenAt,
        expires_at: result.expiresAt,
        absolute_expires_at: session.absolute_expires_at,
        metadata: session.metadata,
      }
    },
  )

  app.get(
    '/v1/sessions/:id',
    {
      config: { scope: 'sessions:read' },
      schema: {
        operationId: 'getSession',
        tags,
        summary: 'One session',
        params: SessionParams,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => sessionView(await sessions.get(request.tenancy, request.params.id)),
  )

  app.post(
    '/v1/sessions/:id/revoke',
    {
      preValidation: noBodyIsEmpty,
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeSession',
        tags,
        summary: 'Revoke a session (idempotent); answers with the session as it now is',
        params: SessionParams,
        body: RevokeBody,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => {
      const { reason = 'api', scope } = request.body
      return sessionView(await sessions.revoke(request.tenancy, request.params.id, reason, scope))
    },
  )

  app.post(
    '/v1/sessions/revoke',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeSessionByToken',
        tags,
        summary: 'Revoke the session a token belongs to (logout with only the token in hand; idempotent)',
        description:
          "The JSON form of RFC 7009 revocation: it answers with the session, and an unknown token (or another tenant's) is SESSION_NOT_FOUND rather than silence.",
        body: RevokeTokenBody,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => {
      const { token, reason = 'api', scope } = request.body
      return sessionView(await sessions.revokeToken(request.tenancy, token, reason, scope))
    },
  )

  app.delete(
    '/v1/sessions/:id',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'deleteSession',
        tags,
        summary: 'Revoke a session, with the reason in the query (the older form of revokeSession)',
        description:
          'Kept for existing callers; `POST /v1/sessions/{id}/revoke` does the same with the reason in the body, like every other action.',
        deprecated: true,
        params: SessionParams,
        querystring: RevokeQuery,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => {
      const { reason = 'api', scope } = request.query
      return sessionView(await sessions.revoke(request.tenancy, request.params.id, reason, scope))
    },
  )

  app.post(
    '/v1/sessions/:id/suspend',
    {
      preValidation: noBodyIsEmpty,
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'suspendSession',
        tags,
        summary: 'Suspend a session: its tokens are inactive until it is resumed (idempotent)',
        params: SessionParams,
        body: SuspendBody,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) =>
      sessionView(await sessions.suspend(request.tenancy, request.params.id, request.body.reason ?? 'api')),
  )

  app.post(
    '/v1/sessions/:id/resume',
    {
      preValidation: noBodyIsEmpty,
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'resumeSession',
        tags,
        summary:
          'Resume a suspended session, optionally binding it to the client it is now used from (idempotent)',
        params: SessionParams,
        body: ResumeBody,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => sessionView(await sessions.resume(request.tenancy, request.params.id, request.body)),
  )
}

export default sessionRoutes
