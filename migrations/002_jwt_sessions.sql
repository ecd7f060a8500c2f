-- JWT sessions: an access JWT plus a rotating opaque refresh token. Such a
-- session has no token of its own (token_hash is null); its refresh tokens
-- live in refresh_tokens and its access JWTs are checked by session id (sid).
alter table sessions alter column token_hash drop not null;
alter table sessions add column token_type text not null default 'opaque';
alter table sessions add constraint sessions_token_type_check check (token_type in ('opaque', 'jwt'));
-- Metadata keys copied into every access JWT of the session as claims.
alter table sessions add column access_claims text[] not null default '{}';
-- The API key that opened the session (the OAuth "client").
alter table sessions add column client_id text;

-- Every refresh token a session was given, so a spent one is recognised when it
-- comes back. Only a SHA-256 hash of each token is kept.
create table refresh_tokens (
  token_hash bytea primary key,
  session_id uuid not null references sessions (id) on delete cascade,
  issued_at timestamptz not null,
  -- Set when the token was exchanged for its successor.
  spent_at timestamptz,
  successor_hash bytea,
  -- The access JWT issued with this refresh token, so the same pair can be
  -- issued again to a second tab that refreshed at the same moment.
  access_jti uuid not null,
  access_kid text not null,
  access_expires_at timestamptz not null
);
create index refresh_tokens_session_idx on refresh_tokens (session_id);

-- Keys that sign access JWTs. The newest one not retired signs; retired ones
-- stay published in the JWKS until publish_until, when every token they
-- signed has expired. Private keys are sealed with the key-encryption key
-- (AES-256-GCM: 12-byte IV, 16-byte tag, then the PKCS#8 DER).
create table signing_keys (
  kid text primary key,
  alg text not null,
  public_jwk jsonb not null,
  private_key bytea not null,
  kek_id text not null,
  created_at timestamptz not null,
  retired_at timestamptz,
  publish_until timestamptz
);
