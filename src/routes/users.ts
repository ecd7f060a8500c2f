import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { withErrors } from '../schemas.ts'
import {
  EventsQuery,
  EventsReply,
  ListSessionsQuery,
  ListSessionsReply,
  RevokeAllQuery,
  RevokeAllReply,
  UserParams,
} from '../sessions/schemas.ts'
import type { SessionService } from '../sessions/service.ts'
import { eventsPage, sessionView } from './views.ts'

const tags = ['users']

const userRoutes: FastifyPluginAsyncTypebox<{ sessions: SessionService }> = async (app, { sessions }) => {
  app.get(
    '/v1/users/:user_id/sessions',
    {
      config: { scope: 'sessions:read' },
      schema: {
        tags,
        summary: "A user's live sessions (devices), newest first",
        params: UserParams,
        querystring: ListSessionsQuery,
        response: withErrors({ 200: ListSessionsReply }),
      },
    },
    async (request) => {
      const { current_session_id: current, limit = 100 } = request.query
      const rows = await sessions.listForUser(request.params.user_id, limit)
      return { sessions: rows.map((row) => sessionView(row, current ?? '')) }
    },
  )

  app.delete(
    '/v1/users/:user_id/sessions',
    {
      config: { scope: 'sessions:write' },
      schema: {
        tags,
        summary: "Revoke all of a user's sessions, or all but one",
        params: UserParams,
        querystring: RevokeAllQuery,
        response: withErrors({ 200: RevokeAllReply }),
      },
    },
    async (request) => {
      const { except_session_id: except = null, reason = 'api' } = request.query
      return { revoked: await sessions.revokeAllForUser(request.params.user_id, except, reason) }
    },
  )

  app.get(
    '/v1/users/:user_id/events',
    {
      config: { scope: 'sessions:read' },
      schema: {
        tags,
        summary: "A user's session history, newest first",
        params: UserParams,
        querystring: EventsQuery,
        response: withErrors({ 200: EventsReply }),
      },
    },
    async (request) => {
      return eventsPage(sessions, { ...request.query, user_id: request.params.user_id })
    },
  )
}

export default userRoutes
