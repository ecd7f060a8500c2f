import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../errors.ts'
import { Text, withErrors } from '../schemas.ts'
import { UserId } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { userTenancy } from '../tenants/tenancy.ts'
import { RevokeAllReply } from './session-views.ts'

const UserList = (description: string, minItems: number) =>
  Type.Array(UserId, { minItems, maxItems: 10_000, description })

const BulkRevokeBody = Type.Object(
  {
    user_ids: Type.Optional(UserList('Revoke every session of these users', 1)),
    all_users_except: Type.Optional(UserList('Revoke every session of every user but these', 0)),
    reason: Type.Optional(
      Text({ maxLength: 200, description: 'Recorded with each revocation (default: admin)' }),
    ),
  },
  { additionalProperties: false, description: 'Exactly one of user_ids and all_users_except' },
)

const PurgeReply = Type.Object({
  expired: Type.Integer({ description: 'Sessions found past their expiry and marked expired' }),
  sessions_deleted: Type.Integer({ description: 'Ended sessions deleted (older than PURGE_RETENTION_DAYS)' }),
  events_deleted: Type.Integer({ description: 'Events deleted (older than EVENT_RETENTION_DAYS)' }),
  devices_forgotten: Type.Integer({
    description:
      'Devices of users forgotten (not signed in from for a year: longer than any new-device window)',
  }),
})

const tags = ['admin']

/** Operator actions over many sessions at once (scope admin). */
const adminRoutes: FastifyPluginAsyncTypebox<{ sessions: SessionService }> = async (app, { sessions }) => {
  app.post(
    '/v1/admin/sessions/revoke',
    {
      config: { scope: 'admin' },
      schema: {
        operationId: 'revokeSessionsInBulk',
        tags,
        summary: 'Revoke every session of a list of users, or of every user but a list (in batches)',
        body: BulkRevokeBody,
        response: withErrors({ 200: RevokeAllReply }),
      },
    },
    async (request) => {
      const { user_ids, all_users_except, reason = 'admin' } = request.body
      if ((user_ids === undefined) === (all_users_except === undefined)) {
        throw new Errors.VALIDATION_FAILED('send exactly one of user_ids and all_users_except')
      }
      // A list of user ids names users of one tenant; "everyone but" spans what the key sees.
      const revoked = user_ids
        ? await sessions.revokeInBulk(userTenancy(request.tenancy), { userIds: user_ids }, reason)
        : await sessions.revokeInBulk(request.tenancy, { allUsersExcept: all_users_except ?? [] }, reason)
      return { revoked }
    },
  )

  app.post(
    '/v1/admin/purge',
    {
      config: { scope: 'platform' },
      schema: {
        operationId: 'purge',
        tags,
        summary:
          'Mark overdue sessions expired, delete old ended sessions and old events (waits for a running purge)',
        response: withErrors({ 200: PurgeReply }),
      },
    },
    async () =>
      (await sessions.purge(true)) ?? {
        expired: 0,
        sessions_deleted: 0,
        events_deleted: 0,
        devices_forgotten: 0,
      },
  )
}

export default adminRoutes
