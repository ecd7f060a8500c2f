import type { Binding, Device, SessionRow } from './model.ts'

// The form a session takes in L1, where a replica may hold a million of them: instants as numbers
// (a Date costs about 110 bytes, a number 16), and the strings and objects most sessions share (tenant,
// status, client, User-Agent, parsed device, binding) held once. About 450 bytes instead of 1,300 for
// a session with a little metadata; a hit unpacks a fresh SessionRow, which costs well under a microsecond.

/** Values held once, up to a bound: past it new values are simply not shared (nothing is evicted). */
class Pool<T> {
  private readonly values = new Map<string, T>()
  constructor(private readonly max: number) {}
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
/** Frozen, so a value shared by many sessions can never be changed through one of them. */
function shareObject<T extends object>(value: T): T {
  return objects.share(JSON.stringify(value), Object.freeze(value)) as T
}
const time = (date: Date | null): number | null => (date === null ? null : date.getTime())
const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms))

/** A session as L1 holds it; `shared` says it came from Redis (trusted only while the feed is live). */
export class PackedSession {
  readonly tenant: string
  readonly id: string
  readonly user: string
  readonly status: SessionRow['status']
  readonly tokenType: SessionRow['token_type']
  readonly ip: string | null
  readonly boundIp: string | null
  readonly userAgent: string | null
  readonly device: Device
  readonly metadata: Record<string, unknown>
  readonly accessClaims: string[]
  readonly client: string | null
  readonly binding: Binding
  readonly suspensionReason: string | null
  readonly endReason: string | null
  readonly idleTimeout: number
  readonly absoluteLifetime: number
  readonly createdAt: number
  readonly lastSeenAt: number
  readonly idleExpiresAt: number
  readonly absoluteExpiresAt: number
  readonly suspendedAt: number | null
  readonly endedAt: number | null

  constructor(
    row: SessionRow,
    readonly shared: boolean,
  ) {
    this.tenant = shareString(row.tenant_id) as string
    this.id = row.id
    this.user = row.user_id
    this.status = row.status
    this.tokenType = row.token_type
    this.ip = row.ip
    // Most sessions are bound to the address they are seen from: one string for both.
    this.boundIp = row.bound_ip === row.ip ? row.ip : row.bound_ip
    this.userAgent = shareString(row.user_agent)
    this.device = shareObject({ ...row.device })
    this.metadata = Object.keys(row.metadata).length === 0 ? EMPTY_METADATA : row.metadata
    this.accessClaims = row.access_claims.length === 0 ? NO_CLAIMS : row.access_claims
    this.client = shareString(row.client_id)
    this.binding = shareObject({ ...row.binding })
    this.suspensionReason = shareString(row.suspension_reason)
    this.endReason = shareString(row.end_reason)
    this.idleTimeout = row.idle_timeout_seconds
    this.absoluteLifetime = row.absolute_lifetime_seconds
    this.createdAt = row.created_at.getTime()
    this.lastSeenAt = row.last_seen_at.getTime()
    this.idleExpiresAt = row.idle_expires_at.getTime()
    this.absoluteExpiresAt = row.absolute_expires_at.getTime()
    this.suspendedAt = time(row.suspended_at)
    this.endedAt = time(row.ended_at)
  }

  /** The session as everything else reads it: a fresh row, so no caller can change what L1 holds. */
  unpack(): SessionRow {
    return {
      tenant_id: this.tenant,
      id: this.id,
      user_id: this.user,
      status: this.status,
      token_type: this.tokenType,
      ip: this.ip,
      bound_ip: this.boundIp,
      user_agent: this.userAgent,
      device: this.device,
      metadata: this.metadata,
      access_claims: this.accessClaims,
      client_id: this.client,
      binding: this.binding,
      suspended_at: date(this.suspendedAt),
      suspension_reason: this.suspensionReason,
      idle_timeout_seconds: this.idleTimeout,
      absolute_lifetime_seconds: this.absoluteLifetime,
      created_at: new Date(this.createdAt),
      last_seen_at: new Date(this.lastSeenAt),
      idle_expires_at: new Date(this.idleExpiresAt),
      absolute_expires_at: new Date(this.absoluteExpiresAt),
      ended_at: date(this.endedAt),
      end_reason: this.endReason,
    }
  }
}
