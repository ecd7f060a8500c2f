import { randomUUID } from 'node:crypto'
import type { Config } from '../config.ts'
import { Errors } from '../errors.ts'
import { RESERVED_CLAIMS } from '../keys/access-tokens.ts'
import { onlyTenant, type Tenancy } from '../tenants/tenancy.ts'
import type { SessionContext } from './context.ts'
import { parseDevice } from './device.ts'
import type { ChangedSession, Issued, OpenSessionInput, SessionRow } from './model.ts'
import { type Sighting, sightingOf } from './new-device.ts'
import { address } from './presented-client.ts'
import type { SessionRepository } from './repository.ts'
import { generateOpaqueToken, generateRefreshToken, hashTokenBytes } from './tokens.ts'

/** Logging in: opening a session, within the user's limit of live sessions. */
export function createLogin({
  repo,
  clock,
  access,
  config,
  loginPolicy,
  expiry,
  invalidation,
}: SessionContext) {
  const { accessExpiry, lastUse, idleExpiry } = expiry
  const { invalidateEnded } = invalidation

  /** Opens a session of `who.tenant`, under that tenant's policy. */
  async function open(
    who: Tenancy,
    input: OpenSessionInput,
    clientId: string | null = null,
  ): Promise<Issued> {
    const tenant = who.tenant
    const defaults = await loginPolicy(tenant)
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
    const device = parseDevice(input.user_agent)
    const sighting = sightingOf(device, ip, defaults, now)
    const idle = input.idle_timeout ?? defaults.idleTimeoutSeconds
    const absolute = input.absolute_lifetime ?? defaults.absoluteLifetimeSeconds
    const absoluteExpires = new Date(now + absolute * 1000)
    const idleExpires = new Date(Math.min(now + idle * 1000, absoluteExpires.getTime()))
    const token = tokenType === 'opaque' ? generateOpaqueToken() : null
    const session: SessionRow & { token_hash: Buffer | null } = {
      id: randomUUID(),
      tenant_id: tenant,
      user_id: input.user_id,
      status: 'active',
      token_type: tokenType,
      token_hash: token ? hashTokenBytes(token) : null,
      ip,
      bound_ip: ip,
      user_agent: input.user_agent ?? null,
      device,
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
      max: input.max_sessions ?? defaults.maxSessionsPerUser,
      action: input.on_limit ?? defaults.sessionLimitAction,
    }
    if (token)
      return { token_type: 'opaque', token, session: await store(session, null, sighting, limit, now) }

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
    const stored = await store(session, refreshRow, sighting, limit, now)
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
    sighting: Sighting | null,
    limit: { max: number; action: Config['sessionLimitAction'] },
    nowMs: number,
  ): Promise<SessionRow> {
    if (limit.max <= 0) return repo.insert(session, refreshRow, sighting)
    const outcome = await repo.transaction(async (tx) => {
      await tx.lockUser(session.tenant_id, session.user_id)
      const now = new Date(nowMs)
      // Live and last used as this replica knows it: a use it has not written yet counts.
      const live = (await tx.openForLimit(session.tenant_id, session.user_id, now))
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
        evicted = await tx.end(onlyTenant(session.tenant_id), { ids }, 'revoked', 'session_limit', now)
      }
      return { rejected: false as const, stored: await tx.insert(session, refreshRow, sighting), evicted }
    })
    if (outcome.rejected) throw new Errors.SESSION_LIMIT_REACHED(session.user_id, limit.max)
    await invalidateEnded(outcome.evicted)
    return outcome.stored
  }

  return { open }
}
