import type { PageRequest, Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import { actorOf, onlyTenant, type Tenancy } from '../tenants/tenancy.ts'
import type { SessionContext } from './context.ts'
import { parseDevice } from './device.ts'
import { type ClientInfo, CONSOLE_CLIENT, type SessionRow } from './model.ts'
import { address } from './presented-client.ts'
import { purgeSessions } from './purge.ts'
import { hashTokenBytes, tokenKind } from './tokens.ts'

const BATCH = 1000

/** A session's life after login: read, listed, suspended, resumed, revoked (one, a user's, in bulk, by token), purged. */
export function createLifecycle({
  repo,
  clock,
  access,
  config,
  policy,
  expiry,
  invalidation,
}: SessionContext) {
  const { ranOut, withLocalUse } = expiry
  const { invalidateEnded, invalidateChanged } = invalidation

  /** A session `who` sees (of `ownedBy` when given); SESSION_NOT_FOUND for any other, whether it exists or not. */
  async function get(who: Tenancy, id: string, ownedBy?: string): Promise<SessionRow> {
    const session = await repo.findById(who, id)
    if (!session || (ownedBy !== undefined && session.user_id !== ownedBy))
      throw new Errors.SESSION_NOT_FOUND(id)
    return withLocalUse(session)
  }

  /**
   * Revokes one session, or with scope `user` every open session of its user
   * ("log out everywhere"; by default as the tenant's LOGOUT_ALL_ON_LOGOUT says).
   * With `ownedBy`, only a session of that user. Idempotent: revoking an ended
   * session changes nothing.
   */
  async function revoke(
    who: Tenancy,
    id: string,
    reason: string,
    scope?: 'session' | 'user',
    ownedBy?: string,
  ): Promise<SessionRow> {
    const session = await get(who, id, ownedBy)
    if ((scope ?? (policy(session.tenant_id).logoutAllOnLogout ? 'user' : 'session')) === 'user') {
      // The user of that session: user ids are per tenant, so within its tenant whoever asks.
      await revokeAllForUser(
        { ...onlyTenant(session.tenant_id), ...actorOf(who) },
        session.user_id,
        null,
        reason,
      )
      return get(who, id)
    }
    const ended = await repo.end(who, { ids: [id] }, 'revoked', reason, new Date(clock.now()))
    await invalidateEnded(ended)
    return get(who, id)
  }

  /**
   * A session that ran out is ended as expired here if no check has done so
   * yet: suspending or resuming it must not bring it back.
   */
  async function refuseIfExpired(who: Tenancy, id: string): Promise<SessionRow> {
    const session = await get(who, id)
    if (session.status !== 'active' && session.status !== 'suspended') return session
    const now = new Date(clock.now())
    const reason = ranOut(session, now)
    if (!reason) return session
    await invalidateEnded(await repo.end(who, { ids: [id] }, 'expired', reason, now))
    throw new Errors.SESSION_ENDED(id, 'expired')
  }

  /** Suspends an active session by hand. Suspending a suspended one changes nothing. */
  async function suspend(who: Tenancy, id: string, reason: string): Promise<SessionRow> {
    await refuseIfExpired(who, id)
    const suspended = await repo.suspend(who, id, reason, {}, new Date(clock.now()))
    if (suspended) await invalidateChanged([suspended])
    const session = await get(who, id)
    if (session.status !== 'suspended') throw new Errors.SESSION_ENDED(id, session.status)
    return session
  }

  /** Makes a suspended session active again, rebound to `client` if given. Resuming an active one changes nothing. */
  async function resume(who: Tenancy, id: string, client: ClientInfo = {}): Promise<SessionRow> {
    const rebind =
      client.ip || client.user_agent
        ? {
            ip: address(client.ip),
            user_agent: client.user_agent ?? null,
            device: parseDevice(client.user_agent),
          }
        : null
    // Resuming would let whoever holds a key rebind an operator's session to their own browser.
    if ((await refuseIfExpired(who, id)).client_id === CONSOLE_CLIENT)
      throw new Errors.SESSION_NOT_RESUMABLE(id)
    const resumed = await repo.resume(who, id, rebind, new Date(clock.now()))
    if (resumed) await invalidateChanged([resumed])
    const session = await get(who, id)
    if (session.status !== 'active') throw new Errors.SESSION_ENDED(id, session.status)
    return session
  }

  /** Revokes every open session of the listed users, or of every user but the listed ones, in batches. */
  async function revokeInBulk(
    who: Tenancy,
    where: { userIds: string[] } | { allUsersExcept: string[] },
    reason: string,
  ): Promise<number> {
    let total = 0
    for (;;) {
      const ended = await repo.end(who, where, 'revoked', reason, new Date(clock.now()), BATCH)
      total += await invalidateEnded(ended)
      if (ended.length < BATCH) return total
    }
  }

  /** Revokes every open session of a user, or every one but `exceptId` ("log out other devices"). */
  async function revokeAllForUser(
    who: Tenancy,
    userId: string,
    exceptId: string | null,
    reason: string,
  ): Promise<number> {
    const ended = await repo.end(who, { userId, exceptId }, 'revoked', reason, new Date(clock.now()))
    return invalidateEnded(ended)
  }

  /** A page of a user's live sessions, newest first; each row carries its position for the next page's cursor. */
  async function listForUser(
    who: Tenancy,
    userId: string,
    page: PageRequest,
  ): Promise<Positioned<SessionRow>[]> {
    const rows = await repo.listLiveForUser(who, userId, new Date(clock.now()), page)
    return rows.map((row) => ({ ...withLocalUse(row), position_at: row.position_at }))
  }

  /** How many live sessions `who` sees, up to `cap`. */
  function countLive(who: Tenancy, cap: number): Promise<number> {
    return repo.countLive(who, new Date(clock.now()), cap)
  }

  /** How many live sessions a user has. */
  function countForUser(who: Tenancy, userId: string): Promise<number> {
    return repo.countLiveForUser(who, userId, new Date(clock.now()))
  }

  /**
   * The id of the session a token belongs to, whichever kind it is: an opaque token, an access JWT
   * (a genuine one, expired or not) or a refresh token. Null for an unknown token. A refresh token or
   * JWT names a session of whichever tenant: the caller filters by tenant when it acts on the id.
   */
  async function sessionIdOfToken(who: Tenancy, token: string): Promise<string | null> {
    const kind = tokenKind(token)
    if (kind === 'opaque') return (await repo.findByTokenHash(who, hashTokenBytes(token)))?.id ?? null
    if (kind === 'refresh') return (await repo.findRefreshToken(hashTokenBytes(token)))?.session_id ?? null
    if (kind !== 'jwt') return null
    const verified = access.verify(token)
    return (verified instanceof Promise ? await verified : verified)?.sid ?? null
  }

  /**
   * Revokes the session a token belongs to, as `revoke` does; an unknown token, or another tenant's,
   * is SESSION_NOT_FOUND (never named: the token is not echoed).
   */
  async function revokeToken(
    who: Tenancy,
    token: string,
    reason: string,
    scope?: 'session' | 'user',
  ): Promise<SessionRow> {
    const id = await sessionIdOfToken(who, token)
    // A JWT or refresh token of another tenant names a session this caller may not see: answered as
    // an unknown token, so not even its id is told.
    const visible =
      id &&
      (await get(who, id).then(
        () => true,
        (err) => {
          if (err instanceof Errors.SESSION_NOT_FOUND) return false
          throw err
        },
      ))
    if (!id || !visible) throw new Errors.SESSION_NOT_FOUND('with this token')
    return revoke(who, id, reason, scope)
  }

  /**
   * Ends the session a token belongs to (RFC 7009). An unknown token, or another tenant's, changes
   * nothing. Returns whether it found one.
   */
  async function revokeByToken(who: Tenancy, token: string, reason: string): Promise<boolean> {
    const sessionId = await sessionIdOfToken(who, token)
    if (!sessionId) return false
    const ended = await repo.end(who, { ids: [sessionId] }, 'revoked', reason, new Date(clock.now()))
    await invalidateEnded(ended)
    return ended.length > 0
  }

  /** One purge round (see purgeSessions); null when another replica is purging and `wait` is false. */
  function purge(wait: boolean) {
    return purgeSessions(repo, { clock, config, invalidate: invalidateEnded }, wait)
  }

  return {
    get,
    revoke,
    revokeToken,
    suspend,
    resume,
    revokeAllForUser,
    revokeInBulk,
    revokeByToken,
    purge,
    listForUser,
    countForUser,
    countLive,
  }
}
