import { type Static, type TLiteral, type TSchema, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import ipaddr from 'ipaddr.js'
import { DriftPolicy, LimitAction } from './sessions/model.ts'

/**
 * Every setting of the service, in one TypeBox schema. Each property names the
 * environment variable it is read from (`env`); `loadConfig` is the only reader
 * of `process.env` in the project.
 */
const env = (name: string, description: string, extra: Record<string, unknown> = {}) => ({
  env: name,
  description,
  ...extra,
})

/** The members of a union of strings, each keeping its literal type (a plain `.map` widens them to string). */
const literals = <const T extends readonly string[]>(values: T) =>
  values.map((v) => Type.Literal(v)) as { -readonly [K in keyof T]: TLiteral<T[K]> }

/** A TCP port, 1–65535. */
const PORT = '(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})'
/** One seed of a Redis Cluster URL: a host name, IPv4 or [IPv6] address, and an optional port. */
const SEED = `([A-Za-z0-9_.-]+|\\[[0-9A-Fa-f:.]+\\])(:${PORT})?`

const LogLevel = literals(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

export const ConfigSchema = Type.Object({
  host: Type.String(env('HOST', 'Address to listen on', { default: '127.0.0.1', minLength: 1 })),
  port: Type.Integer(env('PORT', 'Port to listen on', { default: 8080, minimum: 0, maximum: 65535 })),
  logLevel: Type.Union(LogLevel, env('LOG_LEVEL', 'pino log level', { default: 'info' })),
  logIntrospection: Type.Boolean(
    env(
      'LOG_INTROSPECTION',
      'Write access log lines for introspection requests too (one per gateway request)',
      {
        default: false,
      },
    ),
  ),
  databaseUrl: Type.Optional(
    Type.String(
      env('DATABASE_URL', 'Postgres URL; unset = embedded Postgres in DATA_DIR', {
        pattern: '^postgres(ql)?://',
      }),
    ),
  ),
  dataDir: Type.String(
    env('DATA_DIR', 'Folder of the embedded Postgres', { default: './data', minLength: 1 }),
  ),
  dbSchema: Type.String(
    env('DB_SCHEMA', 'Postgres schema that holds the tables', {
      default: 'public',
      pattern: '^[a-z_][a-z0-9_]{0,59}$',
    }),
  ),
  dbPoolMax: Type.Integer(
    env('DB_POOL_MAX', 'Postgres connection pool size', { default: 10, minimum: 1, maximum: 200 }),
  ),
  migrateOnStart: Type.Boolean(
    env('MIGRATE_ON_START', '`serve` applies pending migrations first', { default: true }),
  ),
  redisUrl: Type.Optional(
    Type.String(
      env(
        'REDIS_URL',
        'Redis URL (redis:// or rediss://), or a Redis Cluster: redis+cluster://[user:password@]host:port,host:port… (rediss+cluster:// with TLS); unset = in-process cache only',
        { pattern: `^(rediss?://|rediss?\\+cluster://([^@/\\s#?]+@)?${SEED}(,${SEED})*/?$)` },
      ),
    ),
  ),
  redisKeyPrefix: Type.String(
    env('REDIS_KEY_PREFIX', 'Prefix of every Redis key and channel', { default: 'sa:', maxLength: 64 }),
  ),
  redisCommandTimeoutMs: Type.Integer(
    env('REDIS_COMMAND_TIMEOUT_MS', 'Longest wait for one Redis command before going to Postgres', {
      default: 100,
      minimum: 1,
    }),
  ),
  l1TtlMs: Type.Integer(
    env(
      'L1_TTL_MS',
      'Lifetime of an in-process cache entry; bounds staleness if an invalidation is lost. 0 = off',
      {
        default: 1000,
        minimum: 0,
      },
    ),
  ),
  l1MaxEntries: Type.Integer(
    env('L1_MAX_ENTRIES', 'Entries in the in-process cache', { default: 100_000, minimum: 1 }),
  ),
  l2TtlMs: Type.Integer(
    env('L2_TTL_MS', 'Longest lifetime of a Redis cache entry (never past the session expiry)', {
      default: 60_000,
      minimum: 1,
    }),
  ),
  negativeTtlMs: Type.Integer(
    env('NEGATIVE_TTL_MS', 'How long an unknown token is remembered as unknown', {
      default: 30_000,
      minimum: 1,
    }),
  ),
  writeBehindIntervalMs: Type.Integer(
    env(
      'WRITE_BEHIND_INTERVAL_MS',
      'How often last-seen bookkeeping is written (in statements of up to 100 sessions, in id order)',
      {
        default: 30_000,
        minimum: 10,
      },
    ),
  ),
  adminApiKey: Type.Optional(
    Type.String(
      env('ADMIN_API_KEY', 'Seeds an API key with the admin scope (32+ printable characters)', {
        minLength: 32,
        maxLength: 256,
        pattern: '^[\\x21-\\x7e]+$',
      }),
    ),
  ),
  idleTimeoutSeconds: Type.Integer(
    env('IDLE_TIMEOUT_SECONDS', 'Default idle timeout of a session', { default: 1800, minimum: 1 }),
  ),
  absoluteLifetimeSeconds: Type.Integer(
    env('ABSOLUTE_LIFETIME_SECONDS', 'Default absolute lifetime of a session', {
      default: 43200,
      minimum: 1,
    }),
  ),
  devMode: Type.Boolean(
    env(
      'DEV_MODE',
      'Local development only: allows running without SIGNING_KEY_ENCRYPTION_KEY (keys are then sealed with a public development key)',
      { default: false },
    ),
  ),
  signingKeyEncryptionKey: Type.Optional(
    Type.String(
      env(
        'SIGNING_KEY_ENCRYPTION_KEY',
        'Seals the private JWT signing keys in Postgres: 32 random bytes as base64 or hex (`openssl rand -base64 32`); required unless DEV_MODE',
        { pattern: '^([A-Za-z0-9+/_-]{43}=?|[0-9a-fA-F]{64})$' },
      ),
    ),
  ),
  jwtAlgorithm: Type.Union(
    literals(['EdDSA', 'ES256', 'RS256']),
    env('JWT_ALGORITHM', 'Algorithm of new signing keys (a change takes effect with a new key at start)', {
      default: 'EdDSA',
    }),
  ),
  jwtIssuer: Type.String(
    env('JWT_ISSUER', 'The `iss` of access JWTs', { default: 'session-authority', minLength: 1 }),
  ),
  jwtAudience: Type.String(
    env('JWT_AUDIENCE', 'The `aud` of access JWTs (your API)', { default: 'api', minLength: 1 }),
  ),
  accessTokenTtlSeconds: Type.Integer(
    env('ACCESS_TOKEN_TTL_SECONDS', 'Lifetime of an access JWT', {
      default: 300,
      minimum: 10,
      maximum: 86_400,
    }),
  ),
  jwtClockSkewSeconds: Type.Integer(
    env('JWT_CLOCK_SKEW_SECONDS', 'Clock difference tolerated when checking exp, nbf and iat', {
      default: 30,
      minimum: 0,
      maximum: 300,
    }),
  ),
  refreshReuseGraceSeconds: Type.Integer(
    env(
      'REFRESH_REUSE_GRACE_SECONDS',
      'A spent refresh token presented again within this time gets the same new pair (tabs refreshing together); after it, the session is revoked as stolen',
      { default: 10, minimum: 0, maximum: 300 },
    ),
  ),
  signingKeyRotationDays: Type.Integer(
    env(
      'SIGNING_KEY_ROTATION_DAYS',
      'A new signing key is made current when the current one is this old. 0 = only by hand',
      {
        default: 30,
        minimum: 0,
      },
    ),
  ),
  signingKeyReloadMs: Type.Integer(
    env(
      'SIGNING_KEY_RELOAD_MS',
      'How often a replica rereads the signing keys (it sees a rotation made elsewhere within this)',
      {
        default: 10_000,
        minimum: 100,
      },
    ),
  ),
  jwtVerifiedCacheEntries: Type.Integer(
    env(
      'JWT_VERIFIED_CACHE_ENTRIES',
      'Access JWTs whose signature each replica remembers as verified (the session is still checked every time). 0 = off',
      { default: 100_000, minimum: 0 },
    ),
  ),
  jwksMaxAgeSeconds: Type.Integer(
    env('JWKS_MAX_AGE_SECONDS', 'Cache-Control max-age of /.well-known/jwks.json', {
      default: 300,
      minimum: 0,
    }),
  ),
  uaDriftPolicy: Type.Union(
    DriftPolicy.anyOf,
    env('UA_DRIFT_POLICY', 'What a change of browser, OS or device type does: ignore, record or suspend', {
      default: 'suspend',
    }),
  ),
  ipDriftPolicy: Type.Union(
    DriftPolicy.anyOf,
    env('IP_DRIFT_POLICY', 'What an IP move outside the tolerated prefix does: ignore, record or suspend', {
      default: 'suspend',
    }),
  ),
  ipv4DriftPrefix: Type.Integer(
    env('IPV4_DRIFT_PREFIX', 'IPv4 moves within this prefix length are not drift', {
      default: 24,
      minimum: 0,
      maximum: 32,
    }),
  ),
  ipv6DriftPrefix: Type.Integer(
    env('IPV6_DRIFT_PREFIX', 'IPv6 moves within this prefix length are not drift', {
      default: 64,
      minimum: 0,
      maximum: 128,
    }),
  ),
  maxSessionsPerUser: Type.Integer(
    env('MAX_SESSIONS_PER_USER', 'Concurrent live sessions per user; 0 = unlimited', {
      default: 0,
      minimum: 0,
    }),
  ),
  sessionLimitAction: Type.Union(
    LimitAction.anyOf,
    env('SESSION_LIMIT_ACTION', 'At the limit: evict_oldest, evict_least_recently_used or reject', {
      default: 'evict_oldest',
    }),
  ),
  logoutAllOnLogout: Type.Boolean(
    env('LOGOUT_ALL_ON_LOGOUT', 'Revoking a session revokes every session of its user by default', {
      default: false,
    }),
  ),
  newDeviceWindowDays: Type.Integer(
    env(
      'NEW_DEVICE_WINDOW_DAYS',
      'A sign-in from a device the user has not signed in from for this many days emits session.new_device; 0 = never',
      { default: 90, minimum: 0, maximum: 365 },
    ),
  ),
  newDeviceByNetwork: Type.Boolean(
    env(
      'NEW_DEVICE_BY_NETWORK',
      'A known device on a network (IPV4_DRIFT_PREFIX / IPV6_DRIFT_PREFIX) it has not signed in from is new too',
      { default: false },
    ),
  ),
  consoleEnabled: Type.Boolean(
    env('CONSOLE_ENABLED', 'Serve the admin console at /admin (operators sign in with an admin API key)', {
      default: false,
    }),
  ),
  consoleIdleTimeoutSeconds: Type.Integer(
    env('CONSOLE_IDLE_TIMEOUT_SECONDS', "An operator's console session ends after this long unused", {
      default: 900,
      minimum: 60,
      maximum: 86_400,
    }),
  ),
  consoleLifetimeSeconds: Type.Integer(
    env(
      'CONSOLE_LIFETIME_SECONDS',
      "An operator's console session ends this long after sign-in, used or not",
      {
        default: 28_800,
        minimum: 300,
        maximum: 604_800,
      },
    ),
  ),
  purgeIntervalMs: Type.Integer(
    env(
      'PURGE_INTERVAL_MS',
      'How often a replica purges old sessions and events (one replica at a time); 0 = never',
      {
        default: 3_600_000,
        minimum: 0,
      },
    ),
  ),
  purgeRetentionDays: Type.Integer(
    env('PURGE_RETENTION_DAYS', 'Ended sessions are deleted this long after they ended', {
      default: 30,
      minimum: 0,
    }),
  ),
  eventRetentionDays: Type.Integer(
    env('EVENT_RETENTION_DAYS', 'Events are deleted when this old (also those of purged sessions)', {
      default: 90,
      minimum: 0,
    }),
  ),
  trustProxy: Type.Optional(
    Type.String(
      env(
        'TRUST_PROXY',
        'Comma-separated addresses or CIDRs of proxies (your gateway) whose X-Forwarded-For / X-Real-IP are believed',
        { minLength: 1, maxLength: 2048 },
      ),
    ),
  ),
  forwardAuthSecret: Type.Optional(
    Type.String(
      env(
        'FORWARD_AUTH_SECRET',
        'Shared secret a gateway sends to /v1/forward-auth (16+ printable characters)',
        {
          minLength: 16,
          maxLength: 256,
          pattern: '^[\\x21-\\x7e]+$',
        },
      ),
    ),
  ),
  forwardAuthSecretHeader: Type.String(
    env('FORWARD_AUTH_SECRET_HEADER', 'The header that carries FORWARD_AUTH_SECRET', {
      default: 'x-forward-auth-secret',
      pattern: '^[A-Za-z0-9-]{1,64}$',
    }),
  ),
  forwardAuthTenants: Type.String(
    env(
      'FORWARD_AUTH_TENANTS',
      'Comma-separated tenants whose sessions /v1/forward-auth lets through, or * for every tenant',
      {
        default: 'default',
        minLength: 1,
        maxLength: 2048,
        pattern: '^(\\*|[a-z0-9][a-z0-9_-]{0,62}(,[a-z0-9][a-z0-9_-]{0,62})*)$',
      },
    ),
  ),
  forwardAuthAllowedIps: Type.Optional(
    Type.String(
      env('FORWARD_AUTH_ALLOWED_IPS', 'Comma-separated addresses or CIDRs allowed to call /v1/forward-auth', {
        minLength: 1,
        maxLength: 2048,
      }),
    ),
  ),
  forwardAuthCookie: Type.Optional(
    Type.String(
      env(
        'FORWARD_AUTH_COOKIE',
        "A cookie that may carry the end user's token (else only Authorization: Bearer)",
        {
          pattern: '^[A-Za-z0-9_.-]{1,128}$',
        },
      ),
    ),
  ),
  selfServiceOrigins: Type.Optional(
    Type.String(
      env(
        'SELF_SERVICE_ORIGINS',
        'Comma-separated exact origins (https://app.example.com) whose pages may call /v1/me from the browser (CORS, with credentials); a tenant adds its own in self_service_origins',
        { maxLength: 4096, pattern: '^https?://[^/,\\s]+(,https?://[^/,\\s]+)*$' },
      ),
    ),
  ),
  selfServiceRateLimit: Type.Integer(
    env(
      'SELF_SERVICE_RATE_LIMIT',
      'Calls of /v1/me allowed per client address per minute, on each replica; past it, 429. 0 = no limit',
      { default: 120, minimum: 0 },
    ),
  ),
  forwardAuthUserHeader: Type.String(
    env('FORWARD_AUTH_USER_HEADER', 'Response header with the user id for the upstream', {
      default: 'x-auth-user-id',
      pattern: '^[A-Za-z0-9-]{1,64}$',
    }),
  ),
  forwardAuthTenantHeader: Type.String(
    env('FORWARD_AUTH_TENANT_HEADER', "Response header with the session's tenant for the upstream", {
      default: 'x-auth-tenant-id',
      pattern: '^[A-Za-z0-9-]{1,64}$',
    }),
  ),
  forwardAuthSessionHeader: Type.String(
    env('FORWARD_AUTH_SESSION_HEADER', 'Response header with the session id for the upstream', {
      default: 'x-auth-session-id',
      pattern: '^[A-Za-z0-9-]{1,64}$',
    }),
  ),
  forwardAuthMetadata: Type.Optional(
    Type.String(
      env(
        'FORWARD_AUTH_METADATA',
        'Comma-separated metadata keys passed upstream, each `key` (header x-auth-meta-<key>) or `key=Header-Name`',
        {
          pattern: '^[A-Za-z0-9_.-]+(=[A-Za-z0-9-]+)?(,[A-Za-z0-9_.-]+(=[A-Za-z0-9-]+)?)*$',
          maxLength: 2048,
        },
      ),
    ),
  ),
  webhookPollMs: Type.Integer(
    env(
      'WEBHOOK_POLL_MS',
      'How often a replica looks for webhook deliveries due; 0 = this replica sends none',
      {
        default: 1000,
        minimum: 0,
      },
    ),
  ),
  webhookTimeoutMs: Type.Integer(
    env('WEBHOOK_TIMEOUT_MS', 'Longest wait for a webhook receiver to answer', {
      default: 5000,
      minimum: 100,
    }),
  ),
  webhookMaxAttempts: Type.Integer(
    env('WEBHOOK_MAX_ATTEMPTS', 'Attempts before a delivery is marked dead', { default: 12, minimum: 1 }),
  ),
  webhookBackoffMs: Type.Integer(
    env('WEBHOOK_BACKOFF_MS', 'First retry delay; it doubles with each attempt (with jitter)', {
      default: 1000,
      minimum: 1,
    }),
  ),
  webhookBackoffMaxMs: Type.Integer(
    env('WEBHOOK_BACKOFF_MAX_MS', 'Longest retry delay', { default: 3_600_000, minimum: 1 }),
  ),
  webhookAllowedCidrs: Type.Optional(
    Type.String(
      env(
        'WEBHOOK_ALLOWED_CIDRS',
        'Comma-separated addresses or CIDRs webhooks may go to although not public (loopback, private, link-local…): on-premise receivers',
        { minLength: 1, maxLength: 2048 },
      ),
    ),
  ),
  webhookBatch: Type.Integer(
    env('WEBHOOK_BATCH', 'Deliveries a replica claims and sends at once', {
      default: 20,
      minimum: 1,
      maximum: 500,
    }),
  ),
  authFailureLimit: Type.Integer(
    env(
      'AUTH_FAILURE_LIMIT',
      'Failed API-key authentications allowed per client address and per claimed key id within AUTH_FAILURE_WINDOW_SECONDS; past it, 429 until the block ends. 0 = no limit',
      { default: 20, minimum: 0 },
    ),
  ),
  authFailureWindowSeconds: Type.Integer(
    env('AUTH_FAILURE_WINDOW_SECONDS', 'The window AUTH_FAILURE_LIMIT counts failures in', {
      default: 60,
      minimum: 1,
      maximum: 86_400,
    }),
  ),
  authFailureBlockSeconds: Type.Integer(
    env(
      'AUTH_FAILURE_BLOCK_SECONDS',
      'How long an address or key id over AUTH_FAILURE_LIMIT is refused (keys it has seen valid still pass); 0 = until the window ends',
      { default: 300, minimum: 0, maximum: 86_400 },
    ),
  ),
  metricsToken: Type.Optional(
    Type.String(
      env(
        'METRICS_TOKEN',
        'When set, /metrics needs `Authorization: Bearer <token>` (16+ printable characters); unset = open',
        { minLength: 16, maxLength: 256, pattern: '^[\\x21-\\x7e]+$' },
      ),
    ),
  ),
  tenantReloadMs: Type.Integer(
    env(
      'TENANT_RELOAD_MS',
      "How often a replica rereads the tenants' settings (a change made on it applies at once)",
      {
        default: 5000,
        minimum: 100,
      },
    ),
  ),
  apiKeyCacheTtlMs: Type.Integer(
    env('API_KEY_CACHE_TTL_MS', 'How long a verified API key is trusted before it is read again', {
      default: 5000,
      minimum: 0,
    }),
  ),
  bodyLimitBytes: Type.Integer(
    env('BODY_LIMIT_BYTES', 'Largest accepted request body', { default: 65536, minimum: 1024 }),
  ),
  metadataLimitBytes: Type.Integer(
    env('METADATA_LIMIT_BYTES', 'Largest accepted session metadata, as JSON', { default: 8192, minimum: 2 }),
  ),
  // Capped far below the depth at which JSON.stringify or a validator's recursion overflows (thousands).
  jsonMaxDepth: Type.Integer(
    env('JSON_MAX_DEPTH', 'Deepest accepted nesting of arrays and objects in a JSON body', {
      default: 32,
      minimum: 2,
      maximum: 256,
    }),
  ),
  requestTimeoutMs: Type.Integer(
    env('REQUEST_TIMEOUT_MS', 'Longest time a client may take to send a whole request (headers and body)', {
      default: 10_000,
      minimum: 100,
    }),
  ),
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

type Properties = Record<string, TSchema & { env: string }>
const properties = ConfigSchema.properties as unknown as Properties

/** Reads and validates the environment once; throws a ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const [key, schema] of Object.entries(properties)) {
    const value = env[schema.env]
    if (value !== undefined && value !== '') raw[key] = Value.Convert(schema, value)
  }
  return buildConfig(raw, (key) => properties[key]?.env ?? key)
}

/** Fills defaults into a partial config and validates it (tests build configs this way). */
export function buildConfig(
  partial: Partial<Config> | Record<string, unknown>,
  nameOf: (key: string) => string = (key) => key,
): Config {
  const value = Value.Default(ConfigSchema, structuredClone(partial))
  const error = Value.Errors(ConfigSchema, value).First()
  if (error) {
    const key = error.path.split('/')[1] ?? ''
    const choices = (error.schema.anyOf as Array<{ const?: unknown }> | undefined)?.map((s) => s.const)
    // The value itself is never echoed: some settings are secrets.
    const message = choices ? `must be one of ${choices.join(', ')}` : error.message
    throw new ConfigError(`invalid configuration: ${key ? `${nameOf(key)}: ` : ''}${message}`)
  }
  refuseDevelopmentSettings(value as Config)
  return value as Config
}

/** The README's example admin key, and anything built on it. */
const EXAMPLE_ADMIN_KEY = 'dev-admin-key-change-me'

/** Is HOST a loopback address (or localhost), reachable only from this machine? */
function isLoopback(host: string): boolean {
  if (host === 'localhost') return true
  const bare = host.replace(/^\[(.*)\]$/, '$1')
  return ipaddr.isValid(bare) && ipaddr.process(bare).range() === 'loopback'
}

/** Development conveniences (a public key-encryption key, the README's admin key) stay on the developer's machine. */
function refuseDevelopmentSettings(config: Config) {
  if (config.devMode && !isLoopback(config.host)) {
    throw new ConfigError(
      'invalid configuration: DEV_MODE is for your machine only and needs a loopback HOST (127.0.0.1, ::1 or localhost); elsewhere unset it and set SIGNING_KEY_ENCRYPTION_KEY',
    )
  }
  if (!config.devMode && config.adminApiKey?.startsWith(EXAMPLE_ADMIN_KEY)) {
    throw new ConfigError(
      'invalid configuration: ADMIN_API_KEY is the README example; set a random one (`openssl rand -base64 32`), or DEV_MODE=true on your machine',
    )
  }
}

/** The settings table for the README, generated from the schema. */
export function describeConfig(): Array<{ env: string; default: unknown; description: string }> {
  return Object.values(properties).map((s) => ({
    env: s.env,
    default: s.default,
    description: String(s.description ?? ''),
  }))
}
