import type { SessionCache } from './cache.ts'
import type { ChangedSession } from './model.ts'
import { hashToken } from './tokens.ts'
import type { WriteBehind } from './write-behind.ts'

/** The cache key of a JWT session (its access tokens are many; the session is one). */
export const sessionKey = (id: string) => `sid:${id}`

/** The cache key of an opaque session: its token's hash (hex), which is what the sessions row holds. */
export const tokenKey = (token: string) => hashToken(token)

/** The cache key of a changed session: its opaque token's hash (hex), or its id for a JWT session. */
const cacheKey = (e: ChangedSession) => (e.token_hash ? e.token_hash.toString('hex') : sessionKey(e.id))

/** Drops sessions just changed in Postgres (committed) from every cache: the only place that knows cache keys. */
export function createInvalidation({ cache, touches }: { cache: SessionCache; touches: WriteBehind }) {
  /** After sessions ended: drops them from every cache, and their pending bookkeeping. */
  async function invalidateEnded(ended: ChangedSession[]): Promise<number> {
    for (const e of ended) touches.forget(e.id)
    return invalidateChanged(ended)
  }

  /** After sessions changed and live on (suspended, resumed, rebound): drops them from every cache. */
  async function invalidateChanged(changed: ChangedSession[]): Promise<number> {
    await cache.invalidate(changed.map(cacheKey))
    return changed.length
  }

  return { invalidateEnded, invalidateChanged }
}

export type Invalidation = ReturnType<typeof createInvalidation>
