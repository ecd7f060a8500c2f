import { randomUUID } from 'node:crypto'
import { Errors } from '../errors.ts'
import { sees, type Tenancy } from '../tenants/tenancy.ts'
import type { SessionContext } from './context.ts'
import type { ChangedSession, ClientInfo, JwtPair, SessionRow } from './model.ts'
import { presentedClient } from './presented-client.ts'
import type { RefreshTokenRow, SessionRepository } from './repository.ts'
import { hashTokenBytes, successorRefreshToken, tokenKind } from './tokens.ts'

// A chain of tabs each refreshing within the grace window is short; a long one is not tabs.
const MAX_GRACE_HOPS = 8

/** Refreshing a JWT session: rotation, the grace window for a token presented twice, reuse. */
export function createRefresh({
  repo,
  touches,
  clock,
  access,
  refreshSecret,
  config,
  log,
  expiry,
  invalidation,
  drift,
}: SessionContext) {
  const { accessExpiry, ranOut, slide, withLocalUse } = expiry
  const { invalidateEnded, invalidateChanged } = invalidation
  const { judge, applyDrift } = drift

  /**
   * Exchanges a refresh token for a new access JWT and a new refresh token.
   * The old one is spent. Presented again within the grace window, it gets the
   * session's current pair again (two tabs refreshing at once); after it, it
   * is taken for stolen and the session is revoked. The client presenting it
   * is judged for drift as in introspection, before anything is spent.
   */
  async function refresh(who: Tenancy, refreshToken: string, given: ClientInfo = {}): Promise<JwtPair> {
    if (tokenKind(refreshToken) !== 'refresh') throw new Errors.REFRESH_TOKEN_INVALID()
    const client = presentedClient(given)
    const presentedHash = hashTokenBytes(refreshToken)
    const outcome = await repo.transaction(async (tx) => {
      const locked = await tx.lockSessionOfRefreshToken(presentedHash)
      // Read after the lock: a concurrent refresh of this session has committed by now.
      const presented = locked && (await tx.findRefreshToken(presentedHash))
      // Another tenant's refresh token is as unknown as a made-up one.
      if (!locked || !presented || !sees(who, locked.tenant_id)) return { kind: 'invalid' as const }
      if (locked.status !== 'active') return { kind: 'ended' as const, session: locked }
      const nowMs = clock.now()
      const now = new Date(nowMs)
      const expiredBy = ranOut(locked, now)
      if (expiredBy) {
        return {
          kind: 'expired' as const,
          ended: await tx.end(who, { ids: [locked.id] }, 'expired', expiredBy, now),
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
          ended: await tx.end(who, { ids: [locked.id] }, 'revoked', 'refresh_token_reused', now),
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
        await invalidateChanged(outcome.changed)
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
        await invalidateChanged(outcome.changed)
        throw new Errors.SESSION_SUSPENDED(outcome.id)
      case 'expired':
        await invalidateEnded(outcome.ended)
        throw new Errors.SESSION_EXPIRED(outcome.ended[0]?.id ?? '')
      case 'reused':
        await invalidateEnded(outcome.ended)
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

  return { refresh }
}
