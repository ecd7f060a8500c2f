import type { Config } from '../config.ts'
import type { SessionRow } from './model.ts'
import type { WriteBehind } from './write-behind.ts'

/** The earlier of a session's two expiry instants. */
export function expiresAt(session: Pick<SessionRow, 'idle_expires_at' | 'absolute_expires_at'>): Date {
  return session.idle_expires_at < session.absolute_expires_at
    ? session.idle_expires_at
    : session.absolute_expires_at
}

/**
 * The one expiry rule every path follows: a use slides the idle expiry, never
 * past the absolute one; the latest use is the stored one or one this replica
 * has not written yet; a session has idled out only past its idle expiry plus
 * the replicas' grace.
 */
export function createExpiry({
  touches,
  config,
}: {
  touches: WriteBehind
  config: Pick<Config, 'accessTokenTtlSeconds'> & { idleGraceMs: number }
}) {
  /** An access JWT lives its configured lifetime, never past the session's absolute expiry. */
  function accessExpiry(session: SessionRow, nowMs: number): Date {
    return new Date(
      Math.min(nowMs + config.accessTokenTtlSeconds * 1000, session.absolute_expires_at.getTime()),
    )
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

  /** A stored row with the latest use this replica saw but has not written yet. */
  function withLocalUse(session: SessionRow): SessionRow {
    const use = touches.lastUse(session.id)
    if (!use || use.at <= session.last_seen_at || session.status !== 'active') return session
    const idle_expires_at = slide(session, use.at.getTime())
    return { ...session, last_seen_at: use.at, ip: use.ip ?? session.ip, idle_expires_at }
  }

  return { accessExpiry, ranOut, lastUse, idleExpiry, slide, withLocalUse }
}

export type Expiry = ReturnType<typeof createExpiry>
