import type { SessionRow } from '../sessions/repository.ts'
import { expiresAt } from '../sessions/service.ts'

/** A stored session shaped for the wire (the response schema then drops anything not listed). */
export function sessionView(session: SessionRow, currentId?: string) {
  const view = { ...session, expires_at: expiresAt(session) }
  return currentId === undefined ? view : { ...view, current: session.id === currentId }
}
