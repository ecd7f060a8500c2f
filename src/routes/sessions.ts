import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { nextTurn } from '../next-turn.ts'
import { withErrors } from '../schemas.ts'
import {
  IntrospectBody,
  IntrospectReply,
  OpenSessionBody,
  OpenSessionReply,
  RevokeQuery,
  SessionParams,
  SessionView,
} from '../sessions/schemas.ts'
import type { SessionService } from '../sessions/service.ts'
import { sessionView } from './views.ts'

const tags = ['sessions']

const sessionRoutes: FastifyPluginAsyncTypebox<{
  sessions: SessionService
  logIntrospection: boolean
}> = async (app, { sessions, logIntrospection }) => {
  app.post(
    '/v1/sessions',
    {
      config: { scope: 'sessions:write' },
      schema: {
        tags,
        summary: 'Open a session (login)',
        body: OpenSessionBody,
        response: withErrors({ 201: OpenSessionReply }),
      },
    },
    async (request, reply) => {
      const { token, session } = await sessions.open(request.body)
      return reply.code(201).send({ token, token_type: 'opaque' as const, session: sessionView(session) })
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
        tags,
        summary: 'Check a token: is it active, whose is it, when does it expire',
        body: IntrospectBody,
        response: withErrors({ 200: IntrospectReply }),
      },
    },
    async (request) => {
      const { token, ip, user_agent } = request.body
      const result = await sessions.introspect(token, { ip, user_agent })
      await nextTurn()
      if (!result.active) return { active: false }
      const { session } = result
      return {
        active: true,
        session_id: session.id,
        user_id: session.user_id,
        token_type: 'opaque' as const,
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
        tags,
        summary: 'One session',
        params: SessionParams,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => sessionView(await sessions.get(request.params.id)),
  )

  app.delete(
    '/v1/sessions/:id',
    {
      config: { scope: 'sessions:write' },
      schema: {
        tags,
        summary: 'Revoke a session (idempotent); answers with the session as it now is',
        params: SessionParams,
        querystring: RevokeQuery,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => sessionView(await sessions.revoke(request.params.id, request.query.reason ?? 'api')),
  )
}

export default sessionRoutes
