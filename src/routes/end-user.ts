import type { IncomingHttpHeaders } from 'node:http'
import { USER_AGENT_MAX_LENGTH } from '../sessions/model.ts'

// What an end user's own request presents: their token (Bearer or a cookie) and their browser.

function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim()
      try {
        return decodeURIComponent(value.startsWith('"') ? value.slice(1, -1) : value)
      } catch {
        return null
      }
    }
  }
  return null
}

/** The end user's token: `Authorization: Bearer`, else the cookie named (if any); null when neither. */
export function presentedToken(
  request: { headers: IncomingHttpHeaders },
  cookie: string | undefined,
): string | null {
  const header = request.headers.authorization
  if (header && header.slice(0, 7).toLowerCase() === 'bearer ') return header.slice(7).trim() || null
  return cookie ? cookieValue(request.headers.cookie, cookie) : null
}

/** The end user's User-Agent, cut to the length the API accepts (a longer one is still that browser); '' is none. */
export function endUserAgent(request: { headers: IncomingHttpHeaders }): string | undefined {
  const ua = request.headers['user-agent']
  if (!ua) return undefined
  return ua.length > USER_AGENT_MAX_LENGTH ? ua.slice(0, USER_AGENT_MAX_LENGTH) : ua
}
