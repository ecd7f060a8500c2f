import { expiresAt } from '../sessions/expiry.ts'
import type { SessionRow } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'

/** A stored session shaped for the wire (the response schema then drops anything not listed). */
export function sessionView(session: SessionRow, currentId?: string) {
  const view = { ...session, expires_at: expiresAt(session) }
  return currentId === undefined ? view : { ...view, current: session.id === currentId }
}

/** One page of events, newest first, and the cursor of the next. */
export async function eventsPage(
  sessions: Pick<SessionService, 'listEvents'>,
  query: { user_id?: string; type?: string; since?: string; until?: string; before?: string; limit?: number },
) {
  const limit = query.limit ?? 50
  const events = await sessions.listEvents({
    userId: query.user_id ?? null,
    type: query.type ?? null,
    since: query.since ? new Date(query.since) : null,
    until: query.until ? new Date(query.until) : null,
    before: query.before ?? null,
    limit,
  })
  const last = events.at(-1)
  return { events, next_cursor: events.length === limit && last ? last.id : null }
}
