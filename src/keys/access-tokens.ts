import { LRUCache } from 'lru-cache'
import type { Config } from '../config.ts'
import type { SessionRow } from '../sessions/model.ts'
import { hashToken } from '../sessions/tokens.ts'
import type { SigningKeys } from './signing-keys.ts'

/** The claims of an access JWT that introspection relies on (RFC 9068 profile, plus `sid`). */
export interface AccessClaims {
  iss: string
  aud: string
  sub: string
  sid: string
  /** The session's tenant (tokens issued before tenants have none). */
  tid?: string
  jti: string
  iat: number
  exp: number
  nbf?: number
  client_id?: string
  [claim: string]: unknown
}

/** Claim names the service sets itself; metadata cannot supply them. */
export const RESERVED_CLAIMS = new Set([
  'iss',
  'sub',
  'aud',
  'exp',
  'nbf',
  'iat',
  'jti',
  'sid',
  'tid',
  'client_id',
  'scope',
  'typ',
  'cnf',
  'auth_time',
  'acr',
  'amr',
])

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const TYPES = new Set(['at+jwt', 'application/at+jwt'])

interface Deps {
  keys: SigningKeys
  config: Pick<
    Config,
    'jwtIssuer' | 'jwtAudience' | 'accessTokenTtlSeconds' | 'jwtClockSkewSeconds' | 'jwtVerifiedCacheEntries'
  >
}

/** What an access JWT is issued with: its id, when, until when, and (to issue it again) which key. */
export interface AccessGrant {
  jti: string
  issuedAt: Date
  expiresAt: Date
  kid?: string
}

/** Issues access JWTs and checks presented ones (signature and claims; the session is the caller's job). */
export function createAccessTokens({ keys, config }: Deps) {
  const skewMs = config.jwtClockSkewSeconds * 1000
  // Verified tokens, keyed by a hash of the token. No TTL: times are checked
  // on every use (timely), so an entry is never trusted past its exp, and the
  // size bound evicts the stale. The session behind a token is checked on
  // every use too, so a revocation needs nothing from this cache.
  const verified =
    config.jwtVerifiedCacheEntries > 0
      ? new LRUCache<string, AccessClaims>({ max: config.jwtVerifiedCacheEntries })
      : null
  // Tokens whose signature or claims failed: a bad token never turns good.
  const rejected = new LRUCache<string, true>({ max: 10_000, ttl: 60_000 })

  function issue(session: SessionRow, grant: AccessGrant): { token: string; kid: string } {
    const claims: Record<string, unknown> = {}
    for (const name of session.access_claims) {
      if (name in session.metadata) claims[name] = session.metadata[name]
    }
    return keys.sign(
      {
        ...claims,
        iss: config.jwtIssuer,
        sub: session.user_id,
        aud: config.jwtAudience,
        exp: Math.floor(grant.expiresAt.getTime() / 1000),
        iat: Math.floor(grant.issuedAt.getTime() / 1000),
        jti: grant.jti,
        sid: session.id,
        // User ids are per tenant: a verifier tells alice of one tenant from alice of another by this.
        tid: session.tenant_id,
        ...(session.client_id ? { client_id: session.client_id } : {}),
      },
      grant.kid,
    )
  }

  function header(token: string): { kid?: unknown; typ?: unknown } | null {
    try {
      return JSON.parse(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString('utf8'))
    } catch {
      return null
    }
  }

  /** Signature, algorithm, issuer, audience and claim shapes; null when any fails. */
  function check(
    token: string,
    key: string,
    retry: boolean,
  ): AccessClaims | null | Promise<AccessClaims | null> {
    const head = header(token)
    if (!head || typeof head.kid !== 'string' || !TYPES.has(String(head.typ))) {
      rejected.set(key, true)
      return null
    }
    const verify = keys.verifier(head.kid)
    if (!verify) {
      // Perhaps another replica rotated the keys a moment ago.
      return retry ? keys.reloadSoon().then(() => check(token, key, false)) : null
    }
    let claims: AccessClaims
    try {
      claims = verify(token) as AccessClaims
    } catch {
      rejected.set(key, true)
      return null
    }
    if (
      typeof claims.sid !== 'string' ||
      !UUID.test(claims.sid) ||
      typeof claims.sub !== 'string' ||
      typeof claims.exp !== 'number' ||
      typeof claims.iat !== 'number' ||
      (claims.nbf !== undefined && typeof claims.nbf !== 'number')
    ) {
      rejected.set(key, true)
      return null
    }
    verified?.set(key, claims)
    return claims
  }

  /**
   * The claims of a genuine access JWT, or null. Synchronous when the token
   * was verified before (the hot path); a promise only when its kid is new here.
   */
  function verify(token: string): AccessClaims | null | Promise<AccessClaims | null> {
    const key = hashToken(token)
    const known = verified?.get(key)
    if (known) return known
    if (rejected.has(key)) return null
    return check(token, key, true)
  }

  /** Is the token within its lifetime at `nowMs` (with the allowed clock skew)? */
  function timely(claims: AccessClaims, nowMs: number): boolean {
    if (claims.exp * 1000 + skewMs <= nowMs) return false
    if (claims.iat * 1000 - skewMs > nowMs) return false
    return claims.nbf === undefined || claims.nbf * 1000 - skewMs <= nowMs
  }

  return { issue, verify, timely }
}

export type AccessTokens = ReturnType<typeof createAccessTokens>
