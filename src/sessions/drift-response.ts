import { LRUCache } from 'lru-cache'
import type { Config } from '../config.ts'
import type { Policy } from '../tenants/store.ts'
import { EVERY_TENANT } from '../tenants/tenancy.ts'
import { parseDevice } from './device.ts'
import { judgeDrift, type Verdict } from './drift.ts'
import type { ChangedSession, Client, ClientInfo, SessionRow } from './model.ts'
import type { SessionRepository } from './repository.ts'

/** What a use from another client does to a session: judged by policy, then suspended or rebound. */
export function createDriftResponse({
  config,
  policy,
}: {
  config: Pick<Config, 'writeBehindIntervalMs'>
  policy: (tenantId: string) => Policy
}) {
  // When each session last followed a browser update, on this replica: at most one such write per interval.
  const uaFollowedAt = new LRUCache<string, number>({ max: 100_000 })

  /**
   * Judges a use against the session's client: null when there is nothing to
   * do (the common case, no work beyond a comparison). A browser update is
   * followed at most once per WRITE_BEHIND_INTERVAL_MS per session on this
   * replica; between, the newer version is simply not drift. Judging changes
   * nothing (a caller may judge and then leave the use to another path);
   * applyDrift records the follow.
   */
  function judge(session: SessionRow, client: ClientInfo, nowMs: number): Verdict | null {
    if (!client.ip && !client.user_agent && !client.required) return null
    const verdict = judgeDrift(
      boundClient(session),
      session.binding,
      client.ip ?? null,
      client.user_agent ?? null,
      policy(session.tenant_id),
      client.required,
    )
    if (verdict.uaUpdated && verdict.drifted.length === 0) {
      const followed = uaFollowedAt.get(session.id)
      if (followed !== undefined && nowMs - followed < config.writeBehindIntervalMs) return null
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
    // Before any wait: the uses judged after this one, until the interval has passed, are not drift.
    if (verdict.uaUpdated && verdict.drifted.length === 0) uaFollowedAt.set(session.id, now.getTime())
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
      // The session was found for a caller that sees it: the row is the one judged.
      const suspended = await store.suspend(EVERY_TENANT, session.id, reason, data, now)
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

  return { judge, applyDrift }
}

export type DriftResponse = ReturnType<typeof createDriftResponse>
