import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { type ApiKeyStore, allows, type Caller, type Scope } from '../api-keys/api-keys.ts'
import { Errors } from '../errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope an API key needs to call the route; routes without one are public. */
    scope?: Scope
  }
  interface FastifyRequest {
    caller: Caller | null
  }
}

/** The API key of a request: `Authorization: Bearer <key>`. */
function presentedKey(request: FastifyRequest): string | null {
  const header = request.headers.authorization
  if (!header) return null
  const [kind, key] = header.split(' ', 2)
  return kind?.toLowerCase() === 'bearer' && key ? key.trim() : null
}

/** Checks the caller's API key and scope on every route that declares a scope. */
export default fp(
  async (app, { keys }: { keys: ApiKeyStore }) => {
    app.decorateRequest('caller', null)
    // Callback style with a synchronous path for a key verified recently: this
    // runs on every introspection, where a promise per request shows.
    app.addHook('onRequest', (request, _reply, done) => {
      const scope = request.routeOptions.config.scope
      if (!scope) return done()
      const key = presentedKey(request)
      if (!key) return done(new Errors.UNAUTHORIZED('send an API key as Authorization: Bearer <key>'))
      const admit = (caller: Caller | null) => {
        if (!caller) return done(new Errors.UNAUTHORIZED('unknown or revoked API key'))
        if (!allows(caller.scopes, scope)) return done(new Errors.FORBIDDEN(scope))
        request.caller = caller
        done()
      }
      if (key.length > 512) return admit(null)
      const known = keys.recall(key)
      if (known !== undefined) return admit(known)
      keys.verify(key).then(admit, done)
    })
  },
  { name: 'caller-auth', dependencies: ['db'] },
)
