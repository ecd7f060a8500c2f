-- Tenants: each owns its API keys, sessions, users' histories, webhook
-- subscriptions and settings (overrides of the global policy defaults).
--
-- Expand only, so replicas of the previous version keep serving while this
-- runs and after: every new column has a default or is filled by a trigger,
-- no statement rewrites or scans a table under a lock that blocks them, and
-- every row that exists belongs to the tenant `default`.
create table tenants (
  id text primary key,
  name text not null,
  -- Overrides of the global settings, in the API's snake_case names (see TenantSettings).
  settings jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint tenants_id_check check (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);
insert into tenants (id, name) values ('default', 'Default');

-- A constant default is stored once in the catalogue (no table rewrite); the
-- foreign keys are NOT VALID (no scan now; every new row is checked), and
-- every existing row holds 'default', which exists.
alter table api_keys add column tenant_id text not null default 'default';
alter table api_keys add constraint api_keys_tenant_fk foreign key (tenant_id) references tenants (id) not valid;
alter table sessions add column tenant_id text not null default 'default';
alter table sessions add constraint sessions_tenant_fk foreign key (tenant_id) references tenants (id) not valid;
alter table webhook_subscriptions add column tenant_id text not null default 'default';
alter table webhook_subscriptions
  add constraint webhook_subscriptions_tenant_fk foreign key (tenant_id) references tenants (id) not valid;

-- An event belongs to its session's tenant: the trigger copies it from the
-- session, which also serves replicas that do not know of tenants. Login writes
-- its event in the statement that creates the session, which the trigger
-- cannot see yet, so it names the tenant itself.
alter table session_events add column tenant_id text not null default 'default';
create function session_event_tenant() returns trigger language plpgsql set search_path from current as $$
begin
  new.tenant_id := coalesce((select tenant_id from sessions where id = new.session_id), new.tenant_id);
  return new;
end
$$;
create trigger session_events_tenant
  before insert on session_events
  for each row execute function session_event_tenant();

-- A subscription receives its own tenant's events only.
create or replace function enqueue_webhook_deliveries() returns trigger language plpgsql set search_path from current as $$
begin
  insert into webhook_deliveries (subscription_id, event_id, next_attempt_at, created_at)
  select s.id, e.id, e.created_at, e.created_at
  from inserted e
  join webhook_subscriptions s
    on s.enabled and s.tenant_id = e.tenant_id
      and (cardinality(s.event_types) = 0 or e.type = any (s.event_types));
  return null;
end
$$;
