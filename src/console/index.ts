import cookie from '@fastify/cookie'
import csrf from '@fastify/csrf-protection'
import formbody from '@fastify/formbody'
import { Type } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify'
import { html } from 'ghtml'
import type { ApiKeyStore } from '../api-keys/api-keys.ts'
import type { AuthFailureLimiter } from '../api-keys/auth-failures.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { Health } from '../health.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import type { SigningKeys } from '../keys/signing-keys.ts'
import type { Metrics } from '../metrics.ts'
import { toReply } from '../plugins/error-handler.ts'
import type { SessionService } from '../sessions/service.ts'
import type { TenantStore } from '../tenants/store.ts'
import type { WebhookStore } from '../webhooks/store.ts'
import { csrfField, notice, page, type View } from './html.ts'
import { operationsRoutes } from './operations.ts'
import { CONSOLE_COOKIE, createOperators, type Operator, SignInRefused } from './operator.ts'
import { createRateSampler, overviewPage } from './overview.ts'
import { peopleRoutes } from './people.ts'
import { CONSOLE_CSS } from './styles.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A console route anyone may reach (sign-in, the stylesheet); every other one needs an operator. */
    signedOut?: boolean
  }
  interface FastifyRequest {
    operator: Operator | null
    consoleView: View | null
  }
}

export interface ConsoleOptions {
  sessions: SessionService
  apiKeys: ApiKeyStore
  webhooks: WebhookStore
  signingKeys: SigningKeys
  tenants: TenantStore
  metrics: Metrics
  health: Health
  /** The replica's limiter of failed authentications, shared with the API (null: no limit). */
  failures: AuthFailureLimiter | null
  config: Config
  clock: Clock
  kek: KeyEncryptionKey
}

// No script may run, no frame may hold the console, forms post only to the console itself.
const CSP =
  "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
const CSRF_COOKIE = 'sa_console_csrf'

/**
 * Is a form post from the console's own pages? A browser says so in Sec-Fetch-Site, which no page can
 * set; one too old to send it says so in Origin (only clients that are no browser send neither).
 */
function sameOrigin(request: FastifyRequest): boolean {
  const site = request.headers['sec-fetch-site']
  // Not Origin as well: a browser may send "null" for a post from the console itself (under
  // Referrer-Policy: no-referrer, Chromium does for every form).
  if (site !== undefined) return site === 'same-origin'
  const origin = request.headers.origin
  if (origin === undefined) return true
  return origin === `${request.protocol}://${request.host}`
}

/** The sign-in form; after a refusal, with the name given back (never the key) and why. */
function signInPage(view: View, message = '', name = ''): string {
  const body = html`!${notice(message, 'alert')}
<form method="post" action="/admin/sign-in" class="stack sign-in">
!${csrfField(view)}
<label for="name">Your name (recorded with everything you do)</label>
<input id="name" name="name" required maxlength="100" autocomplete="name" value="${name}">
<label for="api_key">An admin API key (scope admin or platform)</label>
<input id="api_key" name="api_key" type="password" required maxlength="512" autocomplete="off">
<button type="submit">Sign in</button>
</form>
<p class="hint">The key is checked once: you then hold a console session of this service, ended by signing out, by idling, or by revoking it like any other session.</p>`
  return page(view, 'Sign in to the console', body)
}

/**
 * The admin console at /admin (CONSOLE_ENABLED): server-rendered pages and plain forms, no script.
 * An encapsulated plugin: its cookie, form and CSRF handling apply to /admin only, never to the API.
 */
export default async function adminConsole(app: FastifyInstance, options: ConsoleOptions) {
  const { sessions, config, kek, metrics } = options
  await app.register(cookie)
  await app.register(formbody, { bodyLimit: 200_000 })
  await app.register(csrf, {
    sessionPlugin: '@fastify/cookie',
    cookieKey: CSRF_COOKIE,
    cookieOpts: { path: '/admin', sameSite: 'strict', httpOnly: true, secure: 'auto' },
    // Each token is bound to the operator's console session: one stolen from a sign-in page is worthless.
    getUserInfo: (request: FastifyRequest) => request.operator?.session.id ?? 'signed-out',
    getToken: (request: FastifyRequest) => (request.body as { _csrf?: string } | undefined)?._csrf,
    csrfOpts: { hmacKey: kek.derive('console csrf').toString('base64') },
  })
  const operators = createOperators({ sessions, keys: options.apiKeys, failures: options.failures, config })
  const rate = createRateSampler(metrics)
  app.addHook('onClose', async () => rate.stop())

  app.decorateRequest('operator', null)
  app.decorateRequest('consoleView', null)
  const viewOf = (request: FastifyRequest) => request.consoleView as View

  app.addHook('onRequest', async (_request, reply) => {
    reply.header('content-security-policy', CSP)
    reply.header('x-frame-options', 'DENY')
    // Not no-referrer: under it a browser without Sec-Fetch-Site sends Origin: null on the console's own
    // forms, which sameOrigin() must refuse. same-origin still tells other sites nothing.
    reply.header('referrer-policy', 'same-origin')
    reply.header('cross-origin-opener-policy', 'same-origin')
    reply.header('cross-origin-resource-policy', 'same-origin')
  })

  app.addHook('preHandler', async (request, reply) => {
    if (request.routeOptions.url === '/admin/console.css') return
    request.operator = await operators.current(request)
    // A cookie of a session that ended (or drifted, or whose key went) is dropped from the browser.
    if (!request.operator && request.cookies[CONSOLE_COOKIE] !== undefined) operators.clearCookie(reply)
    const csrfToken = reply.generateCsrf({ userInfo: request.operator?.session.id ?? 'signed-out' })
    request.consoleView = {
      operator: request.operator,
      csrf: csrfToken,
      path: request.url.split('?')[0] ?? '',
    }
    if (request.method === 'POST') {
      if (!sameOrigin(request)) {
        return reply
          .code(403)
          .type('text/html')
          .send(
            page(
              request.consoleView,
              'Refused',
              notice('This form was sent from another site: nothing was done.', 'alert'),
            ),
          )
      }
      // Synchronous: it either calls back (a good token) or answers the request with its error.
      let passed = false
      app.csrfProtection.call(app, request, reply, () => {
        passed = true
      })
      if (!passed) return reply
    }
    if (request.routeOptions.config.signedOut || request.operator) return
    if (request.method === 'GET' || request.method === 'HEAD') return reply.redirect('/admin/sign-in', 303)
    return reply
      .code(401)
      .type('text/html')
      .send(
        page(
          request.consoleView,
          'Signed out',
          notice('Your console session has ended: sign in again. Nothing was done.', 'alert'),
        ),
      )
  })

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const csrfError = typeof error.code === 'string' && error.code.startsWith('FST_CSRF')
    const answer = csrfError
      ? {
          status: 403,
          code: 'FORBIDDEN',
          message:
            'This form has expired or was not sent from the console: reload the page and try again. Nothing was done.',
        }
      : toReply(error, request)
    if (answer.status >= 500) request.log.error({ err: error }, 'console request failed')
    else request.log.info({ code: answer.code, status: answer.status }, answer.message)
    const view = request.consoleView ?? { operator: null, csrf: '', path: '' }
    reply
      .code(answer.status)
      .type('text/html')
      .send(
        page(
          view,
          answer.status === 404 ? 'Not found' : 'Could not do that',
          notice(`${answer.message} (${answer.code})`, 'alert'),
        ),
      )
  })

  app.get(
    '/admin/console.css',
    { config: { signedOut: true }, schema: { hide: true } },
    async (_request, reply) => reply.type('text/css; charset=utf-8').send(CONSOLE_CSS),
  )

  app.get(
    '/admin/sign-in',
    { config: { signedOut: true }, schema: { hide: true } },
    async (request, reply) => {
      if (request.operator) return reply.redirect('/admin', 303)
      return reply.type('text/html').send(signInPage(viewOf(request)))
    },
  )

  app.post(
    '/admin/sign-in',
    {
      config: { signedOut: true },
      schema: {
        hide: true,
        body: Type.Object(
          {
            _csrf: Type.Optional(Type.String()),
            name: Type.String({ minLength: 1, maxLength: 100 }),
            api_key: Type.String({ minLength: 1, maxLength: 4096 }),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { name, api_key: key } = request.body as { name: string; api_key: string }
      try {
        await operators.signIn(request, reply, name.trim() || 'operator', key.trim(), request.operator)
      } catch (err) {
        if (!(err instanceof SignInRefused)) throw err
        if (err.retryAfterSeconds) reply.header('retry-after', String(err.retryAfterSeconds))
        return reply
          .code(err.retryAfterSeconds ? 429 : 401)
          .type('text/html')
          .send(signInPage(viewOf(request), err.message, name))
      }
      return reply.redirect('/admin', 303)
    },
  )

  app.post('/admin/sign-out', { schema: { hide: true } }, async (request, reply) => {
    await operators.signOut(request.operator as Operator, reply)
    return reply.redirect('/admin/sign-in', 303)
  })

  app.get('/admin', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html').send(
      await overviewPage(viewOf(request), {
        sessions,
        metrics,
        health: options.health,
        webhooks: options.webhooks,
        rate,
      }),
    ),
  )

  peopleRoutes(app, { sessions, viewOf })
  operationsRoutes(app, {
    webhooks: options.webhooks,
    apiKeys: options.apiKeys,
    signingKeys: options.signingKeys,
    tenants: options.tenants,
    clock: options.clock,
    viewOf,
  })
}
