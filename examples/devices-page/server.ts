import formbody from '@fastify/formbody'
import Fastify, { type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { clientInfo, createClient } from '../../packages/client/src/index.ts'
import { DEVICES_PAGE, LOGIN_PAGE, PAGE_CSS, PAGE_JS } from './pages.ts'

export interface DevicesPageOptions {
  /** Where session-authority answers, e.g. http://127.0.0.1:8080. */
  sessionAuthorityUrl: string
  /** An API key of the service with the `sessions:write` and `introspect` scopes (login, and a new login's cleanup). */
  apiKey: string
  /**
   * The session cookie's name: the service's FORWARD_AUTH_COOKIE, since the service reads the token from
   * this cookie on the proxied /v1/me calls. Off loopback, use a `__Host-` name.
   */
  cookieName: string
  /** Whose X-Forwarded-For to believe (as examples/devices-backend): a hop count, or addresses and CIDRs. */
  trustProxy?: number | string | string[]
  logger?: FastifyServerOptions['logger']
}

const HTML = 'text/html; charset=utf-8'
// A strict policy: nothing inline, nothing from elsewhere. The widget runs under it as it is.
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

const validUserId = (text: string) =>
  text.length > 0 && text.length <= 256 && Array.from(text).every((c) => c >= ' ' && c !== '\x7f')
const isLoopback = (hostname: string) =>
  hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname)

const SELF_SERVICE_PATH = /^\/v1\/me(\/[A-Za-z0-9_-]+)+$/

/** What the proxy passes on of the browser's request, and of the service's answer. */
const REQUEST_HEADERS = ['accept', 'content-type', 'origin', 'if-none-match']
const RESPONSE_HEADERS = [
  'content-type',
  'cache-control',
  'etag',
  'retry-after',
  'www-authenticate',
  'vary',
  'x-request-id',
]

/**
 * A page that embeds <session-devices>, and the one gateway route it needs: /auth/v1/me/* proxied to the
 * service's self-service API with the session cookie. The backend only logs users in; listing and ending
 * sessions is between the browser and the service. Not listening yet.
 */
export function buildDevicesPage(options: DevicesPageOptions) {
  const { trustProxy, cookieName } = options
  const service = options.sessionAuthorityUrl.replace(/\/+$/, '')
  const sessions = createClient({ baseUrl: service, apiKey: options.apiKey })
  const app = Fastify({
    logger: options.logger ?? false,
    trustProxy: typeof trustProxy === 'number' ? (_address, hop) => hop < trustProxy : (trustProxy ?? false),
  })
  const endUser = (request: FastifyRequest) => clientInfo(request, { trustProxy })

  // Plain http is for your own machine only; anywhere else the cookie is Secure.
  const cookieAttributes = (request: FastifyRequest) =>
    request.protocol === 'http' && isLoopback(request.hostname)
      ? 'Path=/; HttpOnly; SameSite=Lax'
      : 'Path=/; HttpOnly; SameSite=Lax; Secure'

  function readToken(request: FastifyRequest): string | undefined {
    for (const pair of (request.headers.cookie ?? '').split(';')) {
      const eq = pair.indexOf('=')
      if (eq > 0 && pair.slice(0, eq).trim() === cookieName) return pair.slice(eq + 1).trim() || undefined
    }
    return undefined
  }

  /**
   * Passes one request on to the service and its answer back. Only the session cookie goes along (not
   * the site's other cookies), and the browser's address and User-Agent, so the service checks the
   * session against the client it is bound to (the service trusts this proxy's X-Forwarded-For).
   */
  async function forward(request: FastifyRequest, reply: FastifyReply, path: string, withCookie: boolean) {
    const headers: Record<string, string> = {}
    for (const name of REQUEST_HEADERS) {
      const value = request.headers[name]
      if (typeof value === 'string') headers[name] = value
    }
    const { ip, user_agent } = endUser(request)
    headers['user-agent'] = user_agent ?? ''
    if (ip) headers['x-forwarded-for'] = ip
    headers['x-forwarded-proto'] = request.protocol
    headers['x-forwarded-host'] = request.host
    const token = withCookie ? readToken(request) : undefined
    if (token) headers.cookie = `${cookieName}=${token}`
    const query = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : ''
    const body = request.method === 'GET' || request.method === 'HEAD' ? undefined : (request.body as Buffer)
    const answer = await fetch(`${service}${path}${query}`, {
      method: request.method,
      headers,
      body: body?.length ? body : request.method === 'POST' ? '' : undefined,
      redirect: 'manual',
    })
    reply.code(answer.status)
    for (const name of RESPONSE_HEADERS) {
      const value = answer.headers.get(name)
      if (value !== null) reply.header(name, value)
    }
    return reply.send(Buffer.from(await answer.arrayBuffer()))
  }

  app.register(formbody)
  app.addHook('onRequest', async (request, reply) => {
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'same-origin')
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
    // CSRF: a form post must come from this site (browsers send Origin with every one). The proxied
    // API checks Origin itself.
    const own = `${request.protocol}://${request.host}`
    if (request.method === 'POST' && request.url === '/login' && request.headers.origin !== own) {
      return reply
        .code(403)
        .type('text/plain; charset=utf-8')
        .send('Form posts are taken from this site only.')
    }
  })

  app.get('/', async (_request, reply) => reply.type(HTML).send(LOGIN_PAGE))
  app.get('/devices', async (_request, reply) => reply.type(HTML).send(DEVICES_PAGE))
  app.get('/page.css', async (_request, reply) => reply.type('text/css; charset=utf-8').send(PAGE_CSS))
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
  app.get('/page.js', async (_request, reply) => reply.type('text/javascript; charset=utf-8').send(PAGE_JS))

  app.post<{ Body: Record<string, string | string[] | undefined> | undefined }>(
    '/login',
    async (request, reply) => {
      const userId = request.body?.user_id
      if (typeof userId !== 'string' || !validUserId(userId.trim())) {
        return reply.code(400).type('text/plain; charset=utf-8').send('A user name is 1 to 256 characters.')
      }
      // A new login in this browser ends the session it replaces (else it would linger as another "device").
      const previous = readToken(request)
      const answer = previous ? await sessions.introspect(previous, endUser(request)) : undefined
      if (answer?.active) await sessions.revoke(answer.session_id, { reason: 'replaced_by_login' })

      const { token, session } = await sessions.openSession({ user_id: userId.trim(), ...endUser(request) })
      const expires = new Date(session.absolute_expires_at).toUTCString()
      reply.header('set-cookie', `${cookieName}=${token}; ${cookieAttributes(request)}; Expires=${expires}`)
      return reply.redirect('/devices', 303)
    },
  )

  // The element's file, from this origin, so that `script-src 'self'` allows it (the service's own URL
  // works too, with its origin in script-src and connect-src).
  app.get('/widget/session-devices.js', (request, reply) =>
    forward(request, reply, '/widget/session-devices.js', false),
  )

  // The one gateway route: the self-service API under this site's origin, authorised by the cookie.
  app.register(async (proxy) => {
    // The body goes on as the browser sent it; the service checks its type and size.
    proxy.removeAllContentTypeParsers()
    proxy.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 16_384 }, (_request, body, done) =>
      done(null, body),
    )
    proxy.route({
      method: ['GET', 'POST'],
      url: '/auth/v1/me/*',
      handler: (request, reply) => {
        // Exactly /v1/me/… on the service: no dot segment or encoded slash can climb to another route.
        const path = request.url.slice('/auth'.length).split('?')[0] ?? ''
        if (!SELF_SERVICE_PATH.test(path))
          return reply.code(404).send({ error: { code: 'NOT_FOUND', message: 'no such route' } })
        return forward(request, reply, path, true)
      },
    })
  })

  return app
}
