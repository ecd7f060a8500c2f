/**
 * The server under test, run in a process of its own so the load generator
 * does not share its event loop. Started by bench/run.ts with one JSON argument
 * (ServerArgs); talks to the parent over IPC only (stdout is the service's log).
 */
import { isUtf8 } from 'node:buffer'
import { randomBytes, randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import Fastify, { type FastifyInstance } from 'fastify'
import { compiled } from './compiled.ts'
import {
  ADMIN_KEY,
  type Answered,
  CREATE_PATH,
  FORWARD_AUTH_PATH,
  GATEWAY_SECRET,
  INTROSPECT_PATH,
  openSessionBody,
  type ServerArgs,
  type ToChild,
  type Tokens,
  type ToParent,
} from './protocol.ts'

// The service as it ships: compiled by tsc (bench/run.ts builds it first), not transformed on load.
const { buildApp, serverOptions } = await compiled<typeof import('../src/app.ts')>('app')
const { buildConfig } = await compiled<typeof import('../src/config.ts')>('config')

const send = (message: ToParent) => process.send?.(message)
const auth = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }

/**
 * What the service is compared against: Fastify with the service's server
 * settings and its JSON body parsing, and a handler that does no work.
 */
function bareApp(): FastifyInstance {
  const app = Fastify({ ...serverOptions, logger: false, bodyLimit: buildConfig({}).bodyLimitBytes })
  // The same parser as the service: refuse invalid UTF-8, then the default JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer
    if (!isUtf8(bytes)) return done(new Error('not UTF-8'), undefined)
    parseJson(request, bytes.toString('utf8'), done)
  })
  const sessionId = randomUUID()
  const createdAt = new Date().toISOString()
  // Shaped like an active introspection answer, so both send about as many bytes.
  app.post(INTROSPECT_PATH, async () => {
    const now = Date.now()
    return {
      active: true,
      session_id: sessionId,
      user_id: 'bench-user',
      token_type: 'opaque',
      created_at: createdAt,
      last_seen_at: new Date(now).toISOString(),
      expires_at: new Date(now + 1_800_000).toISOString(),
      absolute_expires_at: new Date(now + 43_200_000).toISOString(),
      metadata: { tenant: 'acme', plan: 'pro' },
    }
  })
  // Shaped like a forward-auth answer: empty, with the identity headers.
  app.get(FORWARD_AUTH_PATH, async (_request, reply) =>
    reply.header('x-auth-user-id', 'bench-user').header('x-auth-session-id', sessionId).send(),
  )
  return app
}

/** The service on the benchmark's schema, with an opaque and a JWT session whose tokens the parent introspects. */
async function serviceApp(args: ServerArgs): Promise<{ app: FastifyInstance; tokens: Tokens }> {
  const config = buildConfig({
    databaseUrl: args.databaseUrl,
    dbSchema: args.schema,
    // Quiet, but a Redis or Postgres problem during the run still shows.
    logLevel: 'warn',
    adminApiKey: ADMIN_KEY,
    signingKeyEncryptionKey: randomBytes(32).toString('base64'),
    ...(args.mode === 'postgres' ? {} : { redisUrl: args.redisUrl, redisKeyPrefix: args.redisKeyPrefix }),
    // A bound of 0 caches nothing (not even in Redis): Redis answers only what L1 does not hold.
    ...(args.mode === 'redis' ? { l1MaxEntries: 1 } : {}),
    ...(args.mode === 'postgres' ? { l1TtlMs: 0 } : {}),
    ...(args.mode === 'jwt-uncached' ? { jwtVerifiedCacheEntries: 0 } : {}),
    // The load generator is the gateway, on loopback.
    forwardAuthSecret: GATEWAY_SECRET,
    trustProxy: '127.0.0.1',
    // The access JWT must outlive the run.
    accessTokenTtlSeconds: 3600,
  })
  const app = await buildApp(config, { migrate: true })
  if (config.redisUrl) await untilRedisUp(app)
  const open = async (body: string) => {
    const res = await app.inject({ method: 'POST', url: CREATE_PATH, headers: auth, payload: body })
    if (res.statusCode !== 201) throw new Error(`opening a session failed: ${res.statusCode} ${res.body}`)
    return res.json() as { token?: string; access_token?: string }
  }
  const opaque = (await open(openSessionBody('bench-user'))).token as string
  const jwt = (await open(openSessionBody('bench-user', 'jwt'))).access_token as string
  const many: string[] = []
  if (args.mode === 'redis') {
    for (let i = 0; i < 200; i++) many.push((await open(openSessionBody(`bench-user-${i}`))).token as string)
  }
  return { app, tokens: { opaque, jwt, many } }
}

/** Redis connects in the background; a scenario meant to hit it must not start on the fallback path. */
async function untilRedisUp(app: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    const res = await app.inject({ method: 'GET', url: '/readyz' })
    if ((res.json() as { redis?: string }).redis === 'up') return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('Redis did not come up within 5 s')
}

/** Where introspections were answered so far, read from the service's own Prometheus counters. */
async function answered(app: FastifyInstance, redis: boolean): Promise<Answered> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  const sum = (metric: string, label = '') => {
    let total = 0
    for (const line of text.split('\n')) {
      if (line.startsWith(`${metric}{`) && line.includes(label)) total += Number(line.split(' ').pop())
    }
    return total
  }
  return {
    l1: sum('session_cache_hits_total', 'level="l1"'),
    redis: sum('session_cache_hits_total', 'level="l2"'),
    // Every lookup that no cache answered is a Postgres read.
    postgres: sum('session_cache_misses_total', redis ? 'level="l2"' : 'level="l1"'),
    redisErrors: sum('redis_errors_total'),
  }
}

async function main() {
  const args = JSON.parse(process.argv[2] ?? '{}') as ServerArgs
  const { app, tokens } = args.mode === 'bare' ? { app: bareApp(), tokens: null } : await serviceApp(args)
  await app.listen({ host: '127.0.0.1', port: 0 })

  // A stalled event loop explains outliers (and Redis command timeouts) that the load alone does not.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()

  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    // A hung close must not keep the process (and the benchmark's schema) around.
    setTimeout(() => process.exit(1), 5000).unref()
    await app.close()
    process.exit(0)
  }
  process.on('message', (message: ToChild) => {
    if (message.type === 'stop') void stop()
    else if (message.type === 'stats') {
      const rss = process.memoryUsage().rss
      const { user, system } = process.cpuUsage()
      const loopDelayMaxMs = loopDelay.max / 1e6
      loopDelay.reset()
      const reply = (a: Answered | null) =>
        send({ type: 'stats', rss, cpuMicros: user + system, loopDelayMaxMs, answered: a })
      if (args.mode === 'bare') reply(null)
      else void answered(app, args.mode !== 'postgres').then(reply)
    }
  })
  // The parent went away (crashed, killed): never outlive it.
  process.on('disconnect', () => void stop())
  send({ type: 'ready', port: (app.server.address() as AddressInfo).port, tokens })
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err)
  // Exit only once the message is out: the parent reports it.
  if (process.send) process.send({ type: 'failed', message } satisfies ToParent, () => process.exit(1))
  else process.exit(1)
})
