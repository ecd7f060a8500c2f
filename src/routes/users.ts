import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Static, Type } from '@sinclair/typebox'
import { noBodyIsEmpty, Text, Uuid, withErrors } from '../schemas.ts'
import { UserId } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { type Tenancy, userTenancy } from '../tenants/tenancy.ts'
import { nextPositionCursor, PositionCursor, pageQuery, pageReply, positionOf, UUID_ID } from './paging.ts'
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
    ...pageQuery({ default: 100, maximum: 500 }, PositionCursor),
  },
  { additionalProperties: false },
)

const ListSessionsReply = pageReply(
  {
    sessions: Type.Array(SessionView),
    total: Type.Integer({ description: 'How many live sessions the user has, on every page' }),
  },
  'SessionsPage',
)

const revokeAllFields = {
  except_session_id: Type.Optional(Uuid('Keep this session (log out the other devices)')),
  reason: Type.Optional(Text({ maxLength: 200, description: 'Recorded with the revocation (default: api)' })),
}
const RevokeAllBody = Type.Object(revokeAllFields, { additionalProperties: false })
const RevokeAllQuery = Type.Object(revokeAllFields, { additionalProperties: false })

const UserSessionParams = Type.Object({ user_id: UserId, id: Uuid('Session id') })
const revokeOneFields = {
  reason: Type.Optional(Text({ maxLength: 200, description: 'Recorded with the revocation (default: api)' })),
}
const RevokeOneBody = Type.Object(revokeOneFields, { additionalProperties: false })
const RevokeOneQuery = Type.Object(revokeOneFields, { additionalProperties: false })

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
      const page = { limit, after: positionOf(cursor, UUID_ID) }
      const who = userTenancy(request.tenancy)
      const [rows, total] = await Promise.all([
        sessions.listForUser(who, request.params.user_id, page),
        sessions.countForUser(who, request.params.user_id),
      ])
      return {
        sessions: rows.map((row) => sessionView(row, current ?? '')),
        total,
        next_cursor: nextPositionCursor(rows, page, (row) => row.id),
      }
    },
  )

  const revokeAll = async (who: Tenancy, userId: string, given: Static<typeof RevokeAllBody>) => {
    const { except_session_id: except = null, reason = 'api' } = given
    return { revoked: await sessions.revokeAllForUser(userTenancy(who), userId, except, reason) }
  }
  const revokeOne = async (who: Tenancy, userId: string, id: string, given: Static<typeof RevokeOneBody>) =>
    sessionView(await sessions.revoke(userTenancy(who), id, given.reason ?? 'api', 'session', userId))

  app.post(
    '/v1/users/:user_id/sessions/revoke',
    {
      preValidation: noBodyIsEmpty,
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeUserSessions',
        tags,
        summary: "Revoke all of a user's sessions, or all but one (log out other devices)",
        params: UserParams,
        body: RevokeAllBody,
        response: withErrors({ 200: RevokeAllReply }),
      },
    },
    async (request) => revokeAll(request.tenancy, request.params.user_id, request.body),
  )

  app.delete(
    '/v1/users/:user_id/sessions',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'deleteUserSessions',
        tags,
        summary:
          "Revoke all of a user's sessions, or all but one, with the options in the query (the older form of revokeUserSessions)",
        deprecated: true,
        params: UserParams,
        querystring: RevokeAllQuery,
        response: withErrors({ 200: RevokeAllReply }),
      },
    },
    async (request) => revokeAll(request.tenancy, request.params.user_id, request.query),
  )

  app.post(
    '/v1/users/:user_id/sessions/:id/revoke',
    {
      preValidation: noBodyIsEmpty,
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'revokeUserSession',
        tags,
        summary: "Revoke one of this user's sessions (404 when the session is not this user's); idempotent",
        description:
          'For a "your devices" page: one call, with no read and compare first. Answers with the session as it now is.',
        params: UserSessionParams,
        body: RevokeOneBody,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => revokeOne(request.tenancy, request.params.user_id, request.params.id, request.body),
  )

  app.delete(
    '/v1/users/:user_id/sessions/:id',
    {
      config: { scope: 'sessions:write' },
      schema: {
        operationId: 'deleteUserSession',
        tags,
        summary:
          "Revoke one of this user's sessions, with the reason in the query (the older form of revokeUserSession)",
        deprecated: true,
        params: UserSessionParams,
        querystring: RevokeOneQuery,
        response: withErrors({ 200: SessionView }),
      },
    },
    async (request) => revokeOne(request.tenancy, request.params.user_id, request.params.id, request.query),
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
