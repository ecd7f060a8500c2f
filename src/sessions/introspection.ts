import { performance } from 'node:perf_hooks'
import type { AccessClaims } from '../keys/access-tokens.ts'
import { DEFAULT_TENANT, EVERY_TENANT, sees, type Tenancy } from '../tenants/tenancy.ts'
import type { SessionContext } from './context.ts'
import type { Verdict } from './drift.ts'
import { expiresAt } from './expiry.ts'
import { sessionKey, tokenKey } from './invalidation.ts'
import type { ClientInfo, SessionRow } from './model.ts'
import { presentedClient } from './presented-client.ts'
import type { CacheRead } from './repository.ts'
import { hashTokenBytes, tokenKind } from './tokens.ts'

/** An active answer carries the stored row as it is, plus this use: when, and until when it now lasts. */
export type Introspection =
  | { active: false; reason?: InactiveReason }
  | { active: true; session: SessionRow; seenAt: Date; expiresAt: Date; claims: AccessClaims | null }

/** Why a token of a session the caller may see is inactive; unknown and other tenants' tokens have no reason. */
export type InactiveReason = 'suspended' | 'revoked' | 'expired'

const INACTIVE: Introspection = { active: false }
const SUSPENDED: Introspection = { active: false, reason: 'suspended' }
const REVOKED: Introspection = { active: false, reason: 'revoked' }
const EXPIRED: Introspection = { active: false, reason: 'expired' }
const ENDED = { suspended: SUSPENDED, revoked: REVOKED, expired: EXPIRED } as const
/** A cached session is past an expiry: the database decides. */
const DUE = Symbol('due')

/** Is this token good right now: the check behind every introspection, and drift judged on the way. */
export function createIntrospection({
  repo,
  cache,
  touches,
  clock,
  access,
  config,
  log,
  expiry,
  invalidation,
  drift,
}: SessionContext) {
  const { idleExpiry, slide, ranOut, withLocalUse } = expiry
  const { invalidateEnded, invalidateChanged } = invalidation
  const { judge, applyDrift } = drift

  /**
   * Is this token good right now? Unknown, malformed, expired and ended tokens
   * are all simply inactive. Both expiries are checked on every call; a
   * successful check slides the idle expiry (written behind, not waited for).
   */
  async function introspect(who: Tenancy, token: string, given: ClientInfo = {}): Promise<Introspection> {
    const client = presentedClient(given)
    const kind = tokenKind(token)
    if (kind === 'opaque') {
      const key = tokenKey(token)
      return check(
        who,
        key,
        () => repo.readForCache({ tokenHash: Buffer.from(key, 'hex') }),
        clock.now(),
        client,
        null,
      )
    }
    if (kind !== 'jwt') return INACTIVE
    const verified = access.verify(token)
    const claims = verified instanceof Promise ? await verified : verified
    const nowMs = clock.now()
    if (!claims) return INACTIVE
    // Another tenant's token is unknown, whatever else is true of it: its signed tid says whose it is
    // (tokens from before tenants have none, and were the default tenant's), so no read is needed.
    // check() compares the session's own tenant again.
    if (!sees(who, claims.tid ?? DEFAULT_TENANT)) return INACTIVE
    // A genuine token past its exp: the session may live on, this token does not.
    if (!access.timely(claims, nowMs)) return claims.exp * 1000 <= nowMs ? EXPIRED : INACTIVE
    const load = () => repo.readForCache({ id: claims.sid })
    return check(who, sessionKey(claims.sid), load, nowMs, client, claims)
  }

  /**
   * An opaque token's active answer from this replica's memory alone, as
   * `introspect` would give it (and a use, as there); undefined for any other
   * answer, or when giving it needs a read or a write (not cached, an expiry
   * reached, drift): then `introspect` gives it. For callers that answer
   * without waiting (the forward-auth fast lane), whose client address is
   * canonical already.
   */
  function introspectFromMemory(who: Tenancy, token: string, client: ClientInfo): Introspection | undefined {
    if (tokenKind(token) !== 'opaque') return undefined
    // Counted only when answered: otherwise `introspect` looks again, and counts.
    const session = cache.peek(tokenKey(token), false)
    if (!session) return undefined
    const settled = settle(who, session, clock.now(), client, null)
    if (settled === DUE || !('active' in settled) || !settled.active) return undefined
    cache.countHit()
    return settled
  }

  /** The session behind a token, through the cache: live, not expired, and (for a JWT) the one it names. */
  async function check(
    who: Tenancy,
    key: string,
    load: () => Promise<CacheRead>,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Promise<Introspection> {
    let session = cache.peek(key)
    if (session === undefined) session = await cache.lookup(key, load, nowMs)
    const settled = settle(who, session, nowMs, client, claims)
    // settle() only asks for the database about a session it found.
    if (settled === DUE) return checkExpiry(key, session as SessionRow, nowMs, client, claims)
    if ('active' in settled) return settled
    return drifted(session as SessionRow, settled, nowMs, client, claims)
  }

  /**
   * What memory alone can say of a cached session (null: none): the answer;
   * DUE when an expiry is reached (only the database can say whether it really
   * ran out); or the drift to act on.
   */
  function settle(
    who: Tenancy,
    session: SessionRow | null,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Introspection | typeof DUE | Verdict {
    // The cache is shared by every tenant (a token is one session whoever asks): the tenant is checked
    // here, before anything else, and another tenant's session is simply unknown.
    if (session === null || !sees(who, session.tenant_id)) return INACTIVE
    if (claims && (session.token_type !== 'jwt' || session.user_id !== claims.sub)) return INACTIVE
    if (session.status !== 'active') return ENDED[session.status]
    if (session.absolute_expires_at.getTime() <= nowMs || idleExpiry(session).getTime() <= nowMs) return DUE
    return judge(session, client, nowMs) ?? use(session, nowMs, client, claims)
  }

  /** A cached session past an expiry: ended if it is, else judged and used as the fresh row. */
  async function checkExpiry(
    key: string,
    cached: SessionRow,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Promise<Introspection> {
    const now = new Date(nowMs)
    if (cached.absolute_expires_at <= now) return expire(cached, 'absolute_lifetime', now)
    // A cached row's last use may be old: only a fresh read can say the session really idled out.
    const readStartedAt = performance.now()
    const fresh = await repo.findById(EVERY_TENANT, cached.id)
    if (!fresh) return INACTIVE
    if (fresh.status !== 'active') return ENDED[fresh.status]
    cache.refresh(key, fresh, readStartedAt)
    if (idleExpiry(fresh, config.idleGraceMs) <= now) return expire(fresh, 'idle_timeout', now)
    const verdict = judge(fresh, client, nowMs)
    return verdict ? drifted(fresh, verdict, nowMs, client, claims) : use(fresh, nowMs, client, claims)
  }

  /** Acts on drift: suspended, or used as the session rebound to this client. */
  async function drifted(
    session: SessionRow,
    verdict: Verdict,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Promise<Introspection> {
    const outcome = await applyDrift(repo, session, verdict, client, new Date(nowMs))
    await invalidateChanged(outcome.changed)
    return outcome.session === null ? SUSPENDED : use(outcome.session, nowMs, client, claims)
  }

  /** An active answer: this use is recorded (written behind) and slides the idle expiry. */
  function use(
    session: SessionRow,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Introspection {
    const now = new Date(nowMs)
    touches.record(session.id, now, client.ip ?? null)
    let expiresAt = slide(session, nowMs)
    if (claims && claims.exp * 1000 < expiresAt.getTime()) expiresAt = new Date(claims.exp * 1000)
    return { active: true, session, seenAt: now, expiresAt, claims }
  }

  /** Records that a session ran out (once), without holding up the answer, which is "inactive" either way. */
  function expire(session: SessionRow, reason: string, now: Date): Introspection {
    repo
      .end(EVERY_TENANT, { ids: [session.id] }, 'expired', reason, now)
      .then((ended) => invalidateEnded(ended))
      .catch((err: unknown) => log.warn({ err, sessionId: session.id }, 'could not record session expiry'))
    return EXPIRED
  }

  /**
   * Is this refresh token good right now (RFC 7662 asks this of any token)?
   * Unspent, and its session live. Looking does not count as a use.
   */
  async function introspectRefreshToken(who: Tenancy, token: string): Promise<Introspection> {
    if (tokenKind(token) !== 'refresh') return INACTIVE
    const row = await repo.findRefreshToken(hashTokenBytes(token))
    if (!row || row.spent_at !== null) return INACTIVE
    const session = await repo.findById(who, row.session_id)
    const now = new Date(clock.now())
    if (session?.status !== 'active' || ranOut(session, now)) return INACTIVE
    return {
      active: true,
      session,
      seenAt: row.issued_at,
      expiresAt: expiresAt(withLocalUse(session)),
      claims: null,
    }
  }

  return { introspect, introspectFromMemory, introspectRefreshToken }
}
