import { hash, randomBytes } from 'node:crypto'

/** Opaque session tokens start with this, so secret scanners can spot leaked ones. */
export const OPAQUE_TOKEN_PREFIX = 'sat_'

// 32 random bytes are 43 base64url characters.
const OPAQUE_TOKEN = /^sat_[A-Za-z0-9_-]{43}$/

export type TokenKind = 'opaque'

/** A new opaque token: 256 bits from the OS CSPRNG, base64url, prefixed. */
export function generateOpaqueToken(): string {
  return OPAQUE_TOKEN_PREFIX + randomBytes(32).toString('base64url')
}

/** What the store keeps instead of a token: its SHA-256, as hex (cache keys) or bytes (Postgres). */
export function hashToken(token: string): string {
  return hash('sha256', token, 'hex')
}

/**
 * Which kind of token a string claims to be, or null when it is none: a
 * malformed token is rejected here, before any lookup. (JWTs will be a kind.)
 */
export function tokenKind(token: string): TokenKind | null {
  return OPAQUE_TOKEN.test(token) ? 'opaque' : null
}
