import type { Binding, Device, SessionRow } from './model.ts'

// The form a session takes in L1, where a replica may hold a million of them: instants as numbers
// (a Date costs about 110 bytes, a number 16), what most sessions share (tenant, status, client,
// User-Agent, parsed device, binding, timeouts) in one profile held once, and how a session stopped
// (rare among cached sessions) in one field. A hit unpacks a fresh SessionRow, well under a microsecond.

/** Values held once, up to a bound: past it new values are simply not shared (nothing is evicted). */
class Pool<T> {
  private readonly values = new Map<string, T>()
  constructor(private readonly max: number) {}
  get(key: string): T | undefined {
    return this.values.get(key)
  }
  share(key: string, value: T): T {
    const held = this.values.get(key)
    if (held !== undefined) return held
    if (this.values.size < this.max) this.values.set(key, value)
    return value
  }
}

const POOL_SIZE = 10_000
const strings = new Pool<string>(POOL_SIZE)
const objects = new Pool<object>(POOL_SIZE)
const EMPTY_METADATA: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>
const NO_CLAIMS: string[] = Object.freeze([]) as unknown as string[]

const shareString = (value: string | null): string | null =>
  value === null ? null : strings.share(value, value)
const time = (date: Date | null): number | null => (date === null ? null : date.getTime())
const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms))

/** What many sessions have in common (tenant, client, browser, policy), held once for all of them. */
interface Profile {
  readonly tenant: string
  readonly status: SessionRow['status']
  readonly tokenType: SessionRow['token_type']
  readonly userAgent: string | null
  readonly device: Device
  readonly client: string | null
  readonly binding: Binding
  readonly idleTimeout: number
  readonly absoluteLifetime: number
}

/** How a session stopped being active; most cached sessions have none. */
interface Stop {
  readonly suspendedAt: number | null
  readonly suspensionReason: string | null
  readonly endedAt: number | null
  readonly endReason: string | null
}

// Shared objects are frozen, so a value shared by many sessions can never be changed through one of them.
const profiles = new Pool<Profile>(POOL_SIZE)

function profileOf(row: SessionRow): Profile {
  const device = JSON.stringify(row.device)
  const binding = JSON.stringify(row.binding)
  // Every field of the profile, as one string: the pool's key (device and binding are JSON already).
  const key = `${JSON.stringify([row.tenant_id, row.status, row.token_type, row.user_agent, row.client_id, row.idle_timeout_seconds, row.absolute_lifetime_seconds])}${device}${binding}`
  const held = profiles.get(key)
  if (held !== undefined) return held
  const profile: Profile = Object.freeze({
    tenant: shareString(row.tenant_id) as string,
    status: row.status,
    tokenType: row.token_type,
    userAgent: shareString(row.user_agent),
    // Shared on their own too, for sessions whose profile is not (past the pool's bound).
    device: objects.share(device, Object.freeze({ ...row.device })) as Device,
    client: shareString(row.client_id),
    binding: objects.share(binding, Object.freeze({ ...row.binding })) as Binding,
    idleTimeout: row.idle_timeout_seconds,
    absoluteLifetime: row.absolute_lifetime_seconds,
  })
  return profiles.share(key, profile)
}

function stopOf(row: SessionRow): Stop | null {
  if (row.suspended_at === null && row.ended_at === null && !row.suspension_reason && !row.end_reason)
    return null
  return {
    suspendedAt: time(row.suspended_at),
    suspensionReason: shareString(row.suspension_reason),
    endedAt: time(row.ended_at),
    endReason: shareString(row.end_reason),
  }
}

/** A session as L1 holds it; `shared` says it came from Redis (trusted only while the feed is live). */
export class PackedSession {
  readonly profile: Profile
  readonly id: string
  readonly user: string
  readonly ip: string | null
  readonly boundIp: string | null
  readonly metadata: Record<string, unknown>
  readonly accessClaims: string[]
  readonly stop: Stop | null
  readonly createdAt: number
  readonly lastSeenAt: number
  readonly idleExpiresAt: number
  readonly absoluteExpiresAt: number

  constructor(
    row: SessionRow,
    readonly shared: boolean,
  ) {
    this.profile = profileOf(row)
    this.id = row.id
    this.user = row.user_id
    this.ip = row.ip
    // Most sessions are bound to the address they are seen from: one string for both.
    this.boundIp = row.bound_ip === row.ip ? row.ip : row.bound_ip
    this.metadata = Object.keys(row.metadata).length === 0 ? EMPTY_METADATA : row.metadata
    this.accessClaims = row.access_claims.length === 0 ? NO_CLAIMS : row.access_claims
    this.stop = stopOf(row)
    this.createdAt = row.created_at.getTime()
    this.lastSeenAt = row.last_seen_at.getTime()
    this.idleExpiresAt = row.idle_expires_at.getTime()
    this.absoluteExpiresAt = row.absolute_expires_at.getTime()
  }

  /** The session as everything else reads it: a fresh row, so no caller can change what L1 holds. */
  unpack(): SessionRow {
    const { profile, stop } = this
    return {
      tenant_id: profile.tenant,
      id: this.id,
      user_id: this.user,
      status: profile.status,
      token_type: profile.tokenType,
      ip: this.ip,
      bound_ip: this.boundIp,
      user_agent: profile.userAgent,
      device: profile.device,
      metadata: this.metadata,
      access_claims: this.accessClaims,
      client_id: profile.client,
      binding: profile.binding,
      suspended_at: stop === null ? null : date(stop.suspendedAt),
      suspension_reason: stop === null ? null : stop.suspensionReason,
      idle_timeout_seconds: profile.idleTimeout,
      absolute_lifetime_seconds: profile.absoluteLifetime,
      created_at: new Date(this.createdAt),
      last_seen_at: new Date(this.lastSeenAt),
      idle_expires_at: new Date(this.idleExpiresAt),
      absolute_expires_at: new Date(this.absoluteExpiresAt),
      ended_at: stop === null ? null : date(stop.endedAt),
      end_reason: stop === null ? null : stop.endReason,
    }
  }
}
