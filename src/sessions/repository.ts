import type { Sql } from '../db/connect.ts'
import { newestFirst, type PageRequest, type Position, type Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import { actorOf, DEFAULT_TENANT, type Tenancy, visibleTo } from '../tenants/tenancy.ts'
import type { ChangedSession, Client, SessionRow } from './model.ts'
import type { Sighting } from './new-device.ts'

export interface NewSession
  extends Omit<SessionRow, 'status' | 'ended_at' | 'end_reason' | 'suspended_at' | 'suspension_reason'> {
  /** The opaque token's hash; null for a JWT session, whose refresh tokens are kept apart. */
  token_hash: Buffer | null
}

/** A refresh token as stored (by hash), with the access JWT issued beside it. */
export interface RefreshTokenRow {
  token_hash: Buffer
  session_id: string
  issued_at: Date
  spent_at: Date | null
  successor_hash: Buffer | null
  access_jti: string
  access_kid: string
  access_expires_at: Date
}

export type NewRefreshToken = Omit<RefreshTokenRow, 'spent_at' | 'successor_hash'>

export interface EventRow {
  id: string
  session_id: string
  tenant_id: string
  user_id: string
  type: string
  data: Record<string, unknown>
  created_at: Date
}

/** Every kind of event the service records. */
export const EVENT_TYPES = [
  'session.created',
  'session.new_device',
  'session.refreshed',
  'session.client_changed',
  'session.suspended',
  'session.resumed',
  'session.revoked',
  'session.expired',
  'refresh_token.reused',
] as const

export type EventType = (typeof EVENT_TYPES)[number]

/** A session (or none) as read from Postgres, and the Postgres time (ms) the read began. */
export interface CacheRead {
  session: SessionRow | null
  readAt: number
}

/**
 * A session's idle expiry: its last use plus its idle timeout, never past its absolute expiry. The
 * stored `idle_expires_at` is only where purge starts looking (the index of live sessions by idle
 * expiry): the write-behind writes a use's time and address and leaves it behind, so that its
 * updates change no indexed column and stay HOT (no new index entries, shorter row locks). It is never
 * after this one (a use only ever moves the idle expiry later); purge moves it up to this one when it
 * finds it behind, and an update that ends a session writes it as it is (migration 010's trigger
 * refuses to end a session for idle time while it is behind: an earlier release's purge would judge
 * from it). Every statement that decides or shows an idle expiry uses this expression.
 */
const IDLE_EXPIRY = 'least(last_seen_at + make_interval(secs => idle_timeout_seconds), absolute_expires_at)'

const COLUMNS = [
  'id',
  'tenant_id',
  'user_id',
  'status',
  'token_type',
  'host(ip) as ip',
  'host(bound_ip) as bound_ip',
  'user_agent',
  'device',
  'metadata',
  'access_claims',
  'client_id',
  'binding',
  'suspended_at',
  'suspension_reason',
  'idle_timeout_seconds',
  'absolute_lifetime_seconds',
  'created_at',
  'last_seen_at',
  `${IDLE_EXPIRY} as idle_expires_at`,
  'absolute_expires_at',
  'ended_at',
  'end_reason',
].join(', ')

/** Where the expire step of purge resumes in each of its two indexes (null: from the start). */
export interface OverduePosition {
  absolute: Position | null
  idle: Position | null
}

/** Which sessions a change applies to (always within what the caller's Tenancy sees). */
export type SessionFilter =
  | { ids: string[] }
  | { userId: string; exceptId: string | null }
  | { userIds: string[] }
  | { allUsersExcept: string[] }

/** All SQL of the sessions domain. Times come from the caller (the domain's clock), never from now(). */
export function createSessionRepository(sql: Sql) {
  const columns = sql.unsafe(COLUMNS)

  function filterOf(where: SessionFilter) {
    if ('ids' in where) return sql`id = any(${where.ids}::uuid[])`
    if ('userIds' in where) return sql`user_id = any(${where.userIds}::text[])`
    if ('allUsersExcept' in where) return sql`user_id <> all(${where.allUsersExcept}::text[])`
    return sql`user_id = ${where.userId} and (${where.exceptId}::uuid is null or id <> ${where.exceptId}::uuid)`
  }

  // The expiry rule of expiry.ts as SQL over a sessions row, written once here for every statement that
  // needs it. The last use written may be behind one another replica has not written yet, which is
  // why the callers pass `idleBefore` (now less their grace) rather than now.

  /** Not ended: active or suspended. */
  const open = sql`status in ('active', 'suspended')`

  const idleExpiry = sql.unsafe(IDLE_EXPIRY)

  /** Past neither expiry: the absolute one at `now`, the idle one at `idleBefore`. */
  const withinExpiries = (now: Date, idleBefore: Date) =>
    sql`absolute_expires_at > ${now} and ${idleExpiry} > ${idleBefore}`

  /** Past one of its expiries, and which (absolute first, as ranOut() in expiry.ts says). */
  const ranOut = (now: Date, idleBefore: Date) =>
    sql`(absolute_expires_at <= ${now} or ${idleExpiry} <= ${idleBefore})`
  const ranOutReason = (now: Date) =>
    sql`case when absolute_expires_at <= ${now} then 'absolute_lifetime' else 'idle_timeout' end`

  /**
   * Stores a new session, its `session.created` event, (JWT sessions) its
   * first refresh token and (with a sighting) the device's sign-in, with a
   * `session.new_device` event when the user has signed in before but not
   * from that device since `knownSince`: in one statement (one round trip,
   * atomic). Racing sign-ins from one new device announce it once: the upsert
   * of the device's row takes turns on its key, and says which one announced.
   */
  async function insert(
    session: NewSession,
    refresh: NewRefreshToken | null = null,
    sighting: Sighting | null = null,
  ): Promise<SessionRow> {
    try {
      return await insertRow(session, refresh, sighting)
    } catch (err) {
      // A platform key naming a tenant that does not exist (or no longer does).
      if ((err as { constraint_name?: string }).constraint_name === 'sessions_tenant_fk') {
        throw new Errors.TENANT_NOT_FOUND(session.tenant_id)
      }
      throw err
    }
  }

  async function insertRow(
    session: NewSession,
    refresh: NewRefreshToken | null,
    sighting: Sighting | null,
  ): Promise<SessionRow> {
    const event = {
      ip: session.ip,
      user_agent: session.user_agent,
      device: session.device,
      token_type: session.token_type,
    }
    const newDevice = {
      ip: session.ip,
      user_agent: session.user_agent,
      device: session.device,
      network: sighting?.network ?? null,
    }
    const [row] = await sql<SessionRow[]>`
      with created as (
        insert into sessions (id, tenant_id, user_id, token_hash, token_type, ip, bound_ip, user_agent, device, metadata,
          access_claims, client_id, binding, idle_timeout_seconds, absolute_lifetime_seconds, created_at, last_seen_at,
          idle_expires_at, absolute_expires_at)
        values (${session.id}, ${session.tenant_id}, ${session.user_id}, ${session.token_hash}, ${session.token_type}, ${session.ip}, ${session.bound_ip},
          ${session.user_agent}, ${sql.json(session.device as never)}, ${sql.json(session.metadata as never)},
          ${session.access_claims}::text[], ${session.client_id}, ${sql.json(session.binding as never)},
          ${session.idle_timeout_seconds},
          ${session.absolute_lifetime_seconds}, ${session.created_at}, ${session.last_seen_at},
          ${session.idle_expires_at}, ${session.absolute_expires_at})
        returning *
      ), recorded as (
        insert into session_events (session_id, tenant_id, user_id, type, data, created_at)
        select id, tenant_id, user_id, 'session.created', ${sql.json(event as never)}, created_at from created
      ), refresh as (
        insert into refresh_tokens (token_hash, session_id, issued_at, access_jti, access_kid, access_expires_at)
        select ${refresh?.token_hash ?? null}::bytea, id, ${refresh?.issued_at ?? null}::timestamptz,
          ${refresh?.access_jti ?? null}::uuid, ${refresh?.access_kid ?? null}, ${refresh?.access_expires_at ?? null}::timestamptz
        from created where ${refresh !== null}
      ), sighted as (
        insert into user_devices as d (tenant_id, user_id, device_key, first_seen_at, last_seen_at, announced_session)
        select tenant_id, user_id, ${sighting?.key ?? null}::text, created_at, created_at, id
        from created where ${sighting !== null}
        on conflict (tenant_id, user_id, device_key) do update set
          last_seen_at = greatest(d.last_seen_at, excluded.last_seen_at),
          announced_session = case when d.last_seen_at < ${sighting?.knownSince ?? null}::timestamptz
            then excluded.announced_session else d.announced_session end
        returning announced_session, xmax = 0 as first_time
      ), announced as (
        insert into session_events (session_id, tenant_id, user_id, type, data, created_at)
        select c.id, c.tenant_id, c.user_id, 'session.new_device', ${sql.json(newDevice as never)}, c.created_at
        from created c join sighted s on s.announced_session = c.id
        -- A user's first sign-in we know of is not "new": it has nothing to be new against.
        where not s.first_time
          or exists (select 1 from user_devices where tenant_id = c.tenant_id and user_id = c.user_id)
      )
      select ${columns} from created`
    return row as SessionRow
  }

  async function findByTokenHash(who: Tenancy, tokenHash: Buffer): Promise<SessionRow | undefined> {
    const [row] = await sql<SessionRow[]>`
      select ${columns} from sessions where token_hash = ${tokenHash} and ${visibleTo(sql, who)}`
    return row
  }

  async function findById(who: Tenancy, id: string): Promise<SessionRow | undefined> {
    const [row] = await sql<
      SessionRow[]
    >`select ${columns} from sessions where id = ${id} and ${visibleTo(sql, who)}`
    return row
  }

  /**
   * A session by token hash or id, with the Postgres time the read began
   * (`now()`, in ms): the read sees every change committed before that instant,
   * which is what lets a cached copy be judged against the invalidation feed.
   */
  async function readForCache(by: { tokenHash: Buffer } | { id: string }): Promise<CacheRead> {
    const where = 'id' in by ? sql`id = ${by.id}` : sql`token_hash = ${by.tokenHash}`
    const [row] = await sql<Array<SessionRow & { read_at: number }>>`
      select floor(extract(epoch from now()) * 1000)::float8 as read_at, s.*
      from (select) as x left join lateral (select ${columns} from sessions where ${where}) as s on true`
    if (!row) throw new Error('readForCache: no row')
    const { read_at, ...session } = row
    return { session: session.id === null ? null : (session as SessionRow), readAt: read_at }
  }

  /**
   * A page of a user's sessions that are not ended and not past either expiry, newest first. The page
   * resumes at the position (time and id) the cursor carries, not at a row it looks up: a session purged
   * between two pages does not end the walk, and a cursor from elsewhere only says "older than".
   */
  async function listLiveForUser(
    who: Tenancy,
    userId: string,
    now: Date,
    page: PageRequest,
  ): Promise<Positioned<SessionRow>[]> {
    const { positionAt, after, orderAndLimit } = newestFirst(sql, page, 'id', 'uuid')
    return sql<Positioned<SessionRow>[]>`
      select ${columns}, ${positionAt} from sessions
      where user_id = ${userId} and ${visibleTo(sql, who)} and ${open} and ${withinExpiries(now, now)}
        and ${after}
      ${orderAndLimit}`
  }

  /** How many live sessions a user has (every page of listLiveForUser). */
  async function countLiveForUser(who: Tenancy, userId: string, now: Date): Promise<number> {
    const [row] = await sql<{ count: number }[]>`
      select count(*)::int as count from sessions
      where user_id = ${userId} and ${visibleTo(sql, who)} and ${open} and ${withinExpiries(now, now)}`
    return row?.count ?? 0
  }

  /** How many live sessions `who` sees, counted up to `cap` (counting millions would read them all). */
  async function countLive(who: Tenancy, now: Date, cap: number): Promise<number> {
    const [row] = await sql<{ count: number }[]>`
      select count(*)::int as count from (
        select 1 from sessions where ${visibleTo(sql, who)} and ${open} and ${withinExpiries(now, now)} limit ${cap}
      ) live`
    return row?.count ?? 0
  }

  /**
   * Ends the given sessions (those still open) with a status and reason, and
   * records one event each, in one statement (atomic). Returns what it ended.
   */
  async function end(
    who: Tenancy,
    where: SessionFilter,
    status: 'revoked' | 'expired',
    reason: string,
    now: Date,
    limit: number | null = null,
  ): Promise<ChangedSession[]> {
    const type: EventType = status === 'revoked' ? 'session.revoked' : 'session.expired'
    const ended = await sql<ChangedSession[]>`
      with target as (
        select id from sessions where ${filterOf(where)} and ${visibleTo(sql, who)} and ${open}
        ${limit === null ? sql`` : sql`limit ${limit}`}
      ), ended as (
        update sessions set status = ${status}, ended_at = ${now}, end_reason = ${reason},
          idle_expires_at = ${idleExpiry}
        where id in (select id from target) and ${open}
        returning id, tenant_id, user_id, token_hash
      ), recorded as (
        insert into session_events (session_id, tenant_id, user_id, type, data, created_at)
        select id, tenant_id, user_id, ${type}, ${sql.json({ reason, ...actorOf(who) } as never)}, ${now} from ended
      )
      select id, user_id, token_hash from ended`
    return [...ended]
  }

  /**
   * Records uses of live sessions in one statement: last seen and last IP (never
   * back in time), which moves their idle expiry (IDLE_EXPIRY). Returns how many
   * rows changed. Neither column is indexed, so each row's new version stays on
   * its page when there is room (a HOT update). The statement locks every row it
   * changes until it ends: the write-behind passes a short chunk, in id order.
   */
  async function touchMany(touches: Array<{ id: string; at: Date; ip: string | null }>): Promise<number> {
    if (touches.length === 0) return 0
    const result = await sql`
      update sessions s set
        last_seen_at = t.at,
        ip = coalesce(t.ip, s.ip)
      from unnest(${touches.map((t) => t.id)}::uuid[], ${touches.map((t) => t.at.toISOString())}::timestamptz[],
        ${touches.map((t) => t.ip)}::inet[]) as t(id, at, ip)
      where s.id = t.id and s.status = 'active' and s.last_seen_at < t.at`
    return result.count
  }

  /**
   * Events newest first, filtered; `since` is inclusive, `until` exclusive; `before` is the cursor.
   * Only the filters given are in the statement (a `$1 is null or type = $1` cannot use an index in
   * a generic plan): each has an index in id order (user, type, tenant), or the time index.
   */
  async function listEvents(
    who: Tenancy,
    page: {
      userId: string | null
      /** Only this session's events (its history). */
      sessionId?: string | null
      type: string | null
      /** Only events of these types (with `type`, both must hold). */
      types?: readonly string[] | null
      since: Date | null
      until: Date | null
      before: string | null
      limit: number
    },
  ): Promise<EventRow[]> {
    const where = [eventsOf(who)]
    if (page.userId !== null) where.push(sql`user_id = ${page.userId}::text`)
    if (page.sessionId != null) where.push(sql`session_id = ${page.sessionId}::uuid`)
    if (page.before !== null) where.push(sql`id < ${page.before}::bigint`)
    if (page.type !== null) where.push(sql`type = ${page.type}::text`)
    if (page.types != null) where.push(sql`type = any(${page.types}::text[])`)
    if (page.since !== null) where.push(sql`created_at >= ${page.since}::timestamptz`)
    if (page.until !== null) where.push(sql`created_at < ${page.until}::timestamptz`)
    return sql<EventRow[]>`
      select id::text as id, session_id, tenant_id, user_id, type, data, created_at from session_events
      where ${where.reduce((all, one) => sql`${all} and ${one}`)}
      order by session_events.id desc
      limit ${page.limit}`
  }

  /**
   * The events `who` sees, as a condition: one tenant as an equality, so that its index in id order
   * serves a page (`tenant_id = any(…)` of one tenant would not give the order).
   */
  function eventsOf(who: Tenancy) {
    if (who.sees === '*') return sql`true`
    const [only] = who.sees
    return who.sees.length === 1 && only !== undefined ? sql`tenant_id = ${only}` : visibleTo(sql, who)
  }

  /** Runs `work` in one transaction, with a repository bound to it. */
  function transaction<T>(work: (repo: SessionRepository) => Promise<T>): Promise<T> {
    return sql.begin((tx) => work(createSessionRepository(tx as unknown as Sql))) as Promise<T>
  }

  /**
   * The session a refresh token belongs to, locked until the transaction ends:
   * refreshes of one session take turns, so two tabs cannot both spend a token.
   */
  async function lockSessionOfRefreshToken(tokenHash: Buffer): Promise<SessionRow | undefined> {
    const [row] = await sql<SessionRow[]>`
      select ${columns} from sessions
      where id = (select session_id from refresh_tokens where token_hash = ${tokenHash})
      for update`
    return row
  }

  async function findRefreshToken(tokenHash: Buffer): Promise<RefreshTokenRow | undefined> {
    const [row] = await sql<RefreshTokenRow[]>`
      select token_hash, session_id, issued_at, spent_at, successor_hash, access_jti, access_kid, access_expires_at
      from refresh_tokens where token_hash = ${tokenHash}`
    return row
  }

  /**
   * Spends a refresh token for its successor and records the use on the
   * session (last seen, IP, idle expiry) with a `session.refreshed` event, in
   * one statement. Returns the session as it now is.
   */
  async function rotateRefreshToken(
    spentHash: Buffer,
    successor: NewRefreshToken,
    use: { at: Date; ip: string | null; idleExpiresAt: Date },
  ): Promise<SessionRow> {
    const event = { ip: use.ip, access_jti: successor.access_jti }
    const [row] = await sql<SessionRow[]>`
      with spent as (
        update refresh_tokens set spent_at = ${use.at}, successor_hash = ${successor.token_hash}
        where token_hash = ${spentHash} and spent_at is null
        returning session_id
      ), issued as (
        insert into refresh_tokens (token_hash, session_id, issued_at, access_jti, access_kid, access_expires_at)
        select ${successor.token_hash}, session_id, ${successor.issued_at}, ${successor.access_jti},
          ${successor.access_kid}, ${successor.access_expires_at}
        from spent
      ), used as (
        update sessions s set last_seen_at = ${use.at}, ip = coalesce(${use.ip}::inet, s.ip),
          idle_expires_at = ${use.idleExpiresAt}
        from spent where s.id = spent.session_id
        returning s.*
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, 'session.refreshed', ${sql.json(event as never)}, ${use.at} from used
      )
      select ${columns} from used`
    if (!row) throw new Error('refresh token was spent concurrently (the session lock should prevent this)')
    return row as SessionRow
  }

  async function recordEvent(
    session: Pick<SessionRow, 'id' | 'user_id'>,
    type: EventType,
    data: Record<string, unknown>,
    at: Date,
  ): Promise<void> {
    await sql`
      insert into session_events (session_id, user_id, type, data, created_at)
      values (${session.id}, ${session.user_id}, ${type}, ${sql.json(data as never)}, ${at})`
  }

  /** Suspends an active session and records why, with the event, in one statement. */
  async function suspend(
    who: Tenancy,
    id: string,
    reason: string,
    data: Record<string, unknown>,
    now: Date,
  ): Promise<ChangedSession | undefined> {
    const [row] = await sql<ChangedSession[]>`
      with changed as (
        update sessions set status = 'suspended', suspended_at = ${now}, suspension_reason = ${reason}
        where id = ${id} and ${visibleTo(sql, who)} and status = 'active' and absolute_expires_at > ${now}
        returning id, user_id, token_hash
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, 'session.suspended', ${sql.json({ reason, ...data, ...actorOf(who) } as never)}, ${now} from changed
      )
      select id, user_id, token_hash from changed`
    return row
  }

  /** Makes a suspended session active again, bound to `client` when one is given, with the event. */
  async function resume(
    who: Tenancy,
    id: string,
    client: Client | null,
    now: Date,
  ): Promise<ChangedSession | undefined> {
    const [row] = await sql<ChangedSession[]>`
      with before as (
        select id, host(bound_ip) as ip, user_agent, device from sessions
        where id = ${id} and ${visibleTo(sql, who)} and status = 'suspended' and absolute_expires_at > ${now}
        for update
      ), changed as (
        update sessions s set status = 'active', suspended_at = null, suspension_reason = null,
          ip = coalesce(${client?.ip ?? null}::inet, s.ip),
          bound_ip = coalesce(${client?.ip ?? null}::inet, s.bound_ip),
          user_agent = coalesce(${client?.user_agent ?? null}, s.user_agent),
          device = coalesce(${client?.user_agent ? sql.json(client.device as never) : null}::jsonb, s.device)
        from before b where s.id = b.id
        returning s.id, s.user_id, s.token_hash, host(s.bound_ip) as ip, s.user_agent, s.device,
          b.ip as previous_ip, b.user_agent as previous_user_agent, b.device as previous_device
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, 'session.resumed', jsonb_build_object(
          'previous', jsonb_build_object('ip', previous_ip, 'user_agent', previous_user_agent, 'device', previous_device),
          'current', jsonb_build_object('ip', ip, 'user_agent', user_agent, 'device', device))
          || ${sql.json(actorOf(who) as never)}::jsonb, ${now}
        from changed
      )
      select id, user_id, token_hash from changed`
    return row
  }

  /** Rebinds an active session to the client it is now used from, with an event when one is given. */
  async function updateClient(
    id: string,
    client: Client,
    event: { type: EventType; data: Record<string, unknown> } | null,
    now: Date,
  ): Promise<ChangedSession | undefined> {
    const [row] = await sql<ChangedSession[]>`
      with changed as (
        update sessions set ip = coalesce(${client.ip}::inet, ip), bound_ip = ${client.ip},
          user_agent = ${client.user_agent},
          device = ${sql.json(client.device as never)}
        where id = ${id} and status = 'active'
        returning id, user_id, token_hash
      ), recorded as (
        insert into session_events (session_id, user_id, type, data, created_at)
        select id, user_id, ${event?.type ?? 'session.client_changed'}, ${sql.json((event?.data ?? {}) as never)}, ${now}
        from changed where ${event !== null}
      )
      select id, user_id, token_hash from changed`
    return row
  }

  /** Serialises logins of one user until the transaction ends (the concurrent-session limit). */
  async function lockUser(tenant: string, userId: string): Promise<void> {
    // Keyed by schema too: deployments sharing a database do not wait for each other.
    // The default tenant keeps the key of the version before tenants, so logins on replicas of
    // both versions still take turns during an upgrade.
    const key = `:session-authority:user:${tenant === DEFAULT_TENANT ? '' : `${tenant}:`}${userId}`
    await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ${key}))`
  }

  /**
   * The user's open sessions not past their absolute expiry, oldest first, with
   * what the caller needs to judge the idle expiry itself (it may know of
   * later uses than the stored ones).
   */
  async function openForLimit(tenant: string, userId: string, now: Date) {
    return sql<
      Array<
        Pick<
          SessionRow,
          'id' | 'created_at' | 'last_seen_at' | 'idle_timeout_seconds' | 'absolute_expires_at'
        >
      >
    >`
      select id, created_at, last_seen_at, idle_timeout_seconds, absolute_expires_at from sessions
      where user_id = ${userId} and tenant_id = ${tenant} and ${open} and absolute_expires_at > ${now}
      order by created_at, id`
  }

  /**
   * Marks up to `limit` sessions that ran out but were never seen again as
   * expired, with their events, and says where the next batch resumes. Rows
   * another purge holds are skipped. The candidates come from the two partial
   * indexes of live sessions by expiry (an OR across both columns would read
   * the table), each read in its order from where the previous batch left it
   * (`after`; null: from the start) and only as far as `limit`: a batch reads
   * neither the table nor the entries of rows it or an earlier batch just
   * ended (dead until vacuumed). Each is then looked up by id (an array, so no
   * plan can trade the lookups for a scan of every overdue session), its expiry
   * checked again, and rows are locked in id order. The idle index holds the
   * stored idle expiry, which the write-behind leaves behind (IDLE_EXPIRY): a
   * candidate used since is not ended, and its stored expiry catches up.
   */
  async function expireOverdue(
    now: Date,
    idleBefore: Date,
    limit: number,
    after: OverduePosition | null = null,
  ): Promise<{ ended: ChangedSession[]; next: OverduePosition; more: boolean }> {
    const part = async (
      column: 'absolute_expires_at' | 'idle_expires_at',
      before: Date,
      from: Position | null,
      most: number,
    ) => {
      const at = sql(column)
      const rows = await sql<Array<{ id: string; at: string }>>`
        select id::text as id, to_char(${at} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at
        from sessions
        where ${open} and ${at} <= ${before}
          and ${from === null ? sql`true` : sql`(${at}, id) > (${from.at}::text::timestamptz, ${from.id}::uuid)`}
        order by ${at}, id limit ${most}`
      return { ids: rows.map((r) => r.id), last: rows.at(-1) ?? from, full: rows.length === most }
    }
    // At most `limit` in all: the absolute expiries first, the idle ones fill the rest of the batch.
    const absolute = await part('absolute_expires_at', now, after?.absolute ?? null, limit)
    const idle =
      absolute.ids.length < limit
        ? await part('idle_expires_at', idleBefore, after?.idle ?? null, limit - absolute.ids.length)
        : { ids: [], last: after?.idle ?? null, full: false }
    const next = { absolute: absolute.last, idle: idle.last }
    const ids = [...new Set([...absolute.ids, ...idle.ids])]
    if (ids.length === 0) return { ended: [], next, more: false }
    const ended = await sql<ChangedSession[]>`
      with target as (
        select id, ${ranOutReason(now)} as reason
        from sessions
        where id = any(${ids}::uuid[]) and ${open} and ${ranOut(now, idleBefore)}
        order by id
        for update skip locked
      ), ended as (
        update sessions s set status = 'expired', ended_at = ${now}, end_reason = t.reason,
          idle_expires_at = ${idleExpiry}
        from target t where s.id = t.id
        returning s.id, s.tenant_id, s.user_id, s.token_hash, t.reason
      ), recorded as (
        insert into session_events (session_id, tenant_id, user_id, type, data, created_at)
        select id, tenant_id, user_id, 'session.expired', jsonb_build_object('reason', reason), ${now} from ended
      )
      select id, user_id, token_hash from ended`
    // The candidates used since their stored idle expiry was written: it moves up to the real one, past
    // this batch's range. In a statement of their own: they are sessions in use, locked only briefly.
    // Those just ended are not looked at again (in a backlog of overdue sessions, nearly all of them).
    const endedIds = new Set(ended.map((e) => e.id))
    const kept = ids.filter((id) => !endedIds.has(id))
    if (kept.length > 0)
      await sql`
        update sessions set idle_expires_at = ${idleExpiry}
        where id in (
          select id from sessions
          where id = any(${kept}::uuid[]) and ${open} and not ${ranOut(now, idleBefore)}
            and idle_expires_at < ${idleExpiry}
          order by id
          for update skip locked)`
    return { ended: [...ended], next, more: absolute.full || idle.full }
  }

  // The delete batches below read their index in its order, from where the previous batch left it
  // (`from`, inclusive: rows of the same instant are read again, not skipped): no plan can prefer a
  // scan of the table that "should" find `limit` rows soon, and no batch reads again the entries of
  // rows deleted before it (dead until vacuumed). The rows found are then deleted where they lie
  // (by ctid, from an array: a TID scan, with no second index lookup and no lock pass before it; a
  // row another transaction holds is waited for, briefly, not skipped). The delete checks the cutoff
  // again, so it removes only rows that are due whatever the ctid points at: a row someone changed
  // meanwhile (not due any more) is left out on every Postgres release, and on a partitioned table,
  // where a ctid names a row in each partition, no row that is not due goes. A short batch ends the
  // step; the next purge finds what is left.

  /**
   * Deletes up to `limit` rows of `table` whose `column` is before `cutoff`, oldest first from `from`;
   * returns how many, and the time to resume from.
   */
  async function deleteOldest(
    table: 'sessions' | 'session_events',
    column: 'ended_at' | 'created_at',
    cutoff: Date,
    limit: number,
    from: Date | null,
  ): Promise<{ deleted: number; last: Date | null }> {
    const [t, at] = [sql(table), sql(column)]
    // What makes a row due, in this batch's range: read by the index, and checked again by the delete.
    const due = () => sql`${at} < ${cutoff} and ${at} >= ${from ?? new Date(0)}`
    const [row] = await sql<Array<{ deleted: number; last: Date | null }>>`
      with doomed as (
        select ctid as row, ${at} as at from ${t}
        where ${due()}
        order by ${at} limit ${limit}
      ), deleted as (
        delete from ${t} where ctid = any(array(select row from doomed)) and ${due()} returning 1
      )
      select (select count(*) from deleted)::int as deleted, (select max(at) from doomed) as last`
    return { deleted: row?.deleted ?? 0, last: row?.last ?? from }
  }

  /**
   * Deletes up to `limit` sessions that ended before `cutoff` (their refresh tokens go with them), oldest
   * first from `from`; returns how many, and the end time to resume from.
   */
  function deleteEnded(cutoff: Date, limit: number, from: Date | null = null) {
    return deleteOldest('sessions', 'ended_at', cutoff, limit, from)
  }

  /** Forgets devices not signed in from since `cutoff`, at most `limit` of them. */
  async function deleteDevicesUnseenSince(cutoff: Date, limit: number): Promise<number> {
    const result = await sql`
      delete from user_devices where (tenant_id, user_id, device_key) in (
        select tenant_id, user_id, device_key from user_devices where last_seen_at < ${cutoff}
        order by last_seen_at limit ${limit} for update skip locked)`
    return result.count
  }

  /** Deletes up to `limit` events recorded before `cutoff`, oldest first from `from`; as deleteEnded. */
  function deleteEvents(cutoff: Date, limit: number, from: Date | null = null) {
    return deleteOldest('session_events', 'created_at', cutoff, limit, from)
  }

  /**
   * Runs `work` on one connection holding the purge lock, so one replica
   * purges at a time; waits for it, or gives up at once when `wait` is false.
   * Its commits do not wait for the write-ahead log to reach the disk or a
   * standby (`synchronous_commit` off, for this connection and only while it
   * holds the lock): a purge batch lost to a Postgres crash or failover is done
   * again by the next purge, and none of it is needed to answer a token right
   * (an overdue session is refused from its expiry times whether or not it was
   * marked; an ended one stays ended). Each batch then costs no wait for the
   * disk, and the batches' flushes no longer queue beside those of the commits
   * callers wait for.
   */
  async function withPurgeLock<T>(
    wait: boolean,
    work: (repo: SessionRepository) => Promise<T>,
  ): Promise<T | null> {
    const reserved = await sql.reserve()
    try {
      const key = sql`hashtext(current_schema() || ':session-authority:purge')`
      if (wait) await reserved`select pg_advisory_lock(${key})`
      else {
        const [row] = await reserved<
          Array<{ locked: boolean }>
        >`select pg_try_advisory_lock(${key}) as locked`
        if (!row?.locked) return null
      }
      try {
        await reserved`set synchronous_commit = off`
        return await work(createSessionRepository(reserved as unknown as Sql))
      } finally {
        // Back to the server's setting before the connection goes back to the pool; the lock goes
        // whatever becomes of that.
        try {
          await reserved`reset synchronous_commit`
        } finally {
          await reserved`select pg_advisory_unlock(${key})`
        }
      }
    } finally {
      reserved.release()
    }
  }

  return {
    countLive,
    suspend,
    resume,
    updateClient,
    lockUser,
    openForLimit,
    expireOverdue,
    deleteEnded,
    deleteEvents,
    deleteDevicesUnseenSince,
    withPurgeLock,
    insert,
    findByTokenHash,
    findById,
    readForCache,
    listLiveForUser,
    countLiveForUser,
    end,
    touchMany,
    listEvents,
    transaction,
    lockSessionOfRefreshToken,
    findRefreshToken,
    rotateRefreshToken,
    recordEvent,
  }
}

export type SessionRepository = ReturnType<typeof createSessionRepository>
