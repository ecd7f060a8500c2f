import type { SessionContext, SessionDeps } from './context.ts'
import { createDriftResponse } from './drift-response.ts'
import { createExpiry } from './expiry.ts'
import { createIntrospection } from './introspection.ts'
import { createInvalidation } from './invalidation.ts'
import { createLifecycle } from './lifecycle.ts'
import { createLogin } from './login.ts'
import { createRefresh } from './refresh.ts'

/**
 * The sessions domain: opening, checking and ending sessions, with the expiry
 * policy. One context (the dependencies, the expiry rule, the caches'
 * invalidation, the drift response) is shared by every capability.
 */
export function createSessionService(deps: SessionDeps) {
  const ctx: SessionContext = {
    ...deps,
    expiry: createExpiry(deps),
    invalidation: createInvalidation(deps),
    drift: createDriftResponse(deps),
  }
  const { open } = createLogin(ctx)
  const { introspect, introspectRefreshToken } = createIntrospection(ctx)
  const { refresh } = createRefresh(ctx)
  const lifecycle = createLifecycle(ctx)

  return {
    open,
    introspect,
    refresh,
    get: lifecycle.get,
    revoke: lifecycle.revoke,
    suspend: lifecycle.suspend,
    resume: lifecycle.resume,
    revokeAllForUser: lifecycle.revokeAllForUser,
    revokeInBulk: lifecycle.revokeInBulk,
    revokeByToken: lifecycle.revokeByToken,
    introspectRefreshToken,
    purge: lifecycle.purge,
    listForUser: lifecycle.listForUser,
    listEvents: deps.repo.listEvents,
  }
}

export type SessionService = ReturnType<typeof createSessionService>
