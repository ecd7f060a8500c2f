import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { AccessTokens } from '../keys/access-tokens.ts'
import type { Log } from '../logger.ts'
import type { Policy } from '../tenants/store.ts'
import type { SessionCache } from './cache.ts'
import type { DriftResponse } from './drift-response.ts'
import type { Expiry } from './expiry.ts'
import type { Invalidation } from './invalidation.ts'
import type { SessionRepository } from './repository.ts'
import type { WriteBehind } from './write-behind.ts'

/** What the sessions domain is built from (see createSessionService). */
export interface SessionDeps {
  repo: SessionRepository
  cache: SessionCache
  touches: WriteBehind
  clock: Clock
  access: AccessTokens
  /** The secret that chains refresh tokens (see successorRefreshToken). */
  refreshSecret: Buffer
  /** The policy a tenant's sessions follow (the global settings with the tenant's overrides). */
  policy: (tenantId: string) => Policy
  /** The same for a new session: read first when this replica does not know the tenant yet. */
  loginPolicy: (tenantId: string) => Promise<Policy>
  config: Pick<
    Config,
    | 'metadataLimitBytes'
    | 'accessTokenTtlSeconds'
    | 'refreshReuseGraceSeconds'
    | 'writeBehindIntervalMs'
    | 'purgeRetentionDays'
    | 'eventRetentionDays'
  > & {
    /**
     * How much longer than its idle timeout a session may live when its last
     * use is only known to another replica whose write is still pending (the
     * write-behind interval when there are replicas; 0 for a single one).
     */
    idleGraceMs: number
  }
  log: Log
}

/** What every capability of the sessions domain shares: its dependencies and the rules they all follow. */
export interface SessionContext extends SessionDeps {
  expiry: Expiry
  invalidation: Invalidation
  drift: DriftResponse
}
