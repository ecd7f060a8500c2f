-- The invalidation feed: every change that makes a cached session wrong (its
-- status, or the client it is bound to) notifies the channel `sa:<schema>` with
-- the session's cache key, in the transaction that makes the change. Postgres
-- delivers it to every listening replica at commit, in commit order, whatever
-- happens to Redis; last-seen bookkeeping (write-behind) does not notify.
create function notify_session_change() returns trigger
language plpgsql as $$
begin
  perform pg_notify(
    'sa:' || tg_table_schema,
    coalesce(encode(new.token_hash, 'hex'), 'sid:' || new.id::text)
  );
  return null;
end
$$;

create trigger sessions_notify_change
  after update on sessions
  for each row
  when (
    old.status is distinct from new.status
    or old.bound_ip is distinct from new.bound_ip
    or old.user_agent is distinct from new.user_agent
    or old.device is distinct from new.device
    or old.binding is distinct from new.binding
  )
  execute function notify_session_change();
