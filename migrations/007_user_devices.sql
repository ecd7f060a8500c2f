-- The devices each user has signed in from, for "new sign-in" events: one row
-- per user and device key (browser family, OS and device type, and the network
-- when the tenant's policy says so), with the last sign-in from it.
--
-- A new table only: nothing existing is rewritten or locked.
create table user_devices (
  tenant_id text not null,
  user_id text not null,
  device_key text not null,
  first_seen_at timestamptz not null,
  last_seen_at timestamptz not null,
  -- The session whose sign-in was last announced as new from this device:
  -- lets the statement that records a sign-in say exactly whether it was the
  -- one that announced it, when two sign-ins race.
  announced_session uuid,
  primary key (tenant_id, user_id, device_key)
);

-- Purge removes devices not signed in from for longer than any window.
create index user_devices_last_seen_idx on user_devices (last_seen_at);
