import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

// What every answer carries, whether the router or a fast lane gives it.

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** A request's id: the caller's X-Request-Id when it is a sane one, else a new UUID. */
export function requestId(request: IncomingMessage): string {
  const given = request.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/**
 * Headers on every answer, with X-Request-Id. Never sniffed into something
 * other than what it says. And no cache keeps an answer: many carry a token,
 * refresh token, API key or secret, the rest are live state (health, metrics,
 * sessions); /.well-known/jwks.json sets its own Cache-Control over this one.
 */
export const EVERY_ANSWER = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' } as const

/** EVERY_ANSWER as names and values in turn (as writeHead takes them). */
export const EVERY_ANSWER_LIST: readonly string[] = Object.entries(EVERY_ANSWER).flat()
