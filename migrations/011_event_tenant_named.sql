-- An event names its tenant, or leaves it to the session. Migration 006's
-- trigger looked the session up for every event inserted, even when the
-- statement named the tenant itself: a lookup per row, about two fifths of
-- what purge's expire step spent on each session. The column has no default
-- now; the trigger fills it only when the insert left it out (null), from
-- the session as before, or 'default' when the session is gone. Replicas
-- of earlier releases, which never name it, get what they got before.
alter table session_events alter column tenant_id drop default;

create or replace function session_event_tenant() returns trigger language plpgsql set search_path from current as $$
begin
  new.tenant_id := coalesce((select tenant_id from sessions where id = new.session_id), 'default');
  return new;
end
$$;

drop trigger session_events_tenant on session_events;
create trigger session_events_tenant
  before insert on session_events
  for each row
  when (new.tenant_id is null)
  execute function session_event_tenant();
