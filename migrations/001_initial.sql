-- Callers of the API. Only a SHA-256 hash of each key is kept.
create table api_keys (
  id text primary key,
  name text not null,
  key_hash bytea not null unique,
  scopes text[] not null,
  created_at timestamptz not null,
  revoked_at timestamptz
);

-- One row per session. Only a SHA-256 hash of the token is kept.
-- status: active | suspended | revoked | expired. A session is live while its
-- status is active and both expiry instants are in the future.
create table sessions (
  id uuid primary key,
  user_id text not null,
  token_hash bytea not null unique,
  status text not null default 'active',
  ip inet,
  user_agent text,
  device jsonb not null,
  metadata jsonb not null,
  idle_timeout_seconds integer not null,
  absolute_lifetime_seconds integer not null,
  created_at timestamptz not null,
  last_seen_at timestamptz not null,
  idle_expires_at timestamptz not null,
  absolute_expires_at timestamptz not null,
  ended_at timestamptz,
  end_reason text,
  constraint sessions_status_check check (status in ('active', 'suspended', 'revoked', 'expired'))
);
create index sessions_user_created_idx on sessions (user_id, created_at desc);

-- Append-only history, written in the same transaction as the change it records.
create table session_events (
  id bigint generated always as identity primary key,
  session_id uuid not null,
  user_id text not null,
  type text not null,
  data jsonb not null default '{}',
  created_at timestamptz not null
);
create index session_events_user_idx on session_events (user_id, id desc);
