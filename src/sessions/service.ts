import type { Tenancy } from '../tenants/tenancy.ts'
import type { SessionContext, SessionDeps } from './context.ts'
import { createDriftResponse } from './drift-response.ts'
import { createExpiry } from './expiry.ts'
import { createIntrospection, type Introspection } from './introspection.ts'
import { createInvalidation } from './invalidation.ts'
import { createLifecycle } from './lifecycle.ts'
import { createLogin } from './login.ts'
import type { ClientInfo } from './model.ts'
import { createRefresh } from './refresh.ts'
import { tokenKind } from './tokens.ts'

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
  const { introspect, introspectFromMemory, introspectRefreshToken } = createIntrospection(ctx)
  const { refresh } = createRefresh(ctx)
  const lifecycle = createLifecycle(ctx)

  /**
   * Introspection of whatever token is presented (RFC 7662 asks it of every
   * kind), told apart by its shape: a refresh token is looked up as one
   * (looking is not a use) when `refreshTokens` is set, and is inactive otherwise.
   */
  async function introspectAnyToken(
    who: Tenancy,
    token: string,
    client: ClientInfo,
    { refreshTokens }: { refreshTokens: boolean },
  ): Promise<{ refresh: boolean; result: Introspection }> {
    if (tokenKind(token) !== 'refresh')
      return { refresh: false, result: await introspect(who, token, client) }
    const result = refreshTokens ? await introspectRefreshToken(who, token) : { active: false as const }
    return { refresh: true, result }
  }

  return {
    open,
    introspect,
    introspectFromMemory,
    refresh,
    get: lifecycle.get,
    revoke: lifecycle.revoke,
    suspend: lifecycle.suspend,
    resume: lifecycle.resume,
    revokeAllForUser: lifecycle.revokeAllForUser,
    revokeInBulk: lifecycle.revokeInBulk,
    revokeByToken: lifecycle.revokeByToken,
    revokeToken: lifecycle.revokeToken,
    introspectAnyToken,
    purge: lifecycle.purge,
    listForUser: lifecycle.listForUser,
    countForUser: lifecycle.countForUser,
    countLive: lifecycle.countLive,
    listEvents: deps.repo.listEvents,
    /** The policy a tenant's sessions follow. */
    policy: deps.policy,
  }
}

export type SessionService = ReturnType<typeof createSessionService>
