-- Webhook subscriptions. The signing secret is kept sealed with the
-- key-encryption key (it must be read to sign), like the JWT signing keys.
create table webhook_subscriptions (
  id text primary key,
  url text not null,
  -- Empty: every event type.
  event_types text[] not null default '{}',
  secret bytea not null,
  kek_id text not null,
  enabled boolean not null default true,
  created_at timestamptz not null,
  updated_at timestamptz not null
);

-- One row per (event, subscription): the outbox. Filled by the trigger below in
-- the very transaction that writes the event, so an event that commits is
-- delivered (at least once) and one that rolls back never is.
create table webhook_deliveries (
  id bigint generated always as identity primary key,
  subscription_id text not null references webhook_subscriptions (id) on delete cascade,
  event_id bigint not null references session_events (id) on delete cascade,
  -- pending | delivered | dead
  status text not null default 'pending',
  attempts integer not null default 0,
  -- When a dispatcher may (next) take it. A claim moves it past the request's
  -- timeout, so a dispatcher that dies mid-delivery leaves it to another.
  next_attempt_at timestamptz not null,
  -- Until when the latest claim holds it (null when none does); a retry asked
  -- for meanwhile waits for it.
  leased_until timestamptz,
  -- Claims so far, never reset: an attempt's outcome counts only if no later
  -- claim was made (attempts is reset by a retry, so it cannot tell).
  claims integer not null default 0,
  last_status integer,
  last_error text,
  created_at timestamptz not null,
  delivered_at timestamptz,
  constraint webhook_deliveries_status_check check (status in ('pending', 'delivered', 'dead'))
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_subscription_idx on webhook_deliveries (subscription_id, id desc);
create index webhook_deliveries_event_idx on webhook_deliveries (event_id);

-- Bound to this schema's tables whatever the caller's search_path.
create function enqueue_webhook_deliveries() returns trigger language plpgsql set search_path from current as $$
begin
  insert into webhook_deliveries (subscription_id, event_id, next_attempt_at, created_at)
  select s.id, e.id, e.created_at, e.created_at
  from inserted e
  join webhook_subscriptions s
    on s.enabled and (cardinality(s.event_types) = 0 or e.type = any (s.event_types));
  return null;
end
$$;

create trigger session_events_enqueue_webhooks
  after insert on session_events
  referencing new table as inserted
  for each statement execute function enqueue_webhook_deliveries();
