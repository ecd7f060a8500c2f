import type { FastifyReply, FastifyRequest } from 'fastify'
import ipaddr from 'ipaddr.js'
import { type ApiKeyStore, allows, fingerprintOf, type Scope } from '../api-keys/api-keys.ts'
import type { AuthFailureLimiter } from '../api-keys/auth-failures.ts'
import type { Config } from '../config.ts'
import { endUserAgent } from '../routes/end-user.ts'
import { CONSOLE_CLIENT, type SessionRow } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'
import { EVERY_TENANT, onlyTenant, type Tenancy } from '../tenants/tenancy.ts'

// Operators of the console hold sessions of this very service: signing in with an admin API key
// opens one (user `console:<key id>`, in the key's tenant), and every console request introspects
// it like a gateway would, drift checks included. The cookie carries that session's opaque token,
// never the key: the key is checked once, at sign-in, and by id (still live, still admin) after.

const USER_PREFIX = 'console:'
/** The cookie, sent to /admin only: /v1 never even receives it. */
export const CONSOLE_COOKIE = 'sa_console'

/** The operator of a console request. */
export interface Operator {
  name: string
  keyId: string
  scopes: Scope[]
  /** The tenant of the key: where the operator's own session lives and what they act in. */
  tenant: string
  platform: boolean
  session: SessionRow
  /** What the operator sees and changes, with themselves as the actor of every event they cause. */
  tenancy: Tenancy
}

export class SignInRefused extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds = 0,
  ) {
    super(message)
  }
}

/**
 * Loopback peers may use plain HTTP (a developer's machine); anywhere else the cookie must be Secure.
 * A request a proxy forwarded is not the developer's own, even when the proxy runs on this machine:
 * without TRUST_PROXY its peer looks like loopback, so forwarding headers alone rule it out.
 */
function fromLoopback(request: FastifyRequest): boolean {
  const forwarded =
    request.headers['x-forwarded-for'] !== undefined ||
    request.headers['x-forwarded-proto'] !== undefined ||
    request.headers.forwarded !== undefined
  return !forwarded && ipaddr.isValid(request.ip) && ipaddr.process(request.ip).range() === 'loopback'
}

export function createOperators({
  sessions,
  keys,
  failures,
  config,
}: {
  sessions: SessionService
  keys: ApiKeyStore
  failures: AuthFailureLimiter | null
  config: Config
}) {
  const clientOf = (request: FastifyRequest) => ({
    ip: request.ip,
    user_agent: endUserAgent(request),
    required: { ip: true, user_agent: true },
  })

  /** The operator whose console cookie this request carries, or null (none, ended, drifted, key revoked). */
  async function current(request: FastifyRequest): Promise<Operator | null> {
    const token = request.cookies[CONSOLE_COOKIE]
    if (!token || token.length > 512) return null
    const result = await sessions.introspect(EVERY_TENANT, token, clientOf(request))
    if (!result.active) return null
    const session = result.session
    // Only a session the console itself opened: a backend cannot open one with client_id "console".
    if (session.client_id !== CONSOLE_CLIENT || !session.user_id.startsWith(USER_PREFIX)) return null
    const key = await keys.findLive(session.user_id.slice(USER_PREFIX.length))
    // The very key signed in with, not one that took its id since (a replaced ADMIN_API_KEY keeps the id).
    const sameKey = key !== null && key.fingerprint === session.metadata.key_fingerprint
    if (!key || !sameKey || key.tenantId !== session.tenant_id || !allows(key.scopes, 'admin')) {
      await sessions.revoke(
        onlyTenant(session.tenant_id),
        session.id,
        'operator key revoked or replaced',
        'session',
      )
      return null
    }
    const platform = key.scopes.includes('platform')
    const name = typeof session.metadata.operator === 'string' ? session.metadata.operator : key.name
    return {
      name,
      keyId: key.keyId,
      scopes: key.scopes,
      tenant: key.tenantId,
      platform,
      session,
      tenancy: {
        ...(platform ? { tenant: key.tenantId, sees: '*' as const } : onlyTenant(key.tenantId)),
        actor: { via: 'console', operator: name, key_id: key.keyId, session_id: session.id },
      },
    }
  }

  /**
   * Signs an operator in with an admin API key: opens their console session and sets its cookie.
   * Failed attempts count against the same budget as the API's failed authentications.
   */
  async function signIn(
    request: FastifyRequest,
    reply: FastifyReply,
    name: string,
    key: string,
    signedIn: Operator | null,
  ) {
    const secure = request.protocol === 'https'
    if (!secure && !fromLoopback(request)) {
      throw new SignInRefused(
        'The console needs HTTPS except on this machine. Behind a TLS proxy, set TRUST_PROXY so its X-Forwarded-Proto is believed.',
      )
    }
    const claimant = { ip: request.ip, keyId: null }
    // As for the API: a key this replica has seen valid passes a block, so a guesser on the same
    // network cannot lock the operators out.
    const wait = failures && !keys.seenAsValid(key) ? await failures.retryAfter(claimant) : 0
    if (wait) throw new SignInRefused(`Too many failed sign-ins from this address; retry in ${wait} s.`, wait)
    const caller = key.length > 512 ? null : await keys.verify(key)
    if (!caller || !allows(caller.scopes, 'admin')) {
      const blocked = failures ? await failures.fail(claimant) : 0
      if (blocked) throw new SignInRefused(`Too many failed sign-ins; retry in ${blocked} s.`, blocked)
      throw new SignInRefused(
        caller
          ? 'This key cannot administer sessions: the console needs a key with the admin or platform scope.'
          : 'Unknown or revoked API key.',
      )
    }
    // Signing in again (another key, another name) ends the session held until now: none is left behind.
    if (signedIn) await sessions.revoke(signedIn.tenancy, signedIn.session.id, 'signed in again', 'session')
    const issued = await sessions.open(
      onlyTenant(caller.tenantId),
      {
        user_id: `${USER_PREFIX}${caller.keyId}`,
        token_type: 'opaque',
        ip: request.ip,
        user_agent: endUserAgent(request),
        metadata: {
          operator: name,
          key_id: caller.keyId,
          key_fingerprint: fingerprintOf(key),
          console: true,
        },
        idle_timeout: config.consoleIdleTimeoutSeconds,
        absolute_lifetime: config.consoleLifetimeSeconds,
        // An operator's cookie used from another browser or network is suspended at once.
        binding: { user_agent: 'suspend', ip: 'suspend' },
      },
      CONSOLE_CLIENT,
    )
    if (issued.token_type !== 'opaque') throw new Error('a console session is opaque')
    reply.setCookie(CONSOLE_COOKIE, issued.token, {
      path: '/admin',
      httpOnly: true,
      sameSite: 'strict',
      secure,
      maxAge: config.consoleLifetimeSeconds,
    })
  }

  /** Ends the operator's console session (revoked like any other) and clears the cookie. */
  async function signOut(operator: Operator, reply: FastifyReply) {
    await sessions.revoke(operator.tenancy, operator.session.id, 'signed out of the console', 'session')
    clearCookie(reply)
  }

  function clearCookie(reply: FastifyReply) {
    reply.clearCookie(CONSOLE_COOKIE, { path: '/admin', httpOnly: true, sameSite: 'strict' })
  }

  return { current, signIn, signOut, clearCookie }
}

export type Operators = ReturnType<typeof createOperators>
