import { randomUUID } from 'node:crypto'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { Errors } from '../errors.ts'
import type { Log } from '../logger.ts'
import type { SessionCache } from './cache.ts'
import { parseDevice } from './device.ts'
import type { EndedSession, SessionRepository, SessionRow } from './repository.ts'
import { generateOpaqueToken, hashToken, tokenKind } from './tokens.ts'

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

export type Introspection = { active: false } | { active: true; session: SessionRow }

interface Deps {
  repo: SessionRepository
  cache: SessionCache
  clock: Clock
  config: Pick<Config, 'idleTimeoutSeconds' | 'absoluteLifetimeSeconds' | 'metadataLimitBytes'>
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
export function createSessionService({ repo, cache, clock, config, log }: Deps) {
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
      token_hash: hashToken(token),
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
   * successful check slides the idle expiry.
   */
  async function introspect(token: string, client: ClientInfo = {}): Promise<Introspection> {
    if (tokenKind(token) === null) return INACTIVE
    const tokenHash = hashToken(token)
    const key = tokenHash.toString('hex')
    const nowMs = clock.now()

    let session = await cache.get(key)
    if (session === undefined) {
      session = (await repo.findByTokenHash(tokenHash)) ?? null
      await cache.set(key, session, nowMs)
    }
    if (session === null || session.status !== 'active') return INACTIVE

    const now = new Date(nowMs)
    if (expiresAt(session) <= now) {
      expire(session, key, now)
      return INACTIVE
    }
    const idleExpires = new Date(
      Math.min(nowMs + session.idle_timeout_seconds * 1000, session.absolute_expires_at.getTime()),
    )
    const touched: SessionRow = {
      ...session,
      last_seen_at: now,
      idle_expires_at: idleExpires,
      ip: client.ip ?? session.ip,
    }
    await repo.touch(session.id, now, client.ip ?? null)
    await cache.set(key, touched, nowMs)
    return { active: true, session: touched }
  }

  /** Records that a session ran out, without holding up the answer (which is "inactive" either way). */
  function expire(session: SessionRow, key: string, now: Date): void {
    const reason = session.absolute_expires_at <= now ? 'absolute_lifetime' : 'idle_timeout'
    repo
      .end({ ids: [session.id] }, 'expired', reason, now)
      .then(() => cache.invalidate([key]))
      .catch((err: unknown) => log.warn({ err, sessionId: session.id }, 'could not record session expiry'))
  }

  async function get(id: string): Promise<SessionRow> {
    const session = await repo.findById(id)
    if (!session) throw new Errors.SESSION_NOT_FOUND(id)
    return session
  }

  /** Ends the sessions in Postgres, then drops them from every cache, then returns. */
  async function endAndInvalidate(ended: EndedSession[]): Promise<number> {
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
    return repo.listLiveForUser(userId, new Date(clock.now()), limit)
  }

  return { open, introspect, get, revoke, revokeAllForUser, listForUser, listEvents: repo.listEvents }
}

export type SessionService = ReturnType<typeof createSessionService>
