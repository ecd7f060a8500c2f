import formbody from '@fastify/formbody'
import Fastify, { type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { clientInfo, createClient, type Session } from '../../packages/client/src/index.ts'
import { devicesPage, loginPage, refusedPage } from './pages.ts'

export interface ExampleOptions {
  /** Where session-authority answers, e.g. http://127.0.0.1:8080. */
  sessionAuthorityUrl: string
  /** An API key of the service with the `sessions:read`, `sessions:write` and `introspect` scopes. */
  apiKey: string
  /**
   * Whose X-Forwarded-For / -Proto / -Host to believe: a hop count (1 = one load balancer) or its
   * addresses and CIDRs. Default nobody's: browsers talk to this backend directly.
   */
  trustProxy?: number | string | string[]
  logger?: FastifyServerOptions['logger']
}

interface SignedIn {
  user_id: string
  session_id: string
  expires_at: string
}

type Form = Record<string, string | string[] | undefined> | undefined
type Query = Record<string, string | undefined>

const HTML = 'text/html; charset=utf-8'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
// What the service takes as a user id: 1 to 256 characters, none of them a control character.
const validUserId = (text: string) =>
  text.length > 0 && text.length <= 256 && Array.from(text).every((c) => c >= ' ' && c !== '\x7f')
const isLoopback = (hostname: string) =>
  hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname)

/**
 * The example backend: a login form, a session cookie, /me and a "your devices" page, every
 * session decision taken by session-authority through its client SDK. Not listening yet.
 */
export function buildExample(options: ExampleOptions) {
  const { trustProxy } = options
  const sessions = createClient({ baseUrl: options.sessionAuthorityUrl, apiKey: options.apiKey })
  const app = Fastify({
    logger: options.logger ?? false,
    // Fastify takes a hop count too, but its types do not: the same rule as a function.
    trustProxy: typeof trustProxy === 'number' ? (_address, hop) => hop < trustProxy : (trustProxy ?? false),
  })
  app.register(formbody)

  // The end user's browser and address, read the same way at login and on every request: the session
  // is bound to them, and a token presented with another browser or network is suspended as stolen.
  const endUser = (request: FastifyRequest) => clientInfo(request, { trustProxy })

  // Plain http is for your own machine only; anywhere else the cookie is Secure, and then also
  // __Host- (the browser insists on Secure, Path=/ and no Domain for that name).
  const cookieFor = (request: FastifyRequest) =>
    request.protocol === 'http' && isLoopback(request.hostname)
      ? { name: 'session', attributes: 'Path=/; HttpOnly; SameSite=Lax' }
      : { name: '__Host-session', attributes: 'Path=/; HttpOnly; SameSite=Lax; Secure' }

  function setCookie(request: FastifyRequest, reply: FastifyReply, token: string, expires: string) {
    const { name, attributes } = cookieFor(request)
    reply.header('set-cookie', `${name}=${token}; ${attributes}; Expires=${new Date(expires).toUTCString()}`)
  }

  function clearCookie(request: FastifyRequest, reply: FastifyReply) {
    const { name, attributes } = cookieFor(request)
    reply.header('set-cookie', `${name}=; ${attributes}; Max-Age=0`)
  }

  function readToken(request: FastifyRequest): string | undefined {
    const { name } = cookieFor(request)
    for (const pair of (request.headers.cookie ?? '').split(';')) {
      const [key, value] = pair.trim().split('=', 2)
      if (key === name && value) return value
    }
    return undefined
  }

  /**
   * Who is signed in, as session-authority says on this request; or null once the request is answered:
   * 401 for JSON, back to the login page for HTML, with the service's reason when it gives one.
   */
  async function signedIn(
    request: FastifyRequest,
    reply: FastifyReply,
    as: 'html' | 'json',
  ): Promise<SignedIn | null> {
    const token = readToken(request)
    const answer = token ? await sessions.introspect(token, endUser(request)) : undefined
    if (answer?.active) {
      return { user_id: answer.user_id, session_id: answer.session_id, expires_at: answer.expires_at }
    }
    const reason = answer?.reason
    if (token) clearCookie(request, reply)
    if (as === 'json') reply.code(401).send({ signed_in: false, reason })
    else reply.redirect(reason ? `/?reason=${encodeURIComponent(reason)}` : '/', 303)
    return null
  }

  app.addHook('onRequest', async (request, reply) => {
    reply.header(
      'content-security-policy',
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    reply.header('cache-control', 'no-store')
    // CSRF: browsers send Origin with every form post and a page cannot forge it, so a post from
    // another site (or with no Origin) is refused. The SameSite cookie is the second line.
    if (request.method === 'POST' && request.headers.origin !== `${request.protocol}://${request.host}`) {
      return reply.code(403).type(HTML).send(refusedPage('Form posts are taken from this site only.'))
    }
  })

  app.get<{ Querystring: Query }>('/', async (request, reply) =>
    reply.type(HTML).send(loginPage({ reason: request.query.reason })),
  )

  app.post<{ Body: Form }>('/login', async (request, reply) => {
    const userId = request.body?.user_id
    if (typeof userId !== 'string' || !validUserId(userId.trim())) {
      const error = 'A user name is 1 to 256 characters, none of them a control character.'
      return reply.code(400).type(HTML).send(loginPage({ error }))
    }
    // A new login in this browser ends the session it replaces (else it would linger as another "device").
    const previous = readToken(request)
    const answer = previous ? await sessions.introspect(previous, endUser(request)) : undefined
    if (answer?.active) await sessions.revoke(answer.session_id, { reason: 'replaced_by_login' })

    const { token, session } = await sessions.openSession({ user_id: userId.trim(), ...endUser(request) })
    setCookie(request, reply, token, session.absolute_expires_at)
    return reply.redirect('/devices', 303)
  })

  app.get('/me', async (request, reply) => {
    const me = await signedIn(request, reply, 'json')
    return me ?? reply
  })

  app.get<{ Querystring: Query }>('/devices', async (request, reply) => {
    const me = await signedIn(request, reply, 'html')
    if (!me) return reply
    const list: Session[] = []
    for await (const session of sessions.listSessions(me.user_id, { currentSessionId: me.session_id })) {
      list.push(session)
    }
    return reply.type(HTML).send(devicesPage(me.user_id, list, request.query.notice))
  })

  app.post<{ Body: Form }>('/devices/revoke', async (request, reply) => {
    const me = await signedIn(request, reply, 'html')
    if (!me) return reply
    const id = request.body?.session_id
    if (typeof id !== 'string' || !UUID.test(id)) return reply.redirect('/devices?notice=not-yours', 303)
    // The per-user route answers 404 for a session that is not this user's: editing the form's
    // session id cannot end anyone else's session.
    const { response } = await sessions.raw.POST('/v1/users/{user_id}/sessions/{id}/revoke', {
      params: { path: { user_id: me.user_id, id } },
      body: { reason: 'user_signed_out_device' },
    })
    if (response.status === 404) return reply.redirect('/devices?notice=not-yours', 303)
    if (!response.ok) throw new Error(`session-authority answered ${response.status} to a revocation`)
    return reply.redirect('/devices?notice=signed-out', 303)
  })

  app.post('/devices/revoke-others', async (request, reply) => {
    const me = await signedIn(request, reply, 'html')
    if (!me) return reply
    await sessions.logoutOthers(me.user_id, me.session_id, { reason: 'user_signed_out_others' })
    return reply.redirect('/devices?notice=others-signed-out', 303)
  })

  app.post('/logout', async (request, reply) => {
    const me = await signedIn(request, reply, 'html')
    if (!me) return reply
    await sessions.revoke(me.session_id, { reason: 'logout' })
    clearCookie(request, reply)
    return reply.redirect('/?reason=logged_out', 303)
  })

  return app
}
