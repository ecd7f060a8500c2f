import createFetchClient, { type Client } from 'openapi-fetch'
import { errorFromResponse } from './errors.ts'
import type { components, paths } from './schema.ts'
import { type RetryOptions, withRetries, withTimeout } from './transport.ts'

type Json<T> = T extends { content: { 'application/json': infer Body } } ? Body : never
type Schemas = components['schemas']

/** A session as the service shows it (never a token). */
export type Session = Schemas['Session']
export type OpenSessionInput = Json<paths['/v1/sessions']['post']['requestBody']>
export type OpaqueSessionIssued = Schemas['OpaqueSessionIssued']
/** What a JWT login and every refresh return: an access JWT and the next refresh token. */
export type JwtSessionIssued = Schemas['JwtSessionIssued']
export type SessionIssued = OpaqueSessionIssued | JwtSessionIssued
/** `active: true` with whose session it is, or `active: false` with why (for keys that may read sessions). */
export type Introspection = Schemas['IntrospectionActive'] | Schemas['IntrospectionInactive']
export type SessionEvent = Schemas['Event']
export type RevokeOptions = Omit<Json<paths['/v1/sessions/revoke']['post']['requestBody']>, 'token'>
type EventsQuery = NonNullable<paths['/v1/events']['get']['parameters']['query']>

/** The end user's client, as clientInfo() reads it from a request. */
export interface EndUserClient {
  ip?: string
  user_agent?: string
}

export interface ClientOptions {
  /** Where the service answers, e.g. https://sessions.internal (a path prefix is kept). */
  baseUrl: string
  /** An API key of the service, sent as `Authorization: Bearer …`. */
  apiKey: string
  /** A fetch of your own (tests, proxies, instrumentation); default the global one. */
  fetch?: (input: Request, init?: RequestInit) => Promise<Response>
  /** Retries of the calls that are safe to repeat (never openSession nor refresh); 0 turns them off. Default 2. */
  retries?: number | RetryOptions
  /** Each attempt is abandoned after this long, with a TimeoutError. Default 10000; 0 = never. */
  timeoutMs?: number
}

export interface ListSessionsOptions {
  /** That session is marked `current: true`. */
  currentSessionId?: string
  /** Sessions per request (1 to 500; default 100). */
  limit?: number
}

export interface EventsOptions {
  /** Only this user's events. */
  userId?: string
  /** Only events of this type, e.g. session.revoked. */
  type?: string
  /** Only events at or after this time. */
  since?: Date | string
  /** Only events before this time. */
  until?: Date | string
  /** Events per request (1 to 200; default 50). */
  limit?: number
}

/** openSession's overloads: which answer goes with which token_type (opaque when none is given). */
interface OpenSession {
  (input: OpenSessionInput & { token_type: 'jwt' }): Promise<JwtSessionIssued>
  (input: OpenSessionInput & { token_type?: 'opaque' }): Promise<OpaqueSessionIssued>
  (input: OpenSessionInput): Promise<SessionIssued>
}

/** An answer's body, or the SessionAuthorityError it stands for. */
function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.error !== undefined || !result.response.ok)
    throw errorFromResponse(result.response, result.error)
  return result.data as T
}

const iso = (time: Date | string | undefined) => (time instanceof Date ? time.toISOString() : time)

/**
 * A typed client of the session-authority API. Calls that are safe to repeat
 * (reads, introspection, suspend, resume and revocations) are retried on
 * network errors, 502/503/504 and 429 with Retry-After; logins and refreshes
 * never are. Refusals throw SessionAuthorityError; an inactive token is not a
 * refusal (`{ active: false }`).
 */
export function createClient(options: ClientOptions) {
  const { baseUrl, apiKey, retries = 2, timeoutMs = 10_000 } = options
  const fetch = withTimeout(options.fetch ?? ((input, init) => globalThis.fetch(input, init)), timeoutMs)
  const retrying = withRetries(fetch, typeof retries === 'number' ? { limit: retries } : retries)
  const raw: Client<paths> = createFetchClient<paths>({
    baseUrl,
    fetch,
    headers: { authorization: `Bearer ${apiKey}` },
  })
  // Per call: `safe` for what may be sent twice, the plain fetch for what may not.
  const safe = { fetch: retrying }

  const openSession = (async (input: OpenSessionInput) =>
    unwrap(await raw.POST('/v1/sessions', { body: input }))) as OpenSession

  /** Is this token (opaque or access JWT) active, with the end user's client to judge drift by. */
  async function introspect(token: string, client: EndUserClient = {}): Promise<Introspection> {
    return unwrap(await raw.POST('/v1/sessions/introspect', { ...safe, body: { ...client, token } }))
  }

  /** Spends a refresh token for the next pair. Never retried: a refresh token is good once. */
  async function refresh(refreshToken: string, client: EndUserClient = {}): Promise<JwtSessionIssued> {
    const body = { ...client, refresh_token: refreshToken }
    return unwrap(await raw.POST('/v1/sessions/refresh', { body }))
  }

  async function getSession(sessionId: string): Promise<Session> {
    return unwrap(await raw.GET('/v1/sessions/{id}', { ...safe, params: { path: { id: sessionId } } }))
  }

  /** Ends a session (idempotent); `scope: 'user'` ends every session of its user. Returns it as it now is. */
  async function revoke(sessionId: string, options: RevokeOptions = {}): Promise<Session> {
    const params = { path: { id: sessionId } }
    return unwrap(await raw.POST('/v1/sessions/{id}/revoke', { ...safe, params, body: options }))
  }

  /**
   * Ends the session a token belongs to (an opaque token, an access JWT, expired
   * or not, or a refresh token): logout with only the token in hand. Idempotent;
   * SESSION_NOT_FOUND when the service never issued the token.
   */
  async function revokeByToken(token: string, options: RevokeOptions = {}): Promise<Session> {
    return unwrap(await raw.POST('/v1/sessions/revoke', { ...safe, body: { ...options, token } }))
  }

  /** Makes a session's tokens inactive until it is resumed or revoked (idempotent). */
  async function suspend(sessionId: string, options: { reason?: string } = {}): Promise<Session> {
    const params = { path: { id: sessionId } }
    return unwrap(await raw.POST('/v1/sessions/{id}/suspend', { ...safe, params, body: options }))
  }

  /** Resumes a suspended session; a client given binds the session to it from now on (idempotent). */
  async function resume(sessionId: string, client: EndUserClient = {}): Promise<Session> {
    const params = { path: { id: sessionId } }
    return unwrap(await raw.POST('/v1/sessions/{id}/resume', { ...safe, params, body: client }))
  }

  /** Every live session of a user, newest first, fetched a page at a time as you iterate. */
  async function* listSessions(userId: string, options: ListSessionsOptions = {}): AsyncGenerator<Session> {
    const { currentSessionId, limit } = options
    let cursor: string | undefined
    do {
      const query = { current_session_id: currentSessionId, limit, cursor }
      const params = { path: { user_id: userId }, query }
      const page = unwrap(await raw.GET('/v1/users/{user_id}/sessions', { ...safe, params }))
      yield* page.sessions
      cursor = page.sessions.length > 0 ? (page.next_cursor ?? undefined) : undefined
    } while (cursor)
  }

  /**
   * Revokes every session of a user, or all but `exceptSessionId`; returns how
   * many this call ended (a retry after a lost answer counts 0 for those the
   * first attempt ended).
   */
  async function revokeUserSessions(
    userId: string,
    options: { exceptSessionId?: string; reason?: string } = {},
  ): Promise<{ revoked: number }> {
    const body = { except_session_id: options.exceptSessionId, reason: options.reason }
    const params = { path: { user_id: userId } }
    return unwrap(await raw.POST('/v1/users/{user_id}/sessions/revoke', { ...safe, params, body }))
  }

  /** "Log out other devices": revokes every session of the user but the current one. */
  function logoutOthers(userId: string, currentSessionId: string, options: { reason?: string } = {}) {
    return revokeUserSessions(userId, { ...options, exceptSessionId: currentSessionId })
  }

  /** Newest first until there are no more, one page per request. */
  async function* eventPages(
    get: (cursor: string | undefined) => Promise<{ events: SessionEvent[]; next_cursor: string | null }>,
  ): AsyncGenerator<SessionEvent> {
    let cursor: string | undefined
    do {
      const page = await get(cursor)
      yield* page.events
      cursor = page.events.length > 0 ? (page.next_cursor ?? undefined) : undefined
    } while (cursor)
  }

  const eventsQuery = (options: EventsOptions, cursor: string | undefined): EventsQuery => ({
    limit: options.limit,
    type: options.type,
    since: iso(options.since),
    until: iso(options.until),
    cursor,
  })

  /** Every event of the tenant (an admin key's), newest first, optionally of one user or type or time. */
  function events(options: EventsOptions = {}): AsyncGenerator<SessionEvent> {
    return eventPages(async (cursor) => {
      const query = { ...eventsQuery(options, cursor), user_id: options.userId }
      return unwrap(await raw.GET('/v1/events', { ...safe, params: { query } }))
    })
  }

  /** A user's session history, newest first (needs only `sessions:read`). */
  function userEvents(
    userId: string,
    options: Omit<EventsOptions, 'userId'> = {},
  ): AsyncGenerator<SessionEvent> {
    return eventPages(async (cursor) => {
      const params = { path: { user_id: userId }, query: eventsQuery(options, cursor) }
      return unwrap(await raw.GET('/v1/users/{user_id}/events', { ...safe, params }))
    })
  }

  return {
    openSession,
    introspect,
    refresh,
    getSession,
    revoke,
    revokeByToken,
    suspend,
    resume,
    listSessions,
    revokeUserSessions,
    logoutOthers,
    events,
    userEvents,
    /** The typed openapi-fetch client, for every other operation (no retries; errors in `error`). */
    raw,
  }
}

export type SessionAuthorityClient = ReturnType<typeof createClient>
