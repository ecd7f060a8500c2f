import { randomUUID } from 'node:crypto'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { Errors } from '../errors.ts'
import type { Log } from '../logger.ts'
import type { SessionCache } from './cache.ts'
import { parseDevice } from './device.ts'
import type { EndedSession, SessionRepository, SessionRow } from './repository.ts'
import { generateOpaqueToken, hashToken, tokenKind } from './tokens.ts'
import type { WriteBehind } from './write-behind.ts'

export interface OpenSessionInput {
  user_id: string
  ip?: string
  user_agent?: string
  metadata?: Record<string, unknown>
  idle_timeout?: number
  absolute_lifetime?: number
}

export interface ClientInfo {
  ip?: string
  user_agent?: string
}

/** An active answer carries the stored row as it is, plus this use: when, and until when it now lasts. */
export type Introspection =
  | { active: false }
  | { active: true; session: SessionRow; seenAt: Date; expiresAt: Date }

interface Deps {
  repo: SessionRepository
  cache: SessionCache
  touches: WriteBehind
  clock: Clock
  config: Pick<Config, 'idleTimeoutSeconds' | 'absoluteLifetimeSeconds' | 'metadataLimitBytes'> & {
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

/** The earlier of a session's two expiry instants. */
export function expiresAt(session: Pick<SessionRow, 'idle_expires_at' | 'absolute_expires_at'>): Date {
  return session.idle_expires_at < session.absolute_expires_at
    ? session.idle_expires_at
    : session.absolute_expires_at
}

/** The sessions domain: opening, checking and ending sessions, with the expiry policy. */
export function createSessionService({ repo, cache, touches, clock, config, log }: Deps) {
  async function open(input: OpenSessionInput): Promise<{ token: string; session: SessionRow }> {
    const metadata = input.metadata ?? {}
    const size = Buffer.byteLength(JSON.stringify(metadata))
    if (size > config.metadataLimitBytes) throw new Errors.METADATA_TOO_LARGE(size, config.metadataLimitBytes)

    const now = clock.now()
    const idle = input.idle_timeout ?? config.idleTimeoutSeconds
    const absolute = input.absolute_lifetime ?? config.absoluteLifetimeSeconds
    const absoluteExpires = new Date(now + absolute * 1000)
    const idleExpires = new Date(Math.min(now + idle * 1000, absoluteExpires.getTime()))
    const token = generateOpaqueToken()
    const session = await repo.insert({
      id: randomUUID(),
      user_id: input.user_id,
      token_hash: Buffer.from(hashToken(token), 'hex'),
      ip: input.ip ?? null,
      user_agent: input.user_agent ?? null,
      device: parseDevice(input.user_agent),
      metadata,
      idle_timeout_seconds: idle,
      absolute_lifetime_seconds: absolute,
      created_at: new Date(now),
      last_seen_at: new Date(now),
      idle_expires_at: idleExpires,
      absolute_expires_at: absoluteExpires,
    })
    return { token, session }
  }

  /**
   * Is this token good right now? Unknown, malformed, expired and ended tokens
   * are all simply inactive. Both expiries are checked on every call; a
   * successful check slides the idle expiry (written behind, not waited for).
   */
  async function introspect(token: string, client: ClientInfo = {}): Promise<Introspection> {
    if (tokenKind(token) === null) return INACTIVE
    const key = hashToken(token)
    const nowMs = clock.now()
    let session = cache.peek(key)
    if (session === undefined) {
      const load = async () => (await repo.findByTokenHash(Buffer.from(key, 'hex'))) ?? null
      session = await cache.lookup(key, load, nowMs)
    }
    if (session === null || session.status !== 'active') return INACTIVE
    const now = new Date(nowMs)
    if (session.absolute_expires_at <= now) return expire(session, 'absolute_lifetime', now)

    if (idleExpiry(session) <= now) {
      // A cached row's last use may be old: only a fresh read can say the session really idled out.
      const fresh = await repo.findById(session.id)
      if (fresh?.status !== 'active') return INACTIVE
      session = fresh
      cache.refresh(key, fresh)
      if (idleExpiry(fresh, config.idleGraceMs) <= now) return expire(fresh, 'idle_timeout', now)
    }

    touches.record(session.id, now, client.ip ?? null)
    return { active: true, session, seenAt: now, expiresAt: slide(session, nowMs) }
  }

  /** When the session idles out, counting the latest use this replica knows of (plus a grace). */
  function idleExpiry(session: SessionRow, graceMs = 0): Date {
    const local = touches.lastUse(session.id)?.at
    const seen = local && local > session.last_seen_at ? local : session.last_seen_at
    return slide(session, seen.getTime() + graceMs)
  }

  /** The idle expiry after a use at `nowMs`, never past the absolute expiry. */
  function slide(session: SessionRow, nowMs: number): Date {
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

  /** Ends the sessions in Postgres, then drops them from every cache, then returns. */
  async function endAndInvalidate(ended: EndedSession[]): Promise<number> {
    for (const e of ended) touches.forget(e.id)
    await cache.invalidate(ended.map((e) => e.token_hash.toString('hex')))
    return ended.length
  }

  /** Revokes one session. Idempotent: revoking an ended session changes nothing and is not an error. */
  async function revoke(id: string, reason: string): Promise<SessionRow> {
    const ended = await repo.end({ ids: [id] }, 'revoked', reason, new Date(clock.now()))
    await endAndInvalidate(ended)
    return get(id)
  }

  /** Revokes every open session of a user, or every one but `exceptId` ("log out other devices"). */
  async function revokeAllForUser(userId: string, exceptId: string | null, reason: string): Promise<number> {
    const ended = await repo.end({ userId, exceptId }, 'revoked', reason, new Date(clock.now()))
    return endAndInvalidate(ended)
  }

  async function listForUser(userId: string, limit: number): Promise<SessionRow[]> {
    return (await repo.listLiveForUser(userId, new Date(clock.now()), limit)).map(withLocalUse)
  }

  return { open, introspect, get, revoke, revokeAllForUser, listForUser, listEvents: repo.listEvents }
}

export type SessionService = ReturnType<typeof createSessionService>
