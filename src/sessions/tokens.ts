import { createHmac, hash, randomBytes } from 'node:crypto'
import type { TokenType } from './model.ts'

/** Opaque session tokens start with this, so secret scanners can spot leaked ones. */
export const OPAQUE_TOKEN_PREFIX = 'sat_'
/** Refresh tokens of JWT sessions: opaque too, with a prefix of their own. */
export const REFRESH_TOKEN_PREFIX = 'srt_'

// 32 random bytes are 43 base64url characters.
const OPAQUE_TOKEN = /^sat_[A-Za-z0-9_-]{43}$/
const REFRESH_TOKEN = /^srt_[A-Za-z0-9_-]{43}$/
// Three base64url segments; header and payload are JSON objects, so both start with "eyJ" ('{"').
const JWT = /^eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

/** A session's token type, or the refresh token of a JWT session. */
export type TokenKind = TokenType | 'refresh'

/** A new opaque token: 256 bits from the OS CSPRNG, base64url, prefixed. */
export function generateOpaqueToken(): string {
  return OPAQUE_TOKEN_PREFIX + randomBytes(32).toString('base64url')
}

/** The first refresh token of a session: 256 bits from the OS CSPRNG. */
export function generateRefreshToken(): string {
  return REFRESH_TOKEN_PREFIX + randomBytes(32).toString('base64url')
}

/**
 * The refresh token that replaces `token`: an HMAC of it under a server
 * secret. Deriving it (instead of drawing it) lets a second tab that presents
 * the same spent token within the grace window be given the very same
 * successor, although only hashes of refresh tokens are stored.
 */
export function successorRefreshToken(token: string, secret: Buffer): string {
  return REFRESH_TOKEN_PREFIX + createHmac('sha256', secret).update(token).digest('base64url')
}

/** What the store keeps instead of a token: its SHA-256, as hex (cache keys) or bytes (Postgres). */
export function hashToken(token: string): string {
  return hash('sha256', token, 'hex')
}

export function hashTokenBytes(token: string): Buffer {
  return hash('sha256', token, 'buffer')
}

/**
 * Which kind of token a string claims to be, or null when it is none: a
 * malformed token is rejected here, before any lookup.
 */
export function tokenKind(token: string): TokenKind | null {
  if (OPAQUE_TOKEN.test(token)) return 'opaque'
  if (JWT.test(token)) return 'jwt'
  if (REFRESH_TOKEN.test(token)) return 'refresh'
  return null
}
