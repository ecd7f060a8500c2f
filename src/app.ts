import { isUtf8 } from 'node:buffer'
import swagger, { type SwaggerTransformObject } from '@fastify/swagger'
import { type TypeBoxTypeProvider, TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { addressMatcher } from './addresses.ts'
import { authFailureLimiterFor } from './api-keys/auth-failures.ts'
import { type Clock, systemClock } from './clock.ts'
import { type Config, ConfigError } from './config.ts'
import adminConsole from './console/index.ts'
import { Errors } from './errors.ts'
import { EVERY_ANSWER, requestId } from './every-answer.ts'
import { createLanes } from './fast-lane.ts'
import { createHealth } from './health.ts'
import { requireKeyEncryptionKey } from './keys/key-encryption.ts'
import { loggerOptions } from './logger.ts'
import { createMetrics } from './metrics.ts'
import { nameTitledSchemas, openapiYaml, withExamples } from './openapi.ts'
import { examples } from './openapi-examples.ts'
import apiKeys from './plugins/api-keys.ts'
import callerAuth, { rateLimitedResponse } from './plugins/caller-auth.ts'
import db from './plugins/db.ts'
import errorHandler, { clientErrorHandler, frameworkErrorHandler } from './plugins/error-handler.ts'
import metricsPlugin from './plugins/metrics.ts'
import purgeSweeper from './plugins/purge-sweeper.ts'
import redis from './plugins/redis.ts'
import sessionCache from './plugins/session-cache.ts'
import sessions from './plugins/sessions.ts'
import signingKeys from './plugins/signing-keys.ts'
import tenants from './plugins/tenants.ts'
import webhooks from './plugins/webhooks.ts'
import { lazyRequestLogger } from './request-logger.ts'
import adminRoutes from './routes/admin.ts'
import apiKeyRoutes from './routes/api-keys.ts'
import forwardAuthRoutes, { checkIdentityHeaders } from './routes/forward-auth.ts'
import healthRoutes from './routes/health.ts'
import selfServiceRoutes from './routes/me.ts'
import oauth2Routes from './routes/oauth2.ts'
import sessionRoutes from './routes/sessions.ts'
import signingKeyRoutes from './routes/signing-keys.ts'
import tenantRoutes from './routes/tenants.ts'
import userRoutes from './routes/users.ts'
import webhookRoutes from './routes/webhooks.ts'
import widgetRoutes, { loadWidget } from './routes/widget.ts'

export interface AppOptions {
  /** A pino logger to use instead of one built from the config (tests pass one writing to a buffer). */
  logger?: Logger
  clock?: Clock
  /** Apply pending migrations before serving; defaults to config.migrateOnStart. */
  migrate?: boolean
}

/** Room for a 256-character user_id, percent-encoded; the route schema still enforces 256. */
const MAX_PARAM_LENGTH = 3072

/** Fastify settings shared with the bare route the benchmark compares against. */
export const serverOptions = {
  keepAliveTimeout: 72_000,
  return503OnClosing: true,
  forceCloseConnections: 'idle',
} as const

/**
 * Whether a parsed JSON value nests arrays and objects deeper than `limit` (the
 * top-level value is level 1). Iterative, so no depth can overflow it; everything
 * after it (validation, JSON.stringify, Postgres) may then recurse safely.
 */
function nestedDeeperThan(value: unknown, limit: number): boolean {
  if (value === null || typeof value !== 'object') return false
  const nodes: object[] = [value]
  const depths: number[] = [1]
  while (nodes.length > 0) {
    const node = nodes.pop() as Record<string, unknown> | unknown[]
    const depth = depths.pop() as number
    const children = Array.isArray(node) ? node : Object.values(node)
    for (let i = 0; i < children.length; i++) {
      const child = children[i]
      if (child === null || typeof child !== 'object') continue
      if (depth >= limit) return true
      nodes.push(child)
      depths.push(depth + 1)
    }
  }
  return false
}

/** Address lists are checked at start, so a typo is a one-line refusal, not a gateway locked out. */
function checkAddressLists(config: Config) {
  for (const [name, list] of [
    ['TRUST_PROXY', config.trustProxy],
    ['FORWARD_AUTH_ALLOWED_IPS', config.forwardAuthAllowedIps],
    ['WEBHOOK_ALLOWED_CIDRS', config.webhookAllowedCidrs],
  ] as const) {
    if (!list) continue
    try {
      addressMatcher(list)
    } catch (err) {
      throw new ConfigError(`invalid configuration: ${name}: ${(err as Error).message}`)
    }
  }
}

const HTTP_METHODS = new Set(['get', 'head', 'post', 'put', 'patch', 'delete', 'options', 'trace'])

/**
 * A route declared with several methods is listed once per method, every one with the route's
 * operationId; each gets its method appended (forwardAuth: forwardAuthGet, forwardAuthPost, …) so an
 * SDK has one distinct name per operation.
 */
const operationIdPerMethod: SwaggerTransformObject = (document) => {
  if (!('openapiObject' in document)) return document.swaggerObject
  const paths = (document.openapiObject.paths ?? {}) as Record<
    string,
    Record<string, { operationId?: string }>
  >
  for (const item of Object.values(paths)) {
    const methodsById = new Map<string, string[]>()
    for (const [method, operation] of Object.entries(item)) {
      const id = HTTP_METHODS.has(method) ? operation.operationId : undefined
      if (id) methodsById.set(id, [...(methodsById.get(id) ?? []), method])
    }
    for (const [id, methods] of methodsById) {
      if (methods.length < 2) continue
      for (const method of methods) {
        item[method] = { ...item[method], operationId: `${id}${method[0]?.toUpperCase()}${method.slice(1)}` }
      }
    }
  }
  return document.openapiObject
}

/** Builds the whole service as a Fastify app; connects to Postgres but does not listen. */
export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const clock = options.clock ?? systemClock
  const kek = requireKeyEncryptionKey(config)
  checkAddressLists(config)
  checkIdentityHeaders(config)
  const widget = await loadWidget()
  const lanes = createLanes()
  const app = Fastify({
    ...serverOptions,
    loggerInstance: options.logger as FastifyBaseLogger | undefined,
    logger: options.logger ? undefined : loggerOptions(config),
    bodyLimit: config.bodyLimitBytes,
    // A client gets REQUEST_TIMEOUT_MS to send its whole request, headers included (a stalled body no
    // longer holds a connection). Only receiving is timed: a slow handler (a large purge) is not cut,
    // which is why there is no socket idle timeout (connectionTimeout), and a kept-alive connection
    // idle between requests is governed by keepAliveTimeout alone.
    requestTimeout: config.requestTimeoutMs,
    http: {
      requestTimeout: config.requestTimeoutMs,
      headersTimeout: config.requestTimeoutMs,
      // How often Node looks for requests past their deadline; its default, 30 s, would dwarf the timeout.
      connectionsCheckingInterval: Math.min(1000, Math.ceil(config.requestTimeoutMs / 4)),
    },
    // Timeouts, oversized headers and broken HTTP are answered in the one error shape too.
    clientErrorHandler: clientErrorHandler(config.requestTimeoutMs),
    // Starting the embedded Postgres (WebAssembly) can take a while on a small, busy machine.
    pluginTimeout: 180_000,
    requestIdHeader: false,
    // A request's logger is made when it first writes (see request-logger.ts).
    childLoggerFactory: lazyRequestLogger,
    // X-Forwarded-For is believed from these peers only (request.ip); none by default.
    ...(config.trustProxy ? { trustProxy: config.trustProxy } : {}),
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // A URL the router cannot even parse gets the one error shape too.
    frameworkErrors: frameworkErrorHandler(MAX_PARAM_LENGTH),
    genReqId: requestId,
  }).withTypeProvider<TypeBoxTypeProvider>()
  // The forward-auth fast lane answers its common case before the router (see fast-lane.ts).
  lanes.install(app.server)
  app.addHook('preClose', (done) => {
    lanes.close()
    done()
  })
  app.setValidatorCompiler(TypeBoxValidatorCompiler)

  // The default JSON parser silently replaces invalid UTF-8; refuse it instead. An empty body is no
  // body: many clients send Content-Type: application/json on every call (a route that needs a body
  // still refuses its absence). Nesting is bounded here, before anything can recurse over the value.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  const maxDepth = config.jsonMaxDepth
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer
    if (bytes.length === 0) return done(null, undefined)
    if (!isUtf8(bytes)) return done(new Errors.INVALID_JSON('it is not UTF-8'), undefined)
    parseJson(request, bytes.toString('utf8'), (err, value) => {
      if (err) return done(err, undefined)
      if (nestedDeeperThan(value, maxDepth)) {
        const message = `body: arrays and objects are nested deeper than the limit of ${maxDepth} levels`
        return done(new Errors.VALIDATION_FAILED(message), undefined)
      }
      done(null, value)
    })
  })
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    reply.headers(EVERY_ANSWER)
    done()
  })

  await app.register(errorHandler)
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'session-authority',
        version: '1',
        description: 'The source of truth for user sessions: open, introspect, list and revoke.',
        license: { name: 'MIT', url: 'https://spdx.org/licenses/MIT.html' },
      },
      servers: [{ url: 'http://127.0.0.1:8080', description: 'The default HOST and PORT' }],
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'A caller API key' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, when it is set' },
          sessionToken: {
            type: 'http',
            scheme: 'bearer',
            description:
              "The end user's own session token (opaque or access JWT), as Bearer or in the FORWARD_AUTH_COOKIE cookie",
          },
          gatewaySecret: {
            type: 'apiKey',
            in: 'header',
            name: 'x-forward-auth-secret',
            description:
              'FORWARD_AUTH_SECRET, in the header FORWARD_AUTH_SECRET_HEADER (this is its default name); and/or the caller address in FORWARD_AUTH_ALLOWED_IPS',
          },
        },
      },
      tags: [
        { name: 'sessions', description: 'Open, check and end sessions' },
        { name: 'users', description: "A user's sessions and history" },
        { name: 'api keys', description: 'Callers of the API and the JWT signing keys (scope admin)' },
        { name: 'admin', description: 'Actions over many sessions (scope admin)' },
        { name: 'tenants', description: 'Tenants and their policies (scope platform)' },
        { name: 'webhooks', description: 'Session events delivered to your URLs, signed (scope admin)' },
        {
          name: 'self-service',
          description:
            'The end user\'s own sessions, authorised by their session token, and the embeddable "your devices" element',
        },
        { name: 'gateways', description: 'The sub-request of API gateways (nginx, Traefik, Caddy, Envoy)' },
        { name: 'standards', description: 'OAuth token introspection (RFC 7662) and revocation (RFC 7009)' },
        { name: 'operations', description: 'Health, readiness and this document' },
      ],
    },
    transform: ({ schema, url, route }) => {
      const scope = route.config?.scope
      // No scope, no API key: said outright (`security: []`), unless the route names its own scheme.
      if (!scope) return { schema: schema?.security ? schema : { ...schema, security: [] }, url }
      const description =
        scope === 'platform'
          ? 'Needs an API key with the `platform` scope.'
          : `Needs an API key with the \`${scope}\` scope (or \`admin\` of the tenant, or \`platform\`).`
      const response = schema.response && { ...schema.response, 429: rateLimitedResponse }
      return { schema: { ...schema, security: [{ apiKey: [] }], description, response }, url }
    },
    transformObject: (document) => nameTitledSchemas(withExamples(operationIdPerMethod(document), examples)),
  })

  // Each plugin closes itself in an onClose hook, and Fastify runs those hooks last registered first: so
  // the purge timer stops, webhook deliveries in flight end and last-seen writes are flushed while the
  // signing keys, cache, feed, Redis and (last of all) the Postgres pool they may use are still open.
  await app.register(db, { config, migrate: options.migrate ?? config.migrateOnStart })
  const metrics = createMetrics()
  await app.register(redis, { config, metrics })
  await app.register(apiKeys, { config, clock })
  await app.register(tenants, { config, clock })
  await app.register(sessionCache, { config, kek, metrics })
  await app.register(signingKeys, { config, clock, kek })
  await app.register(sessions, { config, clock, kek, metrics })
  await app.register(webhooks, { config, clock, kek, metrics })
  await app.register(purgeSweeper, { intervalMs: config.purgeIntervalMs })
  const health = createHealth({ sql: app.db.sql, redis: app.redis, feed: app.invalidationFeed, metrics })

  await app.register(metricsPlugin, { metrics, probe: health.check, token: config.metricsToken })
  // One budget of failed authentications per replica: the API's keys and the console's sign-in.
  const failures = authFailureLimiterFor(config, app.redis, app.log)
  await app.register(callerAuth, { keys: app.apiKeys, failures })
  await app.register(healthRoutes, { health })
  await app.register(sessionRoutes, {
    sessions: app.sessions,
    logIntrospection: config.logIntrospection,
    clock,
  })
  await app.register(adminRoutes, { sessions: app.sessions })
  await app.register(forwardAuthRoutes, { sessions: app.sessions, config, lanes, metrics })
  await app.register(selfServiceRoutes, { sessions: app.sessions, tenants: app.tenants, config })
  await app.register(oauth2Routes, { sessions: app.sessions, issuer: config.jwtIssuer })
  await app.register(webhookRoutes, { store: app.webhooks, sessions: app.sessions, clock, config })
  await app.register(userRoutes, { sessions: app.sessions })
  await app.register(apiKeyRoutes, { keys: app.apiKeys })
  await app.register(tenantRoutes, { tenants: app.tenants })
  await app.register(signingKeyRoutes, { keys: app.signingKeys, maxAgeSeconds: config.jwksMaxAgeSeconds })
  await app.register(widgetRoutes, { widget })
  if (config.consoleEnabled) {
    await app.register(adminConsole, {
      sessions: app.sessions,
      apiKeys: app.apiKeys,
      webhooks: app.webhooks,
      signingKeys: app.signingKeys,
      tenants: app.tenants,
      metrics,
      health,
      failures,
      config,
      clock,
      kek,
    })
  }

  app.get(
    '/openapi.json',
    {
      schema: {
        operationId: 'getOpenApiDocument',
        tags: ['operations'],
        summary: 'This document, as JSON (the YAML of /openapi.yaml is the same document)',
        response: {
          200: { description: 'The OpenAPI document', type: 'object', additionalProperties: true },
        },
      },
    },
    async () => app.swagger(),
  )
  app.get('/openapi.yaml', { schema: { hide: true } }, async (_request, reply) =>
    reply.type('application/yaml').send(openapiYaml(app)),
  )
  return app
}
