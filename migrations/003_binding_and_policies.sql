-- Client binding: per-session overrides of the drift policies (empty = the
-- service's settings), and why and when a session was suspended.
alter table sessions add column binding jsonb not null default '{}';
-- The address drift is judged against. `ip` is where the session was last
-- seen (uses update it); this moves only at login, on a recorded move and on
-- a resume that rebinds the session.
alter table sessions add column bound_ip inet;
update sessions set bound_ip = ip;
alter table sessions add column suspended_at timestamptz;
alter table sessions add column suspension_reason text;

-- Purge finds ended sessions by age, and old events by age.
create index sessions_ended_idx on sessions (ended_at) where ended_at is not null;
create index session_events_created_idx on session_events (created_at);
