import { type Static, Type } from '@sinclair/typebox'
import { Nullable, Text, Timestamp, Uuid } from '../schemas.ts'

export const UserId = Text({ maxLength: 256, description: 'Your identifier of the user' })
export const Ip = Type.String({
  format: 'ip',
  maxLength: 64,
  description: "End user's IP address: IPv4 as a dotted quad (`192.0.2.1`), or IPv6 without a zone id",
})
/** The longest User-Agent kept: the API refuses longer ones, forward-auth keeps their first this many characters. */
export const USER_AGENT_MAX_LENGTH = 1024
export const UserAgent = Text({
  maxLength: USER_AGENT_MAX_LENGTH,
  minLength: 0,
  description: "End user's User-Agent header",
})
export const Metadata = Type.Record(Type.String(), Type.Unknown(), {
  description: 'Free-form JSON object stored with the session (size-limited)',
})
const Seconds = (description: string) => Type.Integer({ minimum: 1, maximum: 31_536_000, description })

export const Device = Type.Object({
  browser: Type.Union([Type.String(), Type.Null()]),
  browser_version: Type.Union([Type.String(), Type.Null()]),
  os: Type.Union([Type.String(), Type.Null()]),
  os_version: Type.Union([Type.String(), Type.Null()]),
  type: Type.String({
    description: 'desktop, mobile, tablet, smarttv, wearable, console, embedded or unknown',
  }),
})

const TokenType = Type.Union([Type.Literal('opaque'), Type.Literal('jwt')])
const DriftPolicy = Type.Union([Type.Literal('ignore'), Type.Literal('record'), Type.Literal('suspend')])

export const Binding = Type.Object(
  {
    user_agent: Type.Optional(DriftPolicy),
    ip: Type.Optional(DriftPolicy),
    ipv4_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 32 })),
    ipv6_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 128 })),
  },
  {
    additionalProperties: false,
    description:
      'What drift from the client the session was opened from does (overrides UA_DRIFT_POLICY, IP_DRIFT_POLICY, IPV4_DRIFT_PREFIX, IPV6_DRIFT_PREFIX for this session)',
  },
)
const ClaimName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$' })

/** A session as it leaves the service: the allowlist of fields (never a token or its hash). */
export const SessionView = Type.Object(
  {
    id: Uuid(),
    user_id: Type.String(),
    status: Type.Union([
      Type.Literal('active'),
      Type.Literal('suspended'),
      Type.Literal('revoked'),
      Type.Literal('expired'),
    ]),
    token_type: TokenType,
    client_id: Nullable(Type.String({ description: 'The API key that opened the session' })),
    binding: Binding,
    suspended_at: Nullable(Timestamp()),
    suspension_reason: Nullable(Type.String()),
    ip: Nullable(Type.String({ description: 'Where the session was last seen from' })),
    bound_ip: Nullable(
      Type.String({
        description: 'The address drift is judged against: set at login, on a recorded move and by a resume',
      }),
    ),
    user_agent: Nullable(Type.String()),
    device: Device,
    metadata: Metadata,
    created_at: Timestamp(),
    last_seen_at: Timestamp(),
    expires_at: Timestamp('The earlier of idle_expires_at and absolute_expires_at'),
    idle_expires_at: Timestamp(),
    absolute_expires_at: Timestamp(),
    ended_at: Nullable(Timestamp()),
    end_reason: Nullable(Type.String()),
    current: Type.Optional(Type.Boolean({ description: 'This is the session named by current_session_id' })),
  },
  { title: 'Session' },
)

export const OpenSessionBody = Type.Object(
  {
    user_id: UserId,
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
    metadata: Type.Optional(Metadata),
    idle_timeout: Type.Optional(Seconds('Idle timeout of this session in seconds (default from config)')),
    absolute_lifetime: Type.Optional(
      Seconds('Absolute lifetime of this session in seconds (default from config)'),
    ),
    token_type: Type.Optional(
      Type.Union([Type.Literal('opaque'), Type.Literal('jwt')], {
        default: 'opaque',
        description:
          '`opaque`: one token, checked by introspection. `jwt`: a short-lived access JWT and a rotating refresh token',
      }),
    ),
    binding: Type.Optional(Binding),
    max_sessions: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100_000,
        description:
          "The user's limit of live sessions for this login (default MAX_SESSIONS_PER_USER; 0 = none)",
      }),
    ),
    on_limit: Type.Optional(
      Type.Union(
        [Type.Literal('evict_oldest'), Type.Literal('evict_least_recently_used'), Type.Literal('reject')],
        {
          description:
            'At the limit: log out the oldest or least recently used session, or refuse this login (409)',
        },
      ),
    ),
    access_token_claims: Type.Optional(
      Type.Array(ClaimName, {
        maxItems: 16,
        description: 'Metadata keys copied into each access JWT as claims (JWT sessions only)',
      }),
    ),
  },
  { additionalProperties: false },
)

const OpaqueIssued = Type.Object(
  {
    token_type: Type.Literal('opaque'),
    token: Type.String({ description: 'The session token. Shown once: only its hash is stored.' }),
    session: SessionView,
  },
  { title: 'OpaqueSessionIssued' },
)

/** What a JWT login or a refresh returns. */
export const JwtIssued = Type.Object(
  {
    token_type: Type.Literal('jwt'),
    access_token: Type.String({ description: 'A signed access JWT (RFC 9068 profile, `typ: at+jwt`)' }),
    expires_in: Type.Integer({ description: 'Seconds until the access JWT expires' }),
    refresh_token: Type.String({
      description:
        'Exchanges for the next pair at /v1/sessions/refresh, once. Shown once: only its hash is stored.',
    }),
    session: SessionView,
  },
  { title: 'JwtSessionIssued' },
)

export const OpenSessionReply = Type.Union([OpaqueIssued, JwtIssued])

export const RefreshBody = Type.Object(
  {
    refresh_token: Type.String({
      // As long as any token may be: a wrong kind of token is REFRESH_TOKEN_INVALID, whatever its length.
      maxLength: 8192,
      description: 'The refresh token of the latest pair',
    }),
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  {
    additionalProperties: false,
    description:
      "ip and user_agent (the end user's, when you have them) are judged against the session's client as in introspection: drift under a suspend policy suspends the session and the refresh fails with SESSION_SUSPENDED, spending nothing",
  },
)

const SigningKeyJwk = Type.Object(
  {
    kty: Type.String(),
    kid: Type.String(),
    alg: Type.String(),
    use: Type.String(),
    crv: Type.Optional(Type.String()),
    x: Type.Optional(Type.String()),
    y: Type.Optional(Type.String()),
    n: Type.Optional(Type.String()),
    e: Type.Optional(Type.String()),
  },
  { title: 'JWK' },
)

export const JwksReply = Type.Object({ keys: Type.Array(SigningKeyJwk) }, { title: 'JWKSet' })

export const SigningKeyView = Type.Object(
  {
    kid: Type.String(),
    alg: Type.String(),
    current: Type.Boolean({ description: 'New access JWTs are signed with this key' }),
    created_at: Timestamp(),
    retired_at: Nullable(Timestamp()),
    publish_until: Nullable(
      Timestamp('A retired key stays in the JWKS until every token it signed has expired'),
    ),
  },
  { title: 'SigningKey' },
)

export const SigningKeysReply = Type.Object({ keys: Type.Array(SigningKeyView) })

export const IntrospectBody = Type.Object(
  {
    token: Type.String({ maxLength: 8192, description: 'The token to check' }),
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  { additionalProperties: false },
)

export const IntrospectReply = Type.Object(
  {
    active: Type.Boolean(),
    reason: Type.Optional(
      Type.Literal('suspended', {
        description: 'Why the token is inactive; only for callers whose key can read sessions',
      }),
    ),
    session_id: Type.Optional(Uuid()),
    user_id: Type.Optional(Type.String()),
    token_type: Type.Optional(TokenType),
    jti: Type.Optional(Type.String({ description: 'The access JWT id (JWT only)' })),
    client_id: Type.Optional(Type.String({ description: 'The API key that opened the session' })),
    created_at: Type.Optional(Timestamp()),
    last_seen_at: Type.Optional(Timestamp('This use')),
    expires_at: Type.Optional(
      Timestamp('The earliest of the slid idle expiry, the absolute expiry and (JWT) the token exp'),
    ),
    absolute_expires_at: Type.Optional(Timestamp()),
    metadata: Type.Optional(Metadata),
  },
  { description: 'Only `active` is present when the token is not active' },
)

export const SessionParams = Type.Object({ id: Uuid('Session id') })

export const RevokeQuery = Type.Object(
  {
    scope: Type.Optional(
      Type.Union([Type.Literal('session'), Type.Literal('user')], {
        description:
          "`user`: revoke every session of this session's user (log out everywhere). Default `session`, or `user` with LOGOUT_ALL_ON_LOGOUT",
      }),
    ),
    reason: Type.Optional(
      Text({ maxLength: 200, description: 'Recorded with the revocation (default: api)' }),
    ),
  },
  { additionalProperties: false },
)

export const UserParams = Type.Object({ user_id: UserId })

export const ListSessionsQuery = Type.Object(
  {
    current_session_id: Type.Optional(Uuid('Marks this session `current: true`')),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
  },
  { additionalProperties: false },
)

export const ListSessionsReply = Type.Object({ sessions: Type.Array(SessionView) })

export const RevokeAllQuery = Type.Object(
  {
    except_session_id: Type.Optional(Uuid('Keep this session (log out the other devices)')),
    reason: Type.Optional(Text({ maxLength: 200 })),
  },
  { additionalProperties: false },
)

export const RevokeAllReply = Type.Object({
  revoked: Type.Integer({ description: 'How many sessions were revoked' }),
})

export const EventsQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
    before: Type.Optional(
      Type.String({ pattern: '^[0-9]{1,18}$', description: 'next_cursor of the previous page' }),
    ),
    type: Type.Optional(
      Text({ maxLength: 64, description: 'Only events of this type, e.g. session.revoked' }),
    ),
    since: Type.Optional(
      Type.String({ format: 'date-time', description: 'Only events at or after this time' }),
    ),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'Only events before this time' })),
  },
  { additionalProperties: false },
)

export const AllEventsQuery = Type.Composite(
  [EventsQuery, Type.Object({ user_id: Type.Optional(UserId) }, { additionalProperties: false })],
  { additionalProperties: false },
)

export const EventView = Type.Object({
  id: Type.String(),
  session_id: Uuid(),
  user_id: Type.String(),
  type: Type.String(),
  data: Type.Record(Type.String(), Type.Unknown()),
  created_at: Timestamp(),
})

export const EventsReply = Type.Object({
  events: Type.Array(EventView),
  next_cursor: Type.Union([Type.String(), Type.Null()], {
    description: 'Pass as `before` for the next page',
  }),
})

export type OpenSessionBody = Static<typeof OpenSessionBody>

export const SuspendBody = Type.Object(
  {
    reason: Type.Optional(
      Text({ maxLength: 200, description: 'Recorded with the suspension (default: api)' }),
    ),
  },
  { additionalProperties: false },
)

export const ResumeBody = Type.Object(
  {
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  {
    additionalProperties: false,
    description:
      'Given fields bind the session to that client from now on; without them it stays bound as before',
  },
)

const UserList = (description: string, minItems: number) =>
  Type.Array(UserId, { minItems, maxItems: 10_000, description })

export const BulkRevokeBody = Type.Object(
  {
    user_ids: Type.Optional(UserList('Revoke every session of these users', 1)),
    all_users_except: Type.Optional(UserList('Revoke every session of every user but these', 0)),
    reason: Type.Optional(
      Text({ maxLength: 200, description: 'Recorded with each revocation (default: admin)' }),
    ),
  },
  { additionalProperties: false, description: 'Exactly one of user_ids and all_users_except' },
)

export const PurgeReply = Type.Object({
  expired: Type.Integer({ description: 'Sessions found past their expiry and marked expired' }),
  sessions_deleted: Type.Integer({ description: 'Ended sessions deleted (older than PURGE_RETENTION_DAYS)' }),
  events_deleted: Type.Integer({ description: 'Events deleted (older than EVENT_RETENTION_DAYS)' }),
})
