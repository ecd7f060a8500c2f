import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Text, Uuid, withErrors } from '../schemas.ts'
import { UserId } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { userTenancy } from '../tenants/tenancy.ts'
import { nextCursor, pageQuery, pageReply } from './paging.ts'
import {
  EventsQuery,
  EventsReply,
  eventsPage,
  RevokeAllReply,
  SessionView,
  sessionView,
} from './session-views.ts'

const UserParams = Type.Object({ user_id: UserId })

const ListSessionsQuery = Type.Object(
  {
    current_session_id: Type.Optional(Uuid('Marks this session `current: true`')),
    // The cursor is the id of the previous page's last session.
    ...pageQuery({ default: 100, maximum: 500 }, { format: 'uuid' }),
  },
  { additionalProperties: false },
)

const ListSessionsReply = pageReply({ sessions: Type.Array(SessionView) })

const RevokeAllQuery = Type.Object(
  {
    except_session_id: Type.Optional(Uuid('Keep this session (log out the other devices)')),
    reason: Type.Optional(Text({ maxLength: 200 })),
  },
  { additionalProperties: false },
)

const UserSessionParams = Type.Object({ user_id: UserId, id: Uuid('Session id') })
const RevokeOneQuery = Type.Object(
  { reason: Type.Optional(Text({ maxLength: 200 })) },
  { additionalProperties: false },
)

const tags = ['users']

const userRoutes: FastifyPluginAsyncTypebox<{ sessions: SessionService }> = async (app, { sessions }) => {
  app.get(
    '/v1/users/:user_id/sessions',
    {
      config: { scope: 'sessions:read' },
      schema: {
        operationId: 'listUserSessions',
        tags,
        summary: "A user's live sessions (devices), newest first, a page at a time (`limit`, `cursor`)",
        params: UserParams,
        querystring: ListSessionsQuery,
        response: withErrors({ 200: ListSessionsReply }),
      },
    },
    async (request) => {
      const { current_session_id: current, limit = 100, cursor = null } = request.query
      const who = userTenancy(request.tenancy)
      const rows = await sessions.listForUser(who, request.params.user_id, limit, cursor)
      return {
        sessions: rows.map((row) => sessionView(row, current ?? '')),
        next_cursor: nextCursor(rows, limit, (last) => last.id),
      }
    },
  )

  app.delete(
    '/v1/users/:user_id/sessions',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeUserSessions',
        tags,
        summary: "Revoke all of a user's sessions, or all but one",
        params: UserParams,
        querystring: RevokeAllQuery,
        response: withErrors({ 200: RevokeAllReply }),
      },
    },
    async (request) => {
      const { except_session_id: except = null, reason = 'api' } = request.query
      return {
        revoked: await sessions.revokeAllForUser(
          userTenancy(request.tenancy),
          request.params.user_id,
          except,
          reason,
        ),
      }
    },
  )

  app.delete(
    '/v1/users/:user_id/sessions/:id',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeUserSession',
        tags,
        summary: "Revoke one of this user's sessions (404 when the session is not this user's); idempotent",
        description:
          'For a "your devices" page: one call, with no read and compare first. Answers with the session as it now is.',
        params: UserSessionParams,
        querystring: RevokeOneQuery,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => {
      const { user_id: userId, id } = request.params
      const reason = request.query.reason ?? 'api'
      return sessionView(await sessions.revoke(userTenancy(request.tenancy), id, reason, 'session', userId))
    },
  )

  app.get(
    '/v1/users/:user_id/events',
    {
      config: { scope: 'sessions:read' },
      schema: {
        operationId: 'listUserEvents',
        tags,
        summary: "A user's session history, newest first",
        params: UserParams,
        querystring: EventsQuery,
        response: withErrors({ 200: EventsReply }),
      },
    },
    async (request) => {
      const who = userTenancy(request.tenancy)
      return eventsPage(sessions, who, { ...request.query, user_id: request.params.user_id })
    },
  )
}

export default userRoutes
