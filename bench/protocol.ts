/** What the benchmark parent and its server child say to each other over IPC, and what both need to know. */

/**
 * How the child sets the service up: `bare` is a plain Fastify route; the
 * others are the service with its caches on (`cached`), an L1 of one entry
 * (`redis`: many tokens miss it and are answered from Redis), or
 * L1 off and no Redis (`postgres`), or caches on but no verified-JWT cache, so
 * every JWT's signature is checked (`jwt-uncached`).
 */
export type ServerMode = 'bare' | 'cached' | 'redis' | 'postgres' | 'jwt-uncached'

/** The tokens of the two sessions the service child opened: one opaque, one JWT (its access token). */
export interface Tokens {
  opaque: string
  jwt: string
  /** More opaque sessions: many tokens through an L1 of one entry miss it (the Redis row). */
  many: string[]
}

export interface ServerArgs {
  mode: ServerMode
  databaseUrl: string
  redisUrl: string
  schema: string
  redisKeyPrefix: string
}

/** Introspection lookups so far, by where they were answered (cumulative counters of the service). */
export interface Answered {
  l1: number
  redis: number
  postgres: number
  redisErrors: number
}

export interface Stats {
  /** Resident set size of the server process, bytes. */
  rss: number
  /** CPU time (user + system) the server process has used since it started, µs. */
  cpuMicros: number
  /** The longest the server's event loop was blocked since the previous reading, ms. */
  loopDelayMaxMs: number
  /** Null for the bare route, which has no cache. */
  answered: Answered | null
}

export type ToParent =
  | { type: 'ready'; port: number; tokens: Tokens | null }
  | ({ type: 'stats' } & Stats)
  | { type: 'failed'; message: string }
export type ToChild = { type: 'stats' } | { type: 'stop' }

/** The API key the children seed (ADMIN_API_KEY) and the load generator presents. */
export const ADMIN_KEY = 'bench-admin-key-0123456789abcdef0123456789'

export const INTROSPECT_PATH = '/v1/sessions/introspect'
export const CREATE_PATH = '/v1/sessions'
export const FORWARD_AUTH_PATH = '/v1/forward-auth'
/** How the load generator, as the gateway, proves itself to forward-auth. */
export const GATEWAY_SECRET = 'bench-gateway-secret-0123456789'
export const GATEWAY_SECRET_HEADER = 'x-forward-auth-secret'

/** What a gateway forwards with each introspection: the end user's address and browser. */
export const CLIENT = {
  ip: '203.0.113.7',
  user_agent:
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
}

/** A login as a backend sends it. */
export const openSessionBody = (userId: string, tokenType: 'opaque' | 'jwt' = 'opaque') =>
  JSON.stringify({
    user_id: userId,
    ...CLIENT,
    metadata: { tenant: 'acme', plan: 'pro' },
    token_type: tokenType,
  })
