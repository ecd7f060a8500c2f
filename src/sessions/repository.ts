import type { Sql } from '../db/connect.ts'
import type { Device } from './device.ts'

/** A session as stored (never with its token hash: that stays in the repository). */
export interface SessionRow {
  id: string
  user_id: string
  status: 'active' | 'suspended' | 'revoked' | 'expired'
  ip: string | null
  user_agent: string | null
  device: Device
  metadata: Record<string, unknown>
  idle_timeout_seconds: number
  absolute_lifetime_seconds: number
  created_at: Date
  last_seen_at: Date
  idle_expires_at: Date
  absolute_expires_at: Date
  ended_at: Date | null
  end_reason: string | null
}

export interface NewSession extends Omit<SessionRow, 'status' | 'ended_at' | 'end_reason'> {
  token_hash: Buffer
}

export interface EventRow {
  id: string
  session_id: string
  user_id: string
  type: string
  data: Record<string, unknown>
  created_at: Date
}

export type EventType = 'session.created' | 'session.revoked' | 'session.expired'

/** What a state change ended, so the cache can drop it. */
export interface EndedSession {
  id: string
  user_id: string
  token_hash: Buffer
}

const COLUMNS = [
  'id',
  'user_id',
  'status',
  'host(ip) as ip',
  'user_agent',
  'device',
  'metadata',
  'idle_timeout_seconds',
  'absolute_lifetime_seconds',
  'created_at',
  'last_seen_at',
  'idle_expires_at',
  'absolute_expires_at',
  'ended_at',
  'end_reason',
].join(', ')

/** All SQL of the sessions domain. Times come from the caller (the domain's clock), never from now(). */
export function createSessionRepository(sql: Sql) {
  const columns = sql.unsafe(COLUMNS)

  /** Stores a new session and its `session.created` event in one statement (one round trip, atomic). */
  async function insert(session: NewSession): Promise<SessionRow> {
    const event = { ip: session.ip, user_agent: session.user_agent, device: session.device }
    const [row] = await sql<SessionRow[]>`
      with created as (
        insert into sessions (id, user_id, token_hash, ip, user_agent, device, metadata, idle_timeout_seconds,
          absolute_lifetime_seconds, created_at, last_seen_at, idle_expires_at, absolute_expires_at)
        values (${session.id}, ${session.user_id}, ${session.token_hash}, ${session.ip}, ${session.user_agent},
          ${sql.json(session.device as never)}, ${sql.json(session.metadata as never)}, ${session.idle_timeout_seconds},
          ${session.absolute_lifetime_seconds}, ${session.created_at}, ${session.last_seen_at},
          ${session.idle_expires_at}, ${session.absolute_expires_at})
        returning *
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, 'session.created', ${sql.json(event as never)}, created_at from created
      )
      select ${columns} from created`
    return row as SessionRow
  }

  async function findByTokenHash(tokenHash: Buffer): Promise<SessionRow | undefined> {
    const [row] = await sql<SessionRow[]>`select ${columns} from sessions where token_hash = ${tokenHash}`
    return row
  }

  async function findById(id: string): Promise<SessionRow | undefined> {
    const [row] = await sql<SessionRow[]>`select ${columns} from sessions where id = ${id}`
    return row
  }

  /** Sessions that are not ended and not past either expiry, newest first. */
  async function listLiveForUser(userId: string, now: Date, limit: number): Promise<SessionRow[]> {
    return sql<SessionRow[]>`
      select ${columns} from sessions
      where user_id = ${userId} and status in ('active', 'suspended')
        and idle_expires_at > ${now} and absolute_expires_at > ${now}
      order by created_at desc, id
      limit ${limit}`
  }

  /**
   * Ends the given sessions (those still open) with a status and reason, and
   * records one event each, in one statement (atomic). Returns what it ended.
   */
  async function end(
    where: { ids: string[] } | { userId: string; exceptId: string | null },
    status: 'revoked' | 'expired',
    reason: string,
    now: Date,
  ): Promise<EndedSession[]> {
    const type: EventType = status === 'revoked' ? 'session.revoked' : 'session.expired'
    const filter =
      'ids' in where
        ? sql`id = any(${where.ids}::uuid[])`
        : sql`user_id = ${where.userId} and (${where.exceptId}::uuid is null or id <> ${where.exceptId}::uuid)`
    const ended = await sql<EndedSession[]>`
      with ended as (
        update sessions set status = ${status}, ended_at = ${now}, end_reason = ${reason}
        where ${filter} and status in ('active', 'suspended')
        returning id, user_id, token_hash
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, ${type}, ${sql.json({ reason } as never)}, ${now} from ended
      )
      select id, user_id, token_hash from ended`
    return [...ended]
  }

  /**
   * Records uses of live sessions in one statement: last seen, last IP, and the
   * idle expiry slid from that use (never past the absolute expiry, never back
   * in time). Returns how many rows changed.
   */
  async function touchMany(touches: Array<{ id: string; at: Date; ip: string | null }>): Promise<number> {
    if (touches.length === 0) return 0
    const result = await sql`
      update sessions s set
        last_seen_at = t.at,
        ip = coalesce(t.ip, s.ip),
        idle_expires_at = least(t.at + make_interval(secs => s.idle_timeout_seconds), s.absolute_expires_at)
      from unnest(${touches.map((t) => t.id)}::uuid[], ${touches.map((t) => t.at.toISOString())}::timestamptz[],
        ${touches.map((t) => t.ip)}::inet[]) as t(id, at, ip)
      where s.id = t.id and s.status = 'active' and s.last_seen_at < t.at`
    return result.count
  }

  async function listEvents(
    userId: string,
    page: { before: string | null; limit: number; type: string | null },
  ): Promise<EventRow[]> {
    return sql<EventRow[]>`
      select id::text as id, session_id, user_id, type, data, created_at from session_events
      where user_id = ${userId}
        and (${page.before}::bigint is null or id < ${page.before}::bigint)
        and (${page.type}::text is null or type = ${page.type}::text)
      order by id desc
      limit ${page.limit}`
  }

  return { insert, findByTokenHash, findById, listLiveForUser, end, touchMany, listEvents }
}

export type SessionRepository = ReturnType<typeof createSessionRepository>
