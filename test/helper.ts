import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import postgres from 'postgres'
import { buildApp } from '../src/app.ts'
import { manualClock } from '../src/clock.ts'
import { buildConfig, type Config } from '../src/config.ts'
import { loggerOptions } from '../src/logger.ts'
import { freePort, startCli, waitForOk } from './fixtures/process.ts'
import { startTcpProxy } from './fixtures/tcp-proxy.ts'

/** The machine's Postgres and Redis; override with TEST_DATABASE_URL / TEST_REDIS_URL. */
export const DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

export const ADMIN_KEY = 'test-admin-key-0123456789abcdef0123456789'
/** The key-encryption key of the signing keys the tests' apps make. */
export const TEST_KEK = randomBytes(32).toString('base64')
export const auth = (key = ADMIN_KEY) => ({ authorization: `Bearer ${key}` })

export const CHROME_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
export const SAFARI_IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1'

/** A schema name no other test file uses, so files run in parallel on one database. */
export const uniqueSchema = () => `t_${randomBytes(6).toString('hex')}`

/** Runs SQL against the test database outside any app (setup, checks, teardown). */
export function adminSql() {
  return postgres(DATABASE_URL, { max: 2, onnotice: () => {} })
}

export async function dropSchema(schema: string) {
  const sql = adminSql()
  try {
    await sql`drop schema if exists ${sql(schema)} cascade`
  } finally {
    // Even when the drop fails: an open connection would keep the test file's process alive.
    await sql.end()
  }
}

/** Captures log lines, so a test can read what the service logged. */
export function logCapture() {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      done()
    },
  })
  return { lines, stream, text: () => lines.join('\n') }
}

export interface TestApp {
  app: FastifyInstance
  config: Config
  clock: ReturnType<typeof manualClock>
  logs: ReturnType<typeof logCapture>
}

/** An app on a private schema of the real Postgres, closed and dropped after the test. */
export async function buildTestApp(t: TestContext, overrides: Partial<Config> = {}): Promise<TestApp> {
  const schema = overrides.dbSchema ?? uniqueSchema()
  const config = buildConfig({
    databaseUrl: DATABASE_URL,
    dbSchema: schema,
    dbPoolMax: 4,
    logLevel: 'info',
    adminApiKey: ADMIN_KEY,
    signingKeyEncryptionKey: TEST_KEK,
    ...overrides,
  })
  const clock = manualClock(Date.parse('2026-01-01T00:00:00Z'))
  const logs = logCapture()
  const logger = pino(loggerOptions(config), logs.stream)
  const app = await buildApp(config, { clock, logger, migrate: true })
  t.after(async () => {
    await app.close()
    if (!overrides.dbSchema) await dropSchema(schema)
  })
  return { app, config, clock, logs }
}

/**
 * Two apps (replicas) on one new schema: the same sessions and signing keys.
 * The schema is dropped only after both have closed (t.after hooks run in the
 * order they were added).
 */
export async function twoReplicas(
  t: TestContext,
  first: Partial<Config> = {},
  second: Partial<Config> = first,
): Promise<[TestApp, TestApp]> {
  const dbSchema = uniqueSchema()
  const a = await buildTestApp(t, { ...first, dbSchema })
  let b: TestApp
  try {
    b = await buildTestApp(t, { ...second, dbSchema })
  } finally {
    t.after(() => dropSchema(dbSchema))
  }
  return [a, b]
}

/** An app built only to read its OpenAPI document. */
export async function buildDocumentApp() {
  const schema = uniqueSchema()
  const config = buildConfig({
    databaseUrl: DATABASE_URL,
    dbSchema: schema,
    logLevel: 'silent',
    signingKeyEncryptionKey: TEST_KEK,
  })
  const app = await buildApp(config, { migrate: true })
  await app.ready()
  return {
    app,
    async close() {
      await app.close()
      await dropSchema(schema)
    },
  }
}

/** Opens a session through the API and returns the token and the session. */
export async function openSession(app: FastifyInstance, body: Record<string, unknown> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', ip: '203.0.113.7', user_agent: CHROME_WINDOWS, ...body },
  })
  if (res.statusCode !== 201) throw new Error(`open session failed: ${res.statusCode} ${res.body}`)
  return res.json() as { token: string; session: { id: string; user_id: string } & Record<string, unknown> }
}

export async function introspect(app: FastifyInstance, token: string, extra: Record<string, unknown> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token, ...extra },
  })
  if (res.statusCode !== 200) throw new Error(`introspect failed: ${res.statusCode} ${res.body}`)
  return res.json() as { active: boolean } & Record<string, unknown>
}

/** Creates an API key with the given scopes and returns it. */
export async function createKey(app: FastifyInstance, scopes: string[]) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/api-keys',
    headers: auth(),
    payload: { name: `test ${scopes.join(' ')}`, scopes },
  })
  if (res.statusCode !== 201) throw new Error(`create key failed: ${res.statusCode} ${res.body}`)
  return res.json() as { key: string; api_key: { id: string } }
}

/** Settings for an app that uses the machine's Redis under a key prefix of its own. */
export function redisSettings(prefix = `t_${randomBytes(6).toString('hex')}:`): Partial<Config> {
  return { redisUrl: REDIS_URL, redisKeyPrefix: prefix }
}

/** Waits until `check` holds, polling every few milliseconds; fails after `timeoutMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = 'condition',
) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 5))
  }
  throw new Error(`${what} did not hold within ${timeoutMs} ms`)
}

/** Revokes a session through the API and returns the reply. */
export function revokeSession(app: FastifyInstance, sessionId: string) {
  return app.inject({ method: 'DELETE', url: `/v1/sessions/${sessionId}`, headers: auth() })
}

/**
 * An app whose Postgres connections (pool and invalidation feed) go through a
 * proxy the test can cut or stall; the shared server keeps running.
 */
export async function appBehindPostgresProxy(t: TestContext, overrides: Partial<Config> = {}) {
  const target = new URL(DATABASE_URL)
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
  try {
    const proxied = new URL(DATABASE_URL)
    proxied.hostname = '127.0.0.1'
    proxied.port = String(proxy.port)
    const built = await buildTestApp(t, { ...overrides, databaseUrl: proxied.toString() })
    // Registered after the app's teardown, so the app closes its pool while the proxy still runs.
    t.after(() => proxy.close())
    return { ...built, proxy }
  } catch (err) {
    await proxy.close()
    throw err
  }
}

/**
 * `session-authority serve` as a process of its own, on a private schema of the
 * test database (with the test key and key-encryption key, plus `env`),
 * answering on `base`. After the test it is killed, if it still runs, and its
 * schema dropped.
 */
export async function serveProcess(t: TestContext, env: Record<string, string>, startMs = 60_000) {
  const schema = uniqueSchema()
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const run = startCli(['serve'], {
    PORT: String(port),
    DATABASE_URL,
    DB_SCHEMA: schema,
    ADMIN_API_KEY: ADMIN_KEY,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    ...env,
  })
  t.after(async () => {
    const { child } = run
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    }
    await dropSchema(schema)
  })
  await waitForOk(`${base}/readyz`, run.child, startMs, run.output)
  return { ...run, base, schema }
}
