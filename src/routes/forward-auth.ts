import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { LRUCache } from 'lru-cache'
import { addressMatcher, normalizeAddress } from '../addresses.ts'
import { type Config, ConfigError } from '../config.ts'
import { Errors } from '../errors.ts'
import { EVERY_ANSWER, EVERY_ANSWER_LIST, requestId } from '../every-answer.ts'
import type { Lanes } from '../fast-lane.ts'
import type { Metrics } from '../metrics.ts'
import { nextTurn, onNextTurn } from '../next-turn.ts'
import { ErrorReply } from '../schemas.ts'
import type { ClientInfo, SessionRow } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { DEFAULT_TENANT, type Tenancy } from '../tenants/tenancy.ts'
import { endUserAgent, presentedToken } from './end-user.ts'

type Settings = Pick<
  Config,
  | 'trustProxy'
  | 'forwardAuthSecret'
  | 'forwardAuthSecretHeader'
  | 'forwardAuthAllowedIps'
  | 'forwardAuthCookie'
  | 'forwardAuthUserHeader'
  | 'forwardAuthSessionHeader'
  | 'forwardAuthTenantHeader'
  | 'forwardAuthMetadata'
  | 'forwardAuthTenants'
  | 'logIntrospection'
>

const PATH = '/v1/forward-auth'
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const LANE_METHODS = new Set(METHODS)
/** Envoy's ext_authz appends the client's path to path_prefix: any path below answers the same. */
const ANY_BELOW = `${PATH}/*`
/** Longer URLs, and paths that need decoding, are the router's to judge. */
const LANE_MAX_URL = 2048

type LaneRoute = typeof PATH | typeof ANY_BELOW

/** The route a URL reaches, when the fast lane may answer it (a query is ignored, as the route ignores it). */
function laneRoute(url: string): LaneRoute | null {
  const query = url.indexOf('?')
  const path = query === -1 ? url : url.slice(0, query)
  if (path === PATH) return PATH
  if (url.length > LANE_MAX_URL || !path.startsWith(`${PATH}/`) || path.includes('%')) return null
  return ANY_BELOW
}

/** What a gateway's sub-request is read from: the raw request (the fast lane) or Fastify's. */
type Incoming = Pick<IncomingMessage, 'headers' | 'socket'>

// Printable ASCII but `%` and `+`, with no space at either end (a header parser trims it).
const PLAIN =
  /^(?:[\x21-\x24\x26-\x2a\x2c-\x7e](?:[\x20-\x24\x26-\x2a\x2c-\x7e]*[\x21-\x24\x26-\x2a\x2c-\x7e])?)?$/

/**
 * A header value any gateway passes on, and that names one value only: plain
 * text passes as it is (alice stays alice); anything else is percent-encoded
 * whole, `%` included, so an encoded value always holds a `%` and a plain one
 * never does. Two different values never give the same header, and an
 * upstream that percent-decodes (or form-decodes) gets the original back.
 */
function headerValue(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return PLAIN.test(text) ? text : encodeURIComponent(text.toWellFormed())
}

/** The metadata keys to pass upstream and the header each goes in. */
function metadataHeaders(setting: string | undefined): Array<[key: string, header: string]> {
  if (!setting) return []
  return setting.split(',').map((entry) => {
    const [key, header] = entry.split('=') as [string, string | undefined]
    return [key, (header ?? `x-auth-meta-${key}`).toLowerCase()]
  })
}

/** Headers an answer carries or that frame it: no identity header may take one of these names. */
const RESERVED_HEADERS = [
  'x-request-id',
  ...Object.keys(EVERY_ANSWER),
  'www-authenticate',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'date',
]

/**
 * The identity headers' names, checked at start: each names one value, so
 * no metadata key can stand in for the user id, and none frames the answer.
 */
export function checkIdentityHeaders(
  config: Pick<
    Config,
    'forwardAuthUserHeader' | 'forwardAuthSessionHeader' | 'forwardAuthTenantHeader' | 'forwardAuthMetadata'
  >,
) {
  const metadata = metadataHeaders(config.forwardAuthMetadata)
  const names = [
    ['FORWARD_AUTH_USER_HEADER', config.forwardAuthUserHeader],
    ['FORWARD_AUTH_SESSION_HEADER', config.forwardAuthSessionHeader],
    ['FORWARD_AUTH_TENANT_HEADER', config.forwardAuthTenantHeader],
    ...metadata.map(([key, header]) => [`FORWARD_AUTH_METADATA (${key})`, header]),
  ] as Array<[setting: string, header: string]>
  const taken = new Set(RESERVED_HEADERS)
  for (const [setting, header] of names) {
    const name = header.toLowerCase()
    if (taken.has(name)) {
      throw new ConfigError(`invalid configuration: ${setting}: the header ${name} is already in the answer`)
    }
    taken.add(name)
  }
}

/**
 * `/v1/forward-auth`: the authentication sub-request of nginx `auth_request`,
 * Traefik ForwardAuth, Caddy `forward_auth` and Envoy `ext_authz`. The
 * Authorization header is the end user's, so the gateway proves itself with a
 * shared secret and/or its address. 200 with identity headers lets the
 * request through; 401 turns it away.
 */
const forwardAuthRoutes: FastifyPluginAsync<{
  sessions: SessionService
  config: Settings
  lanes: Lanes
  metrics: Metrics
}> = async (app, { sessions, config, lanes, metrics }) => {
  const secret = config.forwardAuthSecret ? Buffer.from(config.forwardAuthSecret) : null
  // The gateway's credential is the service's, so the tenants it serves are the service's setting.
  const served = config.forwardAuthTenants.split(',').map((t) => t.trim())
  const tenancy: Tenancy = served.includes('*')
    ? { tenant: DEFAULT_TENANT, sees: '*' }
    : { tenant: served[0] ?? DEFAULT_TENANT, sees: served }
  const allowed = config.forwardAuthAllowedIps ? addressMatcher(config.forwardAuthAllowedIps) : null
  const trusted = config.trustProxy ? addressMatcher(config.trustProxy) : () => false
  const metadata = metadataHeaders(config.forwardAuthMetadata)
  const cookie = config.forwardAuthCookie

  // Whatever body the gateway forwards (nginx keeps the client's method) is ignored, unread.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, payload, done) => {
    payload.on('end', () => done(null, undefined))
    payload.resume()
  })

  /** A connection's peer, judged once per connection (its address never changes). */
  interface Peer {
    /** An allowed gateway, by address. */
    allowed: boolean
    /** A trusted proxy, whose forwarded addresses are believed. */
    trusted: boolean
  }
  const peers = new WeakMap<Socket, Peer>()

  function peer(socket: Socket): Peer {
    let found = peers.get(socket)
    if (found === undefined) {
      const address = socket.remoteAddress
      found = { allowed: !allowed || allowed(address), trusted: trusted(address) }
      peers.set(socket, found)
    }
    return found
  }

  // The presented secret is written here, not into a new buffer per request. Four bytes past the
  // secret's length (the longest UTF-8 character) make a longer value write more than that length.
  const presented = secret ? Buffer.alloc(secret.length + 4) : null
  const presentedPrefix = presented && secret ? presented.subarray(0, secret.length) : null

  /** Whether `given` is the gateway secret, compared in constant time (a wrong length answers at once). */
  function rightSecret(given: string | string[] | undefined): boolean {
    if (typeof given !== 'string' || !secret || !presented || !presentedPrefix) return false
    if (presented.write(given) !== secret.length) return false
    return timingSafeEqual(presentedPrefix, secret)
  }

  /** Why a caller is not an allowed gateway (for the log only: the caller is told nothing of what is expected), or null. */
  function gatewayProblem(request: Incoming): string | null {
    if (!secret && !allowed)
      return 'forward-auth is off: set FORWARD_AUTH_SECRET and/or FORWARD_AUTH_ALLOWED_IPS'
    if (!peer(request.socket).allowed) return 'this address is not in FORWARD_AUTH_ALLOWED_IPS'
    if (secret && !rightSecret(request.headers[config.forwardAuthSecretHeader])) {
      return `missing or wrong ${config.forwardAuthSecretHeader} header`
    }
    return null
  }

  // The same few forwarded values come again and again (one per user behind the gateway).
  const forwardedAddresses = new LRUCache<string, { ip: string | null | undefined }>({ max: 10_000 })

  /**
   * A forwarded value as the end user's address (a `:port` some proxies add is
   * dropped): the address; null when it is none (`unknown`, `127.1`,
   * `fe80::1%eth0`…); undefined when it is a trusted proxy's own.
   */
  function forwarded(text: string): string | null | undefined {
    let found = forwardedAddresses.get(text)
    if (found === undefined) {
      const bare = text
        .trim()
        .replace(/^\[(.+)\](:\d+)?$/, '$1')
        .replace(/^(\d+\.\d+\.\d+\.\d+):\d+$/, '$1')
      const ip = normalizeAddress(bare)
      found = { ip: ip !== null && trusted(ip) ? undefined : ip }
      forwardedAddresses.set(text, found)
    }
    return found.ip
  }

  /**
   * The end user's address, believed only from a trusted proxy: the address;
   * null when a trusted proxy forwarded none that is one (judged as a missing
   * address); undefined when it is not checked (no trusted proxy in front, or
   * every forwarded hop is a trusted proxy's own address).
   */
  function endUserIp(request: Incoming): string | null | undefined {
    if (!peer(request.socket).trusted) return undefined
    // The nearest hop that is not a trusted proxy (as Fastify's request.ip, without parsing the list anew).
    const chain = request.headers['x-forwarded-for']
    if (chain) {
      // One hop (the common case): forwarded() alone says whether it is a trusted proxy's own.
      if (typeof chain === 'string' && !chain.includes(',')) return forwarded(chain)
      const hops = (Array.isArray(chain) ? chain.join(',') : chain).split(',')
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = (hops[i] as string).trim()
        if (!trusted(hop)) return forwarded(hop)
      }
      return undefined
    }
    const real = request.headers['x-real-ip']
    return typeof real === 'string' ? forwarded(real) : null
  }

  function deny(reply: FastifyReply, presented: boolean) {
    reply.header('www-authenticate', presented ? 'Bearer error="invalid_token"' : 'Bearer')
    return reply.code(401).send()
  }

  // Before any body is read: a caller that is not a gateway gets nothing, not even a read.
  app.addHook('onRequest', (request, _reply, done) => {
    const problem = gatewayProblem(request)
    if (!problem) return done()
    // The operator needs the reason; the caller is not told which credential is missing.
    request.log.warn({ reason: problem }, 'forward-auth call refused: not an allowed gateway')
    done(new Errors.GATEWAY_NOT_ALLOWED('see the service log'))
  })

  /** The end user's client as the gateway passed it on. */
  function endUserClient(request: Incoming): ClientInfo {
    const ip = endUserIp(request)
    // A gateway always passes the User-Agent on, and a trusted proxy the address: a missing one is judged as drift.
    return {
      ip: ip ?? undefined,
      user_agent: endUserAgent(request),
      required: { user_agent: true, ip: ip !== undefined },
    }
  }

  /** The identity headers of a 200, added to `headers` (names and values in turn, as writeHead takes them). */
  function identity(session: SessionRow, headers: string[]): string[] {
    headers.push(
      config.forwardAuthUserHeader,
      headerValue(session.user_id),
      config.forwardAuthSessionHeader,
      session.id,
      config.forwardAuthTenantHeader,
      session.tenant_id,
    )
    for (const [key, header] of metadata) {
      if (session.metadata[key] !== undefined) headers.push(header, headerValue(session.metadata[key]))
    }
    return headers
  }

  async function check(request: FastifyRequest, reply: FastifyReply) {
    const token = presentedToken(request, cookie)
    if (!token) return deny(reply, false)
    const result = await sessions.introspect(tenancy, token, endUserClient(request))
    await nextTurn()
    if (!result.active) return deny(reply, true)
    const headers = identity(result.session, [])
    for (let i = 0; i < headers.length; i += 2) reply.header(headers[i] as string, headers[i + 1])
    return reply.code(200).send()
  }

  // The lane's answers are timed in the route's series, each found once.
  const timers: Record<LaneRoute, Record<string, { observe(value: number): void }>> = {
    [PATH]: {},
    [ANY_BELOW]: {},
  }
  const timer = (route: LaneRoute, method: string) =>
    (timers[route][method] ??= metrics.httpDuration.series(method, route, '200'))

  /**
   * The fast lane: the common case, a gateway's body-less sub-request for a
   * token whose session is live in this replica's memory, answered before the
   * router with exactly the route's 200 (its headers, its metric). Everything
   * else (any doubt, any read or write, any refusal) is the route's. One
   * gateway sub-request per request a deployment serves: the router's share
   * of the cost is worth skipping.
   *
   * This is its answer: its 200 (its headers, names and values in turn), or
   * null to leave the request to the route.
   */
  function laneAnswer(request: IncomingMessage, method: string): string[] | null {
    const { headers } = request
    // Whatever body there is, the route reads and drops.
    if (headers['transfer-encoding'] !== undefined || (headers['content-length'] ?? '0') !== '0') return null
    if (gatewayProblem(request) !== null) return null
    const token = presentedToken(request, cookie)
    if (!token) return null
    const result = sessions.introspectFromMemory(tenancy, token, endUserClient(request))
    if (!result?.active) return null
    const answer = identity(result.session, ['x-request-id', requestId(request), ...EVERY_ANSWER_LIST])
    // As the route: an empty body is said to be one, but a HEAD answer has no length to tell.
    if (method !== 'HEAD') answer.push('content-length', '0')
    return answer
  }

  lanes.add((request, response) => {
    const route = laneRoute(request.url as string)
    const method = request.method as string
    if (route === null || !LANE_METHODS.has(method) || config.logIntrospection) return false
    const startedAt = performance.now()
    let answer: string[] | null
    try {
      answer = laneAnswer(request, method)
    } catch {
      // Whatever went wrong, the route meets it again and answers it (and logs it) as it does every error.
      return false
    }
    if (answer === null) return false
    onNextTurn(() => {
      try {
        response.writeHead(200, answer).end()
        timer(route, method).observe((performance.now() - startedAt) / 1000)
      } catch (err) {
        app.log.error({ err }, 'forward-auth lane: could not write an answer')
        response.destroy()
      }
    })
    return true
  })

  app.route({
    method: METHODS,
    url: PATH,
    // One call per request a gateway serves: no access log lines unless asked.
    ...(config.logIntrospection ? {} : { logLevel: 'warn' }),
    schema: {
      // Listed once per method in the document, as forwardAuthGet, forwardAuthPost, …
      operationId: 'forwardAuth',
      tags: ['gateways'],
      security: [{ gatewaySecret: [] }],
      summary: 'Gateway sub-request: 200 with identity headers, or 401 (any method; any body is ignored)',
      description:
        "Token from `Authorization: Bearer` or the FORWARD_AUTH_COOKIE cookie. The gateway authenticates with FORWARD_AUTH_SECRET (header FORWARD_AUTH_SECRET_HEADER) and/or its address (FORWARD_AUTH_ALLOWED_IPS). The end user's IP comes from X-Forwarded-For / X-Real-IP of a TRUST_PROXY peer.",
      response: {
        200: {
          description:
            'Allowed; identity in headers (FORWARD_AUTH_USER_HEADER, FORWARD_AUTH_SESSION_HEADER, FORWARD_AUTH_METADATA)',
          type: 'null',
        },
        401: { description: 'Denied (WWW-Authenticate: Bearer)', type: 'null' },
        403: ErrorReply,
        503: ErrorReply,
      },
    },
    handler: check,
  })

  app.route({
    method: METHODS,
    url: ANY_BELOW,
    ...(config.logIntrospection ? {} : { logLevel: 'warn' }),
    schema: { hide: true },
    handler: check,
  })
}

export default forwardAuthRoutes
