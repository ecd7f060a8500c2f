import { type Static, Type } from '@sinclair/typebox'
import { Nullable, Text, Timestamp, Uuid } from '../schemas.ts'
import { expiresAt } from '../sessions/expiry.ts'
import {
  Binding,
  Device,
  Metadata,
  type SessionRow,
  SessionStatus,
  TokenType,
  UserId,
} from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import type { Tenancy } from '../tenants/tenancy.ts'
import { beforeAlias, cursorOf, IdCursor, nextCursor, pageQuery, pageReply } from './paging.ts'

// Sessions and their events on the wire: the shapes several route files answer with, and what fills them.

/** A session as it leaves the service: the allowlist of fields (never a token or its hash). */
export const SessionView = Type.Object(
  {
    id: Uuid(),
    user_id: Type.String(),
    status: SessionStatus,
    token_type: TokenType,
    client_id: Nullable(Type.String({ description: 'The API key that opened the session' })),
    binding: Binding,
    suspended_at: Nullable(Timestamp()),
    suspension_reason: Nullable(Type.String()),
    ip: Nullable(Type.String({ description: 'Where the session was last seen from' })),
    bound_ip: Nullable(
      Type.String({
        description: 'The address drift is judged against: set at login, on a recorded move and by a resume',
      }),
    ),
    user_agent: Nullable(Type.String()),
    device: Device,
    metadata: Metadata,
    created_at: Timestamp(),
    last_seen_at: Timestamp(),
    expires_at: Timestamp('The earlier of idle_expires_at and absolute_expires_at'),
    idle_expires_at: Timestamp(),
    absolute_expires_at: Timestamp(),
    ended_at: Nullable(Timestamp()),
    end_reason: Nullable(Type.String()),
    current: Type.Optional(Type.Boolean({ description: 'This is the session named by current_session_id' })),
  },
  { title: 'Session' },
)

export const RevokeAllReply = Type.Object({
  revoked: Type.Integer({ description: 'How many sessions were revoked' }),
})

export const EventsQuery = Type.Object(
  {
    ...pageQuery({ default: 50, maximum: 200 }, IdCursor),
    before: beforeAlias(IdCursor),
    type: Type.Optional(
      Text({ maxLength: 64, description: 'Only events of this type, e.g. session.revoked' }),
    ),
    since: Type.Optional(
      Type.String({ format: 'date-time', description: 'Only events at or after this time' }),
    ),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'Only events before this time' })),
  },
  { additionalProperties: false },
)

export const AllEventsQuery = Type.Composite(
  [EventsQuery, Type.Object({ user_id: Type.Optional(UserId) }, { additionalProperties: false })],
  { additionalProperties: false },
)

export const EventView = Type.Object(
  {
    id: Type.String(),
    session_id: Uuid(),
    user_id: Type.String(),
    type: Type.String(),
    data: Type.Record(Type.String(), Type.Unknown()),
    created_at: Timestamp(),
  },
  {
    title: 'Event',
    description: 'Something that happened to a session (session.opened, session.revoked, …)',
  },
)

export const EventsReply = pageReply({ events: Type.Array(EventView) }, 'EventsPage')

/** A stored session shaped for the wire (the response schema then drops anything not listed). */
export function sessionView(session: SessionRow, currentId?: string) {
  const view = { ...session, expires_at: expiresAt(session) }
  return currentId === undefined ? view : { ...view, current: session.id === currentId }
}

/** One page of events, newest first, and the cursor of the next. */
export async function eventsPage(
  sessions: Pick<SessionService, 'listEvents'>,
  who: Tenancy,
  query: Static<typeof AllEventsQuery>,
): Promise<Static<typeof EventsReply>> {
  const limit = query.limit ?? 50
  const events = await sessions.listEvents(who, {
    userId: query.user_id ?? null,
    type: query.type ?? null,
    since: query.since ? new Date(query.since) : null,
    until: query.until ? new Date(query.until) : null,
    before: cursorOf(query),
    limit,
  })
  // An event is shown as the API's sessions are: without its tenant (the caller's, or the one it named).
  const shown = events.map(({ tenant_id: _tenant, ...event }) => event)
  return { events: shown, next_cursor: nextCursor(events, limit, (last) => last.id) }
}
