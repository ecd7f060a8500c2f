import type {
  FastifyContextConfig,
  FastifyReply,
  FastifyRequest,
  onRequestHookHandler,
  preHandlerHookHandler,
} from 'fastify'
import fp from 'fastify-plugin'
import { type ApiKeyStore, allows, type Caller, type Scope } from '../api-keys/api-keys.ts'
import type { AuthFailureLimiter } from '../api-keys/auth-failures.ts'
import { Errors } from '../errors.ts'
import { ErrorReply } from '../schemas.ts'
import { onlyTenant, type Tenancy } from '../tenants/tenancy.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope an API key needs to call the route; routes without one are public. */
    scope?: Scope
    /** The API key may also come as client_id and client_secret in the (form) body. */
    formCredentials?: boolean
  }
  interface FastifyRequest {
    caller: Caller | null
    /** Whose data the request may see and change (set with the caller; routes without a scope have none). */
    tenancy: Tenancy
  }
}

/**
 * The API key of a request: `Authorization: Bearer <key>`, or HTTP Basic with
 * the key's id as user and the key as password (how OAuth clients send a
 * client id and secret, RFC 6749 §2.3.1: each form-urlencoded).
 */
function presentedKey(request: FastifyRequest): { key: string; id: string | null } | null {
  const header = request.headers.authorization
  if (!header) return null
  const space = header.indexOf(' ')
  const kind = header.slice(0, space).toLowerCase()
  const value = header.slice(space + 1).trim()
  if (space < 0 || !value) return null
  if (kind === 'bearer') return { key: value, id: null }
  if (kind !== 'basic') return null
  const pair = Buffer.from(value, 'base64').toString('utf8')
  const colon = pair.indexOf(':')
  if (colon < 0) return null
  try {
    const decode = (part: string) => decodeURIComponent(part.replaceAll('+', ' '))
    return { id: decode(pair.slice(0, colon)), key: decode(pair.slice(colon + 1)) }
  } catch {
    return null
  }
}

/** How the 429 of too many failed authentications looks in the OpenAPI document. */
export const rateLimitedResponse = {
  ...ErrorReply,
  'x-response-description':
    'RATE_LIMITED: too many failed authentications from this address or for this key id (a key this service has seen valid still passes)',
  headers: { 'retry-after': { type: 'integer', description: 'Seconds until the block ends' } },
}

const unknownKey = () => new Errors.UNAUTHORIZED('unknown or revoked API key')

/** A route's own hooks of one kind, as a list (a route may give none, one, or several). */
const hooksOf = <T>(hooks: T | T[] | undefined): T[] =>
  hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]

/**
 * Checks the caller's API key and scope on every route that declares a scope,
 * and refuses clients that keep failing (see createAuthFailureLimiter): a
 * client address or claimed key id over its budget gets 429 before its key is
 * looked up. A key this replica has seen valid is always looked up, so
 * blocking stops guessing without locking out a good caller that shares an
 * address (a NAT, a proxy) or a key id with a guesser.
 */
export default fp(
  async (app, { keys, failures }: { keys: ApiKeyStore; failures: AuthFailureLimiter | null }) => {
    app.decorateRequest('caller', null)
    app.decorateRequest('tenancy', null as unknown as Tenancy)
    // One Tenancy per key and per tenant a platform key names, not one per request.
    const ownTenancy = new WeakMap<Caller, Tenancy>()
    const named = new Map<string, Tenancy>()

    /**
     * A key acts for its own tenant. A platform key sees every tenant, and acts
     * for the one it names in x-tenant-id; any other key naming another tenant
     * is told that tenant does not exist (whether it does or not).
     */
    function tenancyOf(request: FastifyRequest, caller: Caller): Tenancy {
      const header = request.headers['x-tenant-id']
      const platform = caller.scopes.includes('platform')
      if (typeof header === 'string' && header !== '' && (platform || header !== caller.tenantId)) {
        if (!platform) throw new Errors.TENANT_NOT_FOUND(header)
        let tenancy = named.get(header)
        if (!tenancy) {
          tenancy = onlyTenant(header)
          if (named.size < 10_000) named.set(header, tenancy)
        }
        return tenancy
      }
      let tenancy = ownTenancy.get(caller)
      if (!tenancy) {
        tenancy = platform ? { tenant: caller.tenantId, sees: '*' } : onlyTenant(caller.tenantId)
        ownTenancy.set(caller, tenancy)
      }
      return tenancy
    }
    if (failures) await keys.loadValid()

    /** Refuses a key that is unknown (0 s) or, once the client is over its budget, for `seconds`. */
    function refuse(reply: FastifyReply, seconds: number, done: (err?: Error) => void) {
      if (!seconds) return done(unknownKey())
      reply.header('retry-after', String(seconds))
      done(new Errors.RATE_LIMITED(seconds))
    }

    /** Lets the caller in (or counts a failure): the key's scopes, then the tenant it acts for. */
    function admit(
      request: FastifyRequest,
      reply: FastifyReply,
      id: string | null,
      caller: Caller | null,
      scope: Scope,
      done: (err?: Error) => void,
    ) {
      // With Basic or form credentials, the id must be the key's own.
      if (!caller || (id !== null && id !== caller.keyId)) {
        if (!failures) return done(unknownKey())
        failures.fail({ ip: request.ip, keyId: id }).then((seconds) => refuse(reply, seconds, done), done)
        return
      }
      if (!allows(caller.scopes, scope)) return done(new Errors.FORBIDDEN(scope))
      request.caller = caller
      try {
        request.tenancy = tenancyOf(request, caller)
      } catch (err) {
        return done(err as Error)
      }
      done()
    }

    function authenticate(
      request: FastifyRequest,
      reply: FastifyReply,
      { key, id }: { key: string; id: string | null },
      scope: Scope,
      done: (err?: Error) => void,
    ) {
      // Too long to be a key: not worth a lookup, but still a failure.
      const known = key.length > 512 ? null : keys.recall(key)
      // A good key verified recently: the synchronous path, no limiter, nothing counted.
      if (known) return admit(request, reply, id, known, scope, done)
      const verified = (caller: Caller | null) => admit(request, reply, id, caller, scope, done)
      if (!failures || (known === undefined && keys.seenAsValid(key))) {
        if (known === null) return verified(null)
        // Not returned: a callback-style hook that returns a promise is run as an async one too.
        keys.verify(key).then(verified, done)
        return
      }
      // A key never seen valid, or one that just failed: is the client already over its budget?
      failures.retryAfter({ ip: request.ip, keyId: id }).then((wait) => {
        if (wait) return refuse(reply, wait, done)
        if (known === null) return verified(null)
        keys.verify(key).then(verified, done)
      }, done)
    }

    // Callback style with a synchronous path for a key verified recently: this
    // runs on every introspection, where a promise per request shows.
    const onRequest: onRequestHookHandler = (request, reply, done) => {
      const { scope, formCredentials } = request.routeOptions.config as Required<FastifyContextConfig>
      const presented = presentedKey(request)
      if (presented) {
        authenticate(request, reply, presented, scope, done)
        return
      }
      // Checked once the form is read (below).
      if (formCredentials) return done()
      done(new Errors.UNAUTHORIZED('send an API key as Authorization: Bearer <key>'))
    }

    // OAuth's client_secret_post: client_id and client_secret in the form body (RFC 6749 §2.3.1).
    const preHandler: preHandlerHookHandler = (request, reply, done) => {
      if (request.caller) return done()
      const { scope } = request.routeOptions.config as Required<FastifyContextConfig>
      const body = request.body as { client_id?: unknown; client_secret?: unknown } | undefined
      const { client_id: id, client_secret: key } = body ?? {}
      if (typeof id !== 'string' || typeof key !== 'string' || !key) {
        return done(
          new Errors.UNAUTHORIZED('authenticate with HTTP Basic, Bearer, or client_id and client_secret'),
        )
      }
      authenticate(request, reply, { key, id }, scope, done)
    }

    // Only the routes that need a key run these hooks: a public route (forward-auth, health, the
    // widget) pays nothing for them, and a route with a scope pays no test of whether it has one.
    app.addHook('onRoute', (route) => {
      if (!route.config?.scope) return
      // First among the route's own hooks: nothing of the route runs for a caller without a key.
      route.onRequest = [onRequest, ...hooksOf(route.onRequest)]
      if (route.config.formCredentials) route.preHandler = [preHandler, ...hooksOf(route.preHandler)]
    })
  },
  { name: 'caller-auth', dependencies: ['db'] },
)
