import { type Static, type TSchema, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

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

const LogLevel = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l))

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
      pattern: '^[a-z_][a-z0-9_]{0,62}$',
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
      env('REDIS_URL', 'Redis URL; unset = in-process cache only (a single replica)', {
        pattern: '^rediss?://',
      }),
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
    env('WRITE_BEHIND_INTERVAL_MS', 'How often last-seen bookkeeping is written (one statement per flush)', {
      default: 30_000,
      minimum: 10,
    }),
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
  return value as Config
}

/** The settings table for the README, generated from the schema. */
export function describeConfig(): Array<{ env: string; default: unknown; description: string }> {
  return Object.values(properties).map((s) => ({
    env: s.env,
    default: s.default,
    description: String(s.description ?? ''),
  }))
}
