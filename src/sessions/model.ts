import { type Static, Type } from '@sinclair/typebox'
import { Text } from '../schemas.ts'

// The sessions domain's values are TypeBox schemas (a login's input is validated against them at the
// door, and the reply schemas reuse them); each type is derived from its schema.

export const UserId = Text({ maxLength: 256, description: 'Your identifier of the user' })
export const Ip = Type.String({
  format: 'ip',
  maxLength: 64,
  description: "End user's IP address: IPv4 as a dotted quad (`192.0.2.1`), or IPv6 without a zone id",
})
/**
 * The client_id of the admin console's own sessions (an operator signed in). No API key has this id,
 * so no backend can open one; and such a session is never resumed: its operator signs in again.
 */
export const CONSOLE_CLIENT = 'console'

/** The longest User-Agent kept: the API refuses longer ones, forward-auth keeps their first this many characters. */
export const USER_AGENT_MAX_LENGTH = 1024
export const UserAgent = Text({
  maxLength: USER_AGENT_MAX_LENGTH,
  minLength: 0,
  description: "End user's User-Agent header",
})
// Any key: TypeBox's default key pattern `^(.*)$` misses keys with a line break, U+2028 or U+2029, which
// the serializers would then drop from every answer although the session keeps them.
export const Metadata = Type.Record(Type.String({ pattern: '^[\\s\\S]*$' }), Type.Unknown(), {
  description: 'Free-form JSON object stored with the session (size-limited)',
})

/** A User-Agent parsed into browser / OS / device type (see parseDevice). */
export const Device = Type.Object(
  {
    browser: Type.Union([Type.String(), Type.Null()]),
    browser_version: Type.Union([Type.String(), Type.Null()]),
    os: Type.Union([Type.String(), Type.Null()]),
    os_version: Type.Union([Type.String(), Type.Null()]),
    type: Type.String({
      description: 'desktop, mobile, tablet, smarttv, wearable, console, embedded or unknown',
    }),
  },
  { title: 'Device', description: 'The client, as parsed from its User-Agent' },
)
export type Device = Static<typeof Device>

export const SessionStatus = Type.Union([
  Type.Literal('active'),
  Type.Literal('suspended'),
  Type.Literal('revoked'),
  Type.Literal('expired'),
])
export type SessionStatus = Static<typeof SessionStatus>

export const TokenType = Type.Union([Type.Literal('opaque'), Type.Literal('jwt')])
export type TokenType = Static<typeof TokenType>

/** What drift from the client a session is bound to does: the configured default, or the session's binding. */
export const DriftPolicy = Type.Union([
  Type.Literal('ignore'),
  Type.Literal('record'),
  Type.Literal('suspend'),
])
export type DriftPolicy = Static<typeof DriftPolicy>

/** Per-session overrides of the drift settings, chosen at login (`binding`). */
export const Binding = Type.Object(
  {
    user_agent: Type.Optional(DriftPolicy),
    ip: Type.Optional(DriftPolicy),
    ipv4_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 32 })),
    ipv6_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 128 })),
  },
  {
    title: 'Binding',
    additionalProperties: false,
    description:
      'What drift from the client the session was opened from does (overrides UA_DRIFT_POLICY, IP_DRIFT_POLICY, IPV4_DRIFT_PREFIX, IPV6_DRIFT_PREFIX for this session)',
  },
)
export type Binding = Static<typeof Binding>

/** What a login at the user's limit of live sessions does: the configured default, or the login's `on_limit`. */
export const LimitAction = Type.Union([
  Type.Literal('evict_oldest'),
  Type.Literal('evict_least_recently_used'),
  Type.Literal('reject'),
])
export type LimitAction = Static<typeof LimitAction>

const Seconds = (description: string) => Type.Integer({ minimum: 1, maximum: 31_536_000, description })
const ClaimName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$' })

/** What a login asks for (the body of POST /v1/sessions). */
export const OpenSessionInput = Type.Object(
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
      Type.Union(TokenType.anyOf, {
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
      Type.Union(LimitAction.anyOf, {
        description:
          'At the limit: log out the oldest or least recently used session, or refuse this login (409)',
      }),
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
export type OpenSessionInput = Static<typeof OpenSessionInput>

/** A session as stored (never with its token hash: that stays in the repository). */
export interface SessionRow {
  /** The tenant the session belongs to; only callers that see it can find it. */
  tenant_id: string
  id: string
  user_id: string
  status: SessionStatus
  token_type: TokenType
  /** Where the session was last seen from. */
  ip: string | null
  /** The address the session is bound to: drift is judged against it (see drift.ts). */
  bound_ip: string | null
  user_agent: string | null
  device: Device
  metadata: Record<string, unknown>
  /** Metadata keys copied into the session's access JWTs (JWT sessions). */
  access_claims: string[]
  /** The API key that opened the session. */
  client_id: string | null
  /** Per-session overrides of the drift policies. */
  binding: Binding
  suspended_at: Date | null
  suspension_reason: string | null
  idle_timeout_seconds: number
  absolute_lifetime_seconds: number
  created_at: Date
  last_seen_at: Date
  idle_expires_at: Date
  absolute_expires_at: Date
  ended_at: Date | null
  end_reason: string | null
}

/**
 * A session a state change touched (ended, suspended, resumed or rebound to
 * another client), so the caches can drop it.
 */
export interface ChangedSession {
  id: string
  user_id: string
  /** Null for a JWT session (cached by id instead). */
  token_hash: Buffer | null
}

/** The client a session is bound to, or one that presents its token. */
export interface Client {
  ip: string | null
  user_agent: string | null
  device: Device
}

/** Dimensions whose absence from a use is judged as drift (forward-auth: the gateway always passes them on). */
export interface Required {
  ip?: boolean
  user_agent?: boolean
}

/** The client a use comes from, as the caller passes it on. */
export interface ClientInfo {
  ip?: string
  user_agent?: string
  /** What the caller always knows, so that its absence is judged as drift (forward-auth; see judgeDrift). */
  required?: Required
}

/** What a login or a refresh hands out. */
export type Issued = { token_type: 'opaque'; token: string; session: SessionRow } | JwtPair

export interface JwtPair {
  token_type: 'jwt'
  access_token: string
  access_token_expires_at: Date
  refresh_token: string
  session: SessionRow
}
