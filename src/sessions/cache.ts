import type { SessionRow } from './repository.ts'

/**
 * The seam between the domain and whatever caches introspection answers.
 * Keys are token hashes (hex), never tokens. `null` caches "no such token".
 */
export interface SessionCache {
  get(tokenKey: string): Promise<SessionRow | null | undefined>
  set(tokenKey: string, session: SessionRow | null, now: number): Promise<void>
  /** Drops a token's entry everywhere (this replica and the others) before the change is acknowledged. */
  invalidate(tokenKeys: string[]): Promise<void>
  close(): Promise<void>
}

/** No cache at all: every introspection reads Postgres. */
export const noCache: SessionCache = {
  get: async () => undefined,
  set: async () => {},
  invalidate: async () => {},
  close: async () => {},
}
