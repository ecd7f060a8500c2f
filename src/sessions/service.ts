import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import { normalizeAddress } from '../addresses.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { Errors } from '../errors.ts'
import type { Log } from '../logger.ts'
import type { AccessClaims, AccessTokens } from './access-tokens.ts'
import { RESERVED_CLAIMS } from './access-tokens.ts'
import type { SessionCache } from './cache.ts'
import { parseDevice } from './device.ts'
import { judgeDrift, type Verdict } from './drift.ts'
import type {
  ChangedSession,
  Client,
  ClientInfo,
  Issued,
  JwtPair,
  OpenSessionInput,
  SessionRow,
} from './model.ts'
import { purgeSessions } from './purge.ts'
import type { CacheRead, RefreshTokenRow, SessionRepository } from './repository.ts'
import {
  generateOpaqueToken,
  generateRefreshToken,
  hashToken,
  hashTokenBytes,
  successorRefreshToken,
  tokenKind,
} from './tokens.ts'
import type { WriteBehind } from './write-behind.ts'

/** An active answer carries the stored row as it is, plus this use: when, and until when it now lasts. */
export type Introspection =
  | { active: false; reason?: 'suspended' }
  | { active: true; session: SessionRow; seenAt: Date; expiresAt: Date; claims: AccessClaims | null }

interface Deps {
  repo: SessionRepository
  cache: SessionCache
  touches: WriteBehind
  clock: Clock
  access: AccessTokens
  /** The secret that chains refresh tokens (see successorRefreshToken). */
  refreshSecret: Buffer
  config: Pick<
    Config,
    | 'idleTimeoutSeconds'
    | 'absoluteLifetimeSeconds'
    | 'metadataLimitBytes'
    | 'accessTokenTtlSeconds'
    | 'refreshReuseGraceSeconds'
    | 'uaDriftPolicy'
    | 'ipDriftPolicy'
    | 'ipv4DriftPrefix'
    | 'ipv6DriftPrefix'
    | 'maxSessionsPerUser'
    | 'sessionLimitAction'
    | 'writeBehindIntervalMs'
    | 'purgeRetentionDays'
    | 'eventRetentionDays'
  > & {
    /**
     * How much longer than its idle timeout a session may live when its last
     * use is only known to another replica whose write is still pending (the
     * write-behind interval when there are replicas; 0 for a single one).
     */
    idleGraceMs: number
  }
  log: Log
}

const INACTIVE: Introspection = { active: false }
const SUSPENDED: Introspection = { active: false, reason: 'suspended' }
const BATCH = 1000

/** The earlier of a session's two expiry instants. */
export function expiresAt(session: Pick<SessionRow, 'idle_expires_at' | 'absolute_expires_at'>): Date {
  return session.idle_expires_at < session.absolute_expires_at
    ? session.idle_expires_at
    : session.absolute_expires_at
}

/** The sessions domain: opening, checking and ending sessions, with the expiry policy. */
/** The cache key of a JWT session (its access tokens are many; the session is one). */
export const sessionKey = (id: string) => `sid:${id}`

// A chain of tabs each refreshing within the grace window is short; a long one is not tabs.
const MAX_GRACE_HOPS = 8

export function createSessionService({
  repo,
  cache,
  touches,
  clock,
  access,
  refreshSecret,
  config,
  log,
}: Deps) {
  // When each session last followed a browser update, on this replica: at most one such write per interval.
  const uaFollowedAt = new LRUCache<string, number>({ max: 100_000 })

  /** An address in the one form that is stored and compared; one the parser refuses is bad input, never stored. */
  function address(ip: string | undefined): string | null {
    if (ip === undefined) return null
    const canonical = normalizeAddress(ip)
    if (canonical === null) throw new Errors.VALIDATION_FAILED('ip: not an IP address')
    return canonical
  }

  /** The client as given, its address in canonical form. */
  function presentedClient(client: ClientInfo): ClientInfo {
    if (client.ip === undefined) return client
    const ip = address(client.ip) as string
    return ip === client.ip ? client : { ...client, ip }
  }

  async function open(input: OpenSessionInput, clientId: string | null = null): Promise<Issued> {
    const metadata = input.metadata ?? {}
    const size = Buffer.byteLength(JSON.stringify(metadata))
    if (size > config.metadataLimitBytes) throw new Errors.METADATA_TOO_LARGE(size, config.metadataLimitBytes)
    const claims = [...new Set(input.access_token_claims ?? [])]
    const reserved = claims.find((c) => RESERVED_CLAIMS.has(c))
    if (reserved)
      throw new Errors.VALIDATION_FAILED(`access_token_claims: "${reserved}" is set by the service`)
    const tokenType = input.token_type ?? 'opaque'
    if (claims.length > 0 && tokenType !== 'jwt') {
      throw new Errors.VALIDATION_FAILED('access_token_claims: only JWT sessions carry claims')
    }

    const ip = address(input.ip)
    const now = clock.now()
    const idle = input.idle_timeout ?? config.idleTimeoutSeconds
    const absolute = input.absolute_lifetime ?? config.absoluteLifetimeSeconds
    const absoluteExpires = new Date(now + absolute * 1000)
    const idleExpires = new Date(Math.min(now + idle * 1000, absoluteExpires.getTime()))
    const token = tokenType === 'opaque' ? generateOpaqueToken() : null
    const session: SessionRow & { token_hash: Buffer | null } = {
      id: randomUUID(),
      user_id: input.user_id,
      status: 'active',
      token_type: tokenType,
      token_hash: token ? hashTokenBytes(token) : null,
      ip,
      bound_ip: ip,
      user_agent: input.user_agent ?? null,
      device: parseDevice(input.user_agent),
      metadata,
      access_claims: claims,
      client_id: clientId,
      binding: input.binding ?? {},
      suspended_at: null,
      suspension_reason: null,
      idle_timeout_seconds: idle,
      absolute_lifetime_seconds: absolute,
      created_at: new Date(now),
      last_seen_at: new Date(now),
      idle_expires_at: idleExpires,
      absolute_expires_at: absoluteExpires,
      ended_at: null,
      end_reason: null,
    }
    const limit = {
      max: input.max_sessions ?? config.maxSessionsPerUser,
      action: input.on_limit ?? config.sessionLimitAction,
    }
    if (token) return { token_type: 'opaque', token, session: await store(session, null, limit, now) }

    // Signed before the session is stored: a signing failure leaves nothing behind.
    const refreshToken = generateRefreshToken()
    const grant = { jti: randomUUID(), issuedAt: new Date(now), expiresAt: accessExpiry(session, now) }
    const { token: accessToken, kid } = access.issue(session, grant)
    const refreshRow = {
      token_hash: hashTokenBytes(refreshToken),
      session_id: session.id,
      issued_at: grant.issuedAt,
      access_jti: grant.jti,
      access_kid: kid,
      access_expires_at: grant.expiresAt,
    }
    const stored = await store(session, refreshRow, limit, now)
    return {
      token_type: 'jwt',
      access_token: accessToken,
      access_token_expires_at: grant.expiresAt,
      refresh_token: refreshToken,
      session: stored,
    }
  }

  /**
   * Stores a new session. Under a concurrent-session limit the user's logins
   * take turns (an advisory lock in the transaction), so racing logins never
   * leave the user over it; the sessions evicted to make room are ended in the
   * same transaction and dropped from the caches after it commits.
   */
  async function store(
    session: Parameters<SessionRepository['insert']>[0],
    refreshRow: Parameters<SessionRepository['insert']>[1],
    limit: { max: number; action: Config['sessionLimitAction'] },
    nowMs: number,
  ): Promise<SessionRow> {
    if (limit.max <= 0) return repo.insert(session, refreshRow)
    const outcome = await repo.transaction(async (tx) => {
      await tx.lockUser(session.user_id)
      const now = new Date(nowMs)
      // Live and last used as this replica knows it: a use it has not written yet counts.
      const live = (await tx.openForLimit(session.user_id, now))
        .map((s) => ({ id: s.id, lastUse: lastUse(s), idleExpires: idleExpiry(s, config.idleGraceMs) }))
        .filter((s) => s.idleExpires > now)
      const excess = live.length - limit.max + 1
      let evicted: ChangedSession[] = []
      if (excess > 0) {
        if (limit.action === 'reject') return { rejected: true as const }
        const order =
          limit.action === 'evict_least_recently_used'
            ? [...live].sort((a, b) => a.lastUse.getTime() - b.lastUse.getTime())
            : live
        const ids = order.slice(0, excess).map((s) => s.id)
        evicted = await tx.end({ ids }, 'revoked', 'session_limit', now)
      }
      return { rejected: false as const, stored: await tx.insert(session, refreshRow), evicted }
    })
    if (outcome.rejected) throw new Errors.SESSION_LIMIT_REACHED(session.user_id, limit.max)
    await endAndInvalidate(outcome.evicted)
    return outcome.stored
  }

  /** An access JWT lives its configured lifetime, never past the session's absolute expiry. */
  function accessExpiry(session: SessionRow, nowMs: number): Date {
    return new Date(
      Math.min(nowMs + config.accessTokenTtlSeconds * 1000, session.absolute_expires_at.getTime()),
    )
  }

  /**
   * Is this token good right now? Unknown, malformed, expired and ended tokens
   * are all simply inactive. Both expiries are checked on every call; a
   * successful check slides the idle expiry (written behind, not waited for).
   */
  async function introspect(token: string, given: ClientInfo = {}): Promise<Introspection> {
    const client = presentedClient(given)
    const kind = tokenKind(token)
    if (kind === 'opaque') {
      const key = hashToken(token)
      return check(
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
    if (!claims || !access.timely(claims, nowMs)) return INACTIVE
    return check(sessionKey(claims.sid), () => repo.readForCache({ id: claims.sid }), nowMs, client, claims)
  }

  /** The session behind a token, through the cache: live, not expired, and (for a JWT) the one it names. */
  async function check(
    key: string,
    load: () => Promise<CacheRead>,
    nowMs: number,
    client: ClientInfo,
    claims: AccessClaims | null,
  ): Promise<Introspection> {
    let session = cache.peek(key)
    if (session === undefined) session = await cache.lookup(key, load, nowMs)
    if (session === null) return INACTIVE
    if (claims && (session.token_type !== 'jwt' || session.user_id !== claims.sub)) return INACTIVE
    if (session.status !== 'active') return session.status === 'suspended' ? SUSPENDED : INACTIVE
    const now = new Date(nowMs)
    if (session.absolute_expires_at <= now) return expire(session, 'absolute_lifetime', now)

    if (idleExpiry(session) <= now) {
      // A cached row's last use may be old: only a fresh read can say the session really idled out.
      const readStartedAt = performance.now()
      const fresh = await repo.findById(session.id)
      if (fresh?.status !== 'active') return INACTIVE
      session = fresh
      cache.refresh(key, fresh, readStartedAt)
      if (idleExpiry(fresh, config.idleGraceMs) <= now) return expire(fresh, 'idle_timeout', now)
    }

    const verdict = judge(session, client, nowMs)
    if (verdict) {
      const outcome = await applyDrift(repo, session, verdict, client, now)
      await endAndInvalidate(outcome.changed, false)
      if (outcome.session === null) return SUSPENDED
      session = outcome.session
    }

    touches.record(session.id, now, client.ip ?? null)
    let expiresAt = slide(session, nowMs)
    if (claims && claims.exp * 1000 < expiresAt.getTime()) expiresAt = new Date(claims.exp * 1000)
    return { active: true, session, seenAt: now, expiresAt, claims }
  }

  /**
   * Judges a use against the session's client: null when there is nothing to
   * do (the common case, no work beyond a comparison). A browser update is
   * followed at most once per WRITE_BEHIND_INTERVAL_MS per session on this
   * replica; between, the newer version is simply not drift.
   */
  function judge(session: SessionRow, client: ClientInfo, nowMs: number): Verdict | null {
    if (!client.ip && !client.user_agent && !client.required) return null
    const verdict = judgeDrift(
      boundClient(session),
      session.binding,
      client.ip ?? null,
      client.user_agent ?? null,
      config,
      client.required,
    )
    if (verdict.uaUpdated && verdict.drifted.length === 0) {
      const followed = uaFollowedAt.get(session.id)
      if (followed !== undefined && nowMs - followed < config.writeBehindIntervalMs) return null
      uaFollowedAt.set(session.id, nowMs)
    }
    return verdict.drifted.length > 0 || verdict.uaUpdated ? verdict : null
  }

  /**
   * Acts on drift by policy, through `store` (the repository, or a
   * transaction's): suspends (session null), or rebinds the session to the
   * client it is now used from, recording a `session.client_changed` event
   * unless the change was only a browser update. Returns what changed, for
   * the caller to drop from every cache once it is committed.
   */
  async function applyDrift(
    store: SessionRepository,
    session: SessionRow,
    verdict: Verdict,
    client: ClientInfo,
    now: Date,
  ): Promise<{ session: SessionRow | null; changed: ChangedSession[] }> {
    const previous = boundClient(session)
    // A value the caller should have had and did not is shown as missing, not as the bound one.
    const presented: Client = {
      ip: client.ip ?? (client.required?.ip ? null : session.bound_ip),
      user_agent: client.user_agent ?? (client.required?.user_agent ? null : session.user_agent),
      device: client.user_agent ? parseDevice(client.user_agent) : session.device,
    }
    const suspendFor = verdict.drifted.filter((d) => d.policy === 'suspend').map((d) => d.dimension)
    if (suspendFor.length > 0) {
      const reason = `${suspendFor[0]}_drift`
      const data = { dimensions: suspendFor, previous, current: presented }
      const suspended = await store.suspend(session.id, reason, data, now)
      return { session: null, changed: suspended ? [suspended] : [] }
    }
    // Only dimensions the use presented drift under `record`, so the presented values are real ones here.
    const changed = verdict.drifted.map((d) => d.dimension)
    const uaMoves = verdict.uaUpdated || changed.includes('user_agent')
    const current: Client = {
      ip: changed.includes('ip') ? presented.ip : session.bound_ip,
      user_agent: uaMoves ? presented.user_agent : session.user_agent,
      device: uaMoves ? presented.device : session.device,
    }
    const event =
      changed.length > 0
        ? { type: 'session.client_changed' as const, data: { changed, previous, current } }
        : null
    const updated = await store.updateClient(session.id, current, event, now)
    return {
      session: { ...session, ...current, ip: current.ip ?? session.ip, bound_ip: current.ip },
      changed: updated ? [updated] : [],
    }
  }

  /** The client a session is bound to (its last-seen address moves with every use; this does not). */
  function boundClient(session: SessionRow): Client {
    return { ip: session.bound_ip, user_agent: session.user_agent, device: session.device }
  }

  /**
   * Exchanges a refresh token for a new access JWT and a new refresh token.
   * The old one is spent. Presented again within the grace window, it gets the
   * session's current pair again (two tabs refreshing at once); after it, it
   * is taken for stolen and the session is revoked. The client presenting it
   * is judged for drift as in introspection, before anything is spent.
   */
  async function refresh(refreshToken: string, given: ClientInfo = {}): Promise<JwtPair> {
    if (tokenKind(refreshToken) !== 'refresh') throw new Errors.REFRESH_TOKEN_INVALID()
    const client = presentedClient(given)
    const presentedHash = hashTokenBytes(refreshToken)
    const outcome = await repo.transaction(async (tx) => {
      const locked = await tx.lockSessionOfRefreshToken(presentedHash)
      // Read after the lock: a concurrent refresh of this session has committed by now.
      const presented = locked && (await tx.findRefreshToken(presentedHash))
      if (!locked || !presented) return { kind: 'invalid' as const }
      if (locked.status !== 'active') return { kind: 'ended' as const, session: locked }
      const nowMs = clock.now()
      const now = new Date(nowMs)
      const expiredBy = ranOut(locked, now)
      if (expiredBy) {
        return {
          kind: 'expired' as const,
          ended: await tx.end({ ids: [locked.id] }, 'expired', expiredBy, now),
        }
      }

      // Strictly within: a grace of 0 turns the window off, even for a replay in the same millisecond.
      const inGrace =
        presented.spent_at !== null &&
        nowMs - presented.spent_at.getTime() < config.refreshReuseGraceSeconds * 1000
      if (presented.spent_at !== null && !inGrace) {
        await tx.recordEvent(
          locked,
          'refresh_token.reused',
          { spent_at: presented.spent_at, ip: client.ip ?? null, user_agent: client.user_agent ?? null },
          now,
        )
        return {
          kind: 'reused' as const,
          ended: await tx.end({ ids: [locked.id] }, 'revoked', 'refresh_token_reused', now),
        }
      }

      // A refresh is a use like an introspection: drift suspends the session (the token stays unspent) or rebinds it.
      let session = locked
      let changed: ChangedSession[] = []
      const verdict = judge(session, client, nowMs)
      if (verdict) {
        const drift = await applyDrift(tx, session, verdict, client, now)
        if (drift.session === null)
          return { kind: 'suspended' as const, id: session.id, changed: drift.changed }
        session = drift.session
        changed = drift.changed
      }

      if (presented.spent_at === null) {
        const successor = successorRefreshToken(refreshToken, refreshSecret)
        const grant = { jti: randomUUID(), issuedAt: now, expiresAt: accessExpiry(session, nowMs) }
        // Signed inside the transaction: a signing failure spends nothing.
        const signed = access.issue(session, grant)
        const updated = await tx.rotateRefreshToken(
          presentedHash,
          {
            token_hash: hashTokenBytes(successor),
            session_id: session.id,
            issued_at: now,
            access_jti: grant.jti,
            access_kid: signed.kid,
            access_expires_at: grant.expiresAt,
          },
          { at: now, ip: client.ip ?? null, idleExpiresAt: slide(session, nowMs) },
        )
        touches.forget(session.id)
        const issued = jwtPair(updated, signed.token, grant.expiresAt, successor)
        return { kind: 'issued' as const, issued, changed }
      }

      const head = await currentPair(tx, refreshToken, presented)
      if (!head) return { kind: 'invalid' as const }
      const grant = {
        jti: head.row.access_jti,
        issuedAt: head.row.issued_at,
        expiresAt: head.row.access_expires_at,
        kid: head.row.access_kid,
      }
      const { token } = access.issue(session, grant)
      const issued = jwtPair(session, token, grant.expiresAt, head.token)
      return { kind: 'issued' as const, issued, changed }
    })

    switch (outcome.kind) {
      case 'issued':
        await endAndInvalidate(outcome.changed, false)
        return outcome.issued
      case 'invalid':
        throw new Errors.REFRESH_TOKEN_INVALID()
      case 'ended':
        throw outcome.session.status === 'suspended'
          ? new Errors.SESSION_SUSPENDED(outcome.session.id)
          : outcome.session.status === 'expired'
            ? new Errors.SESSION_EXPIRED(outcome.session.id)
            : new Errors.SESSION_REVOKED(outcome.session.id)
      case 'suspended':
        await endAndInvalidate(outcome.changed, false)
        throw new Errors.SESSION_SUSPENDED(outcome.id)
      case 'expired':
        await endAndInvalidate(outcome.ended)
        throw new Errors.SESSION_EXPIRED(outcome.ended[0]?.id ?? '')
      case 'reused':
        await endAndInvalidate(outcome.ended)
        log.warn({ sessionId: outcome.ended[0]?.id }, 'spent refresh token presented again: session revoked')
        throw new Errors.REFRESH_TOKEN_REUSED()
    }
  }

  /**
   * Follows a spent token's successors to the one not yet spent, deriving each
   * successor token on the way; null if the chain does not lead there (too
   * long, or derived with another secret).
   */
  async function currentPair(
    tx: SessionRepository,
    token: string,
    row: RefreshTokenRow,
  ): Promise<{ token: string; row: RefreshTokenRow } | null> {
    for (let hop = 0; hop < MAX_GRACE_HOPS && row.successor_hash; hop++) {
      token = successorRefreshToken(token, refreshSecret)
      const next = await tx.findRefreshToken(row.successor_hash)
      if (!next?.token_hash.equals(hashTokenBytes(token))) return null
      row = next
      if (row.spent_at === null) return { token, row }
    }
    return null
  }

  function jwtPair(session: SessionRow, accessToken: string, expiresAt: Date, refreshToken: string): JwtPair {
    return {
      token_type: 'jwt',
      access_token: accessToken,
      access_token_expires_at: expiresAt,
      refresh_token: refreshToken,
      session: withLocalUse(session),
    }
  }

  /** Which expiry a session is past at `now` (the idle one with the replicas' grace), or null. */
  function ranOut(session: SessionRow, now: Date): 'absolute_lifetime' | 'idle_timeout' | null {
    if (session.absolute_expires_at <= now) return 'absolute_lifetime'
    return idleExpiry(session, config.idleGraceMs) <= now ? 'idle_timeout' : null
  }

  /** The latest use of a session: stored, or seen by this replica and not written yet. */
  function lastUse(session: Pick<SessionRow, 'id' | 'last_seen_at'>): Date {
    const local = touches.lastUse(session.id)?.at
    return local && local > session.last_seen_at ? local : session.last_seen_at
  }

  /** When the session idles out, counting the latest use this replica knows of (plus a grace). */
  function idleExpiry(
    session: Pick<SessionRow, 'id' | 'last_seen_at' | 'idle_timeout_seconds' | 'absolute_expires_at'>,
    graceMs = 0,
  ): Date {
    return slide(session, lastUse(session).getTime() + graceMs)
  }

  /** The idle expiry after a use at `nowMs`, never past the absolute expiry. */
  function slide(
    session: Pick<SessionRow, 'idle_timeout_seconds' | 'absolute_expires_at'>,
    nowMs: number,
  ): Date {
    return new Date(
      Math.min(nowMs + session.idle_timeout_seconds * 1000, session.absolute_expires_at.getTime()),
    )
  }

  /** Records that a session ran out (once), without holding up the answer, which is "inactive" either way. */
  function expire(session: SessionRow, reason: string, now: Date): Introspection {
    repo
      .end({ ids: [session.id] }, 'expired', reason, now)
      .then((ended) => endAndInvalidate(ended))
      .catch((err: unknown) => log.warn({ err, sessionId: session.id }, 'could not record session expiry'))
    return INACTIVE
  }

  /** A stored row with the latest use this replica saw but has not written yet. */
  function withLocalUse(session: SessionRow): SessionRow {
    const use = touches.lastUse(session.id)
    if (!use || use.at <= session.last_seen_at || session.status !== 'active') return session
    const idle_expires_at = slide(session, use.at.getTime())
    return { ...session, last_seen_at: use.at, ip: use.ip ?? session.ip, idle_expires_at }
  }

  async function get(id: string): Promise<SessionRow> {
    const session = await repo.findById(id)
    if (!session) throw new Errors.SESSION_NOT_FOUND(id)
    return withLocalUse(session)
  }

  /** After a change in Postgres, drops the sessions from every cache (and, when they ended, their pending bookkeeping). */
  async function endAndInvalidate(ended: ChangedSession[], forget = true): Promise<number> {
    if (forget) for (const e of ended) touches.forget(e.id)
    await cache.invalidate(ended.map((e) => (e.token_hash ? e.token_hash.toString('hex') : sessionKey(e.id))))
    return ended.length
  }

  /**
   * Revokes one session, or with scope `user` every open session of its user
   * ("log out everywhere"). Idempotent: revoking an ended session changes nothing.
   */
  async function revoke(
    id: string,
    reason: string,
    scope: 'session' | 'user' = 'session',
  ): Promise<SessionRow> {
    if (scope === 'user') {
      const session = await get(id)
      await revokeAllForUser(session.user_id, null, reason)
      return get(id)
    }
    const ended = await repo.end({ ids: [id] }, 'revoked', reason, new Date(clock.now()))
    await endAndInvalidate(ended)
    return get(id)
  }

  /**
   * A session that ran out is ended as expired here if no check has done so
   * yet: suspending or resuming it must not bring it back.
   */
  async function refuseIfExpired(id: string): Promise<void> {
    const session = await get(id)
    if (session.status !== 'active' && session.status !== 'suspended') return
    const now = new Date(clock.now())
    const reason = ranOut(session, now)
    if (!reason) return
    await endAndInvalidate(await repo.end({ ids: [id] }, 'expired', reason, now))
    throw new Errors.SESSION_ENDED(id, 'expired')
  }

  /** Suspends an active session by hand. Suspending a suspended one changes nothing. */
  async function suspend(id: string, reason: string): Promise<SessionRow> {
    await refuseIfExpired(id)
    const suspended = await repo.suspend(id, reason, {}, new Date(clock.now()))
    if (suspended) await endAndInvalidate([suspended], false)
    const session = await get(id)
    if (session.status !== 'suspended') throw new Errors.SESSION_ENDED(id, session.status)
    return session
  }

  /** Makes a suspended session active again, rebound to `client` if given. Resuming an active one changes nothing. */
  async function resume(id: string, client: ClientInfo = {}): Promise<SessionRow> {
    const rebind =
      client.ip || client.user_agent
        ? {
            ip: address(client.ip),
            user_agent: client.user_agent ?? null,
            device: parseDevice(client.user_agent),
          }
        : null
    await refuseIfExpired(id)
    const resumed = await repo.resume(id, rebind, new Date(clock.now()))
    if (resumed) await endAndInvalidate([resumed], false)
    const session = await get(id)
    if (session.status !== 'active') throw new Errors.SESSION_ENDED(id, session.status)
    return session
  }

  /** Revokes every open session of the listed users, or of every user but the listed ones, in batches. */
  async function revokeInBulk(
    where: { userIds: string[] } | { allUsersExcept: string[] },
    reason: string,
  ): Promise<number> {
    let total = 0
    for (;;) {
      const ended = await repo.end(where, 'revoked', reason, new Date(clock.now()), BATCH)
      total += await endAndInvalidate(ended)
      if (ended.length < BATCH) return total
    }
  }

  /** Revokes every open session of a user, or every one but `exceptId` ("log out other devices"). */
  async function revokeAllForUser(userId: string, exceptId: string | null, reason: string): Promise<number> {
    const ended = await repo.end({ userId, exceptId }, 'revoked', reason, new Date(clock.now()))
    return endAndInvalidate(ended)
  }

  async function listForUser(userId: string, limit: number): Promise<SessionRow[]> {
    return (await repo.listLiveForUser(userId, new Date(clock.now()), limit)).map(withLocalUse)
  }

  /**
   * Is this refresh token good right now (RFC 7662 asks this of any token)?
   * Unspent, and its session live. Looking does not count as a use.
   */
  async function introspectRefreshToken(token: string): Promise<Introspection> {
    if (tokenKind(token) !== 'refresh') return INACTIVE
    const row = await repo.findRefreshToken(hashTokenBytes(token))
    if (!row || row.spent_at !== null) return INACTIVE
    const session = await repo.findById(row.session_id)
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

  /**
   * Ends the session a token belongs to, whichever kind it is (RFC 7009): an
   * opaque token, an access JWT (a genuine one, expired or not) or a refresh
   * token. An unknown token changes nothing. Returns whether it found one.
   */
  async function revokeByToken(token: string, reason: string): Promise<boolean> {
    let sessionId: string | undefined
    const kind = tokenKind(token)
    if (kind === 'opaque') sessionId = (await repo.findByTokenHash(hashTokenBytes(token)))?.id
    else if (kind === 'refresh') sessionId = (await repo.findRefreshToken(hashTokenBytes(token)))?.session_id
    else if (kind === 'jwt') {
      const verified = access.verify(token)
      sessionId = (verified instanceof Promise ? await verified : verified)?.sid
    }
    if (!sessionId) return false
    await endAndInvalidate(await repo.end({ ids: [sessionId] }, 'revoked', reason, new Date(clock.now())))
    return true
  }

  /** One purge round (see purgeSessions); null when another replica is purging and `wait` is false. */
  function purge(wait: boolean) {
    return purgeSessions(repo, { clock, config, invalidate: endAndInvalidate }, wait)
  }

  return {
    open,
    introspect,
    refresh,
    get,
    revoke,
    suspend,
    resume,
    revokeAllForUser,
    revokeInBulk,
    revokeByToken,
    introspectRefreshToken,
    purge,
    listForUser,
    listEvents: repo.listEvents,
  }
}

export type SessionService = ReturnType<typeof createSessionService>
