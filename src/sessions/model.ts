import type { Static } from '@sinclair/typebox'
import type { Binding as BindingSchema, Device as DeviceSchema, OpenSessionBody } from './schemas.ts'

/** A User-Agent parsed into browser / OS / device type (see parseDevice). */
export type Device = Static<typeof DeviceSchema>

/** Per-session overrides of the drift settings, chosen at login (`binding`). */
export type Binding = Static<typeof BindingSchema>

/** What a login asks for: the request body as its schema validates it. */
export type OpenSessionInput = OpenSessionBody

/** A session as stored (never with its token hash: that stays in the repository). */
export interface SessionRow {
  id: string
  user_id: string
  status: 'active' | 'suspended' | 'revoked' | 'expired'
  token_type: 'opaque' | 'jwt'
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
