-- The invalidation feed: every change that makes a cached session wrong
-- notifies the channel `sa:<schema>` with the session's cache key (the token
-- hash in hex, or `sid:<id>` for a JWT session), in the transaction that makes
-- the change. Postgres delivers it to every listening replica at commit, in
-- commit order, whatever happens to Redis. Last-seen bookkeeping
-- (write-behind: last_seen_at, ip, idle_expires_at) does not notify; a cached
-- copy may lag there, and the expiry checks allow for it.
create function notify_session_change() returns trigger
language plpgsql as $$
declare
  key text := '*';
begin
  -- TRUNCATE has no rows: '*' (every session) is a gap in the feed for the replicas.
  if tg_op = 'DELETE' then
    key := coalesce(encode(old.token_hash, 'hex'), 'sid:' || old.id::text);
  elsif tg_op = 'UPDATE' then
    key := coalesce(encode(new.token_hash, 'hex'), 'sid:' || new.id::text);
  end if;
  perform pg_notify('sa:' || tg_table_schema, key);
  return null;
end
$$;

create trigger sessions_notify_change
  after update on sessions
  for each row
  when (
    old.status is distinct from new.status
    or old.user_id is distinct from new.user_id
    or old.token_hash is distinct from new.token_hash
    or old.bound_ip is distinct from new.bound_ip
    or old.user_agent is distinct from new.user_agent
    or old.device is distinct from new.device
    or old.binding is distinct from new.binding
    or old.metadata is distinct from new.metadata
    or old.idle_timeout_seconds is distinct from new.idle_timeout_seconds
    or old.absolute_expires_at is distinct from new.absolute_expires_at
  )
  execute function notify_session_change();

create trigger sessions_notify_delete
  after delete on sessions
  for each row
  execute function notify_session_change();

create trigger sessions_notify_truncate
  after truncate on sessions
  for each statement
  execute function notify_session_change();
