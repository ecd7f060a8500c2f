import { hash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { parseAddress } from '../addresses.ts'
import type { Config } from '../config.ts'
import type { Log } from '../logger.ts'
import type { RedisConnection } from '../redis.ts'

/** Who a failed authentication counts against: the client address and, with Basic or form credentials, the claimed key id. */
export interface Claimant {
  ip: string
  keyId: string | null
}

export interface AuthFailureOptions {
  /** Failures allowed per subject within the window; 0 = no limit. */
  limit: number
  windowSeconds: number
  /** How long a subject over the limit is refused; 0 = until its window ends. */
  blockSeconds: number
  /** With Redis the counts are shared by every replica; without, or while it is away, they are this process's. */
  redis: RedisConnection | null
  keyPrefix: string
  log: Log
}

// Key ids the service makes; anything else a client claims is hashed before it is stored or logged (it may be a pasted secret).
const KEY_ID = /^(key_[0-9a-f]{16}|env-admin)$/

/** The subjects a claimant's failures count against. An IPv6 client holds a whole /64, so that is the unit. */
function subjectsOf({ ip, keyId }: Claimant): string[] {
  const address = parseAddress(ip)
  const where =
    address?.kind() === 'ipv6'
      ? `${address.toNormalizedString().split(':').slice(0, 4).join(':')}::/64`
      : (address?.toString() ?? ip)
  const subjects = [`addr:${where}`]
  if (keyId !== null) {
    subjects.push(
      KEY_ID.test(keyId) ? `id:${keyId}` : `id#${hash('sha256', keyId, 'base64url').slice(0, 22)}`,
    )
  }
  return subjects
}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

/**
 * Counts failed API-key authentications (rate-limiter-flexible: Redis shared by
 * the replicas, in-process while Redis is unset or away) and says when a client
 * address or a claimed key id is over its budget. Only failures ever reach it:
 * a caller whose key is good never does, so valid traffic costs nothing.
 * Blocks are also remembered in-process, so a flood from a blocked address
 * costs a map lookup, not a Redis command.
 */
export function createAuthFailureLimiter({
  limit,
  windowSeconds,
  blockSeconds,
  redis,
  keyPrefix,
  log,
}: AuthFailureOptions) {
  const options = { points: limit, duration: windowSeconds, blockDuration: blockSeconds }
  const memory = new RateLimiterMemory({ ...options, keyPrefix: 'auth-failures' })
  // One key per subject, and each command (a Lua script, or a MULTI) touches only that key: on a Redis
  // Cluster every subject's count lives in a slot of its own, no hash tag needed.
  const shared = redis
    ? new RateLimiterRedis({
        ...options,
        storeClient: redis.client,
        keyPrefix: `${keyPrefix}auth-failures`,
        // A Redis error falls back to the in-process counts (fail open: never a reason to refuse).
        insuranceLimiter: memory,
        rejectIfRedisNotReady: true,
      })
    : null
  // While the Redis breaker is open, go straight to memory instead of waiting for a command timeout.
  const limiter = () => (shared && redis?.state() === 'up' ? shared : memory)
  /** Subject → when its block ends (ms since the epoch), as this process last learned it. */
  const blocked = new LRUCache<string, number>({ max: 100_000 })

  /** What a log line may say of a subject: never a claimed id that is not one of ours. */
  function describe(subject: string): Record<string, string> {
    if (subject.startsWith('addr:')) return { address: subject.slice('addr:'.length) }
    if (subject.startsWith('id:')) return { keyId: subject.slice('id:'.length) }
    return { keyId: '(not a key id, not shown)' }
  }

  function remember(subject: string, msBeforeNext: number, counted: boolean) {
    const ms = Math.max(msBeforeNext, 1)
    if (counted && !blocked.has(subject)) {
      log.warn(
        { ...describe(subject), retryAfter: seconds(ms) },
        'too many failed API-key authentications: refused until the block ends',
      )
    }
    blocked.set(subject, Date.now() + ms, { ttl: ms })
  }

  return {
    /**
     * Seconds the claimant must wait before its key is even looked up, or 0.
     * Asked only for keys this replica does not know as valid.
     */
    async retryAfter(claimant: Claimant): Promise<number> {
      const subjects = subjectsOf(claimant)
      const now = Date.now()
      let wait = 0
      for (const subject of subjects) wait = Math.max(wait, (blocked.get(subject) ?? 0) - now)
      if (wait > 0) return seconds(wait)
      // A block another replica decided is in the shared counts.
      const results = await Promise.all(
        subjects.map((s) =>
          limiter()
            .get(s)
            .catch(() => null),
        ),
      )
      for (const [i, res] of results.entries()) {
        if (res && res.consumedPoints > limit && res.msBeforeNext > 0) {
          remember(subjects[i] as string, res.msBeforeNext, false)
          wait = Math.max(wait, res.msBeforeNext)
        }
      }
      return wait > 0 ? seconds(wait) : 0
    },

    /** Counts one failed authentication; the seconds to wait when that puts the claimant over the budget, else 0. */
    async fail(claimant: Claimant): Promise<number> {
      const subjects = subjectsOf(claimant)
      const results = await Promise.allSettled(subjects.map((s) => limiter().consume(s)))
      let wait = 0
      for (const [i, result] of results.entries()) {
        // Anything but a RateLimiterRes is a store failure: not a reason to refuse anyone.
        if (result.status === 'rejected' && result.reason instanceof RateLimiterRes) {
          remember(subjects[i] as string, result.reason.msBeforeNext, true)
          wait = Math.max(wait, result.reason.msBeforeNext)
        }
      }
      return wait > 0 ? seconds(wait) : 0
    },
  }
}

export type AuthFailureLimiter = ReturnType<typeof createAuthFailureLimiter>

/**
 * The one limiter of failed authentications of a replica, as configured (null when AUTH_FAILURE_LIMIT
 * is 0): the API and the console's sign-in count against the same budget.
 */
export function authFailureLimiterFor(
  config: Pick<
    Config,
    'authFailureLimit' | 'authFailureWindowSeconds' | 'authFailureBlockSeconds' | 'redisKeyPrefix'
  >,
  redis: RedisConnection | null,
  log: Log,
): AuthFailureLimiter | null {
  if (config.authFailureLimit <= 0) return null
  return createAuthFailureLimiter({
    limit: config.authFailureLimit,
    windowSeconds: config.authFailureWindowSeconds,
    blockSeconds: config.authFailureBlockSeconds,
    redis,
    keyPrefix: config.redisKeyPrefix,
    log,
  })
}
