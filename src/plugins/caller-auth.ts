import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { type ApiKeyStore, allows, type Caller, type Scope } from '../api-keys/api-keys.ts'
import { Errors } from '../errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope an API key needs to call the route; routes without one are public. */
    scope?: Scope
    /** The API key may also come as client_id and client_secret in the (form) body. */
    formCredentials?: boolean
  }
  interface FastifyRequest {
    caller: Caller | null
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

/** Checks the caller's API key and scope on every route that declares a scope. */
export default fp(
  async (app, { keys }: { keys: ApiKeyStore }) => {
    app.decorateRequest('caller', null)

    function authenticate(
      request: FastifyRequest,
      { key, id }: { key: string; id: string | null },
      scope: Scope,
      done: (err?: Error) => void,
    ) {
      const admit = (caller: Caller | null) => {
        // With Basic or form credentials, the id must be the key's own.
        if (!caller || (id !== null && id !== caller.keyId)) {
          return done(new Errors.UNAUTHORIZED('unknown or revoked API key'))
        }
        if (!allows(caller.scopes, scope)) return done(new Errors.FORBIDDEN(scope))
        request.caller = caller
        done()
      }
      if (key.length > 512) return admit(null)
      const known = keys.recall(key)
      if (known !== undefined) return admit(known)
      keys.verify(key).then(admit, done)
    }

    // Callback style with a synchronous path for a key verified recently: this
    // runs on every introspection, where a promise per request shows.
    app.addHook('onRequest', (request, _reply, done) => {
      const { scope, formCredentials } = request.routeOptions.config
      if (!scope) return done()
      const presented = presentedKey(request)
      if (presented) return authenticate(request, presented, scope, done)
      // Checked once the form is read (below).
      if (formCredentials) return done()
      done(new Errors.UNAUTHORIZED('send an API key as Authorization: Bearer <key>'))
    })

    // OAuth's client_secret_post: client_id and client_secret in the form body (RFC 6749 §2.3.1).
    app.addHook('preHandler', (request, _reply, done) => {
      const { scope, formCredentials } = request.routeOptions.config
      if (!scope || !formCredentials || request.caller) return done()
      const body = request.body as { client_id?: unknown; client_secret?: unknown } | undefined
      const { client_id: id, client_secret: key } = body ?? {}
      if (typeof id !== 'string' || typeof key !== 'string' || !key) {
        return done(
          new Errors.UNAUTHORIZED('authenticate with HTTP Basic, Bearer, or client_id and client_secret'),
        )
      }
      authenticate(request, { key, id }, scope, done)
    })
  },
  { name: 'caller-auth', dependencies: ['db'] },
)
