-- From this release the write-behind writes a use's time and address only
-- (last_seen_at, ip) and leaves the stored idle_expires_at behind, so that its
-- updates change no indexed column and stay HOT (no new index entries, shorter
-- row locks). The real idle expiry is last_seen_at plus the idle timeout, never
-- past the absolute expiry (IDLE_EXPIRY in repository.ts); the stored one is
-- never after it, and purge moves it up when it finds it behind.
--
-- A replica of an earlier release, still serving during a rolling upgrade,
-- judges idle expiry from the stored column in SQL (its purge), so it could end
-- a session that uses through new replicas kept alive. This trigger refuses,
-- whoever writes it, to end a session for idle time while the row's stored
-- idle expiry is behind the real one: the row is left as it was, and the
-- statement goes on with the others. This release writes the real expiry in
-- the update that ends a session (purge, and an introspection that finds it
-- idle), so its own ends pass; an earlier release's end of such a session is
-- left to this release's purge, which ends it once it really has idled out.
create function refuse_early_idle_end() returns trigger language plpgsql as $$
begin
  return null;
end
$$;

create trigger sessions_refuse_early_idle_end
  before update on sessions
  for each row
  when (new.end_reason = 'idle_timeout' and new.status = 'expired' and old.status in ('active', 'suspended')
    and new.idle_expires_at < least(new.last_seen_at + make_interval(secs => new.idle_timeout_seconds),
      new.absolute_expires_at))
  execute function refuse_early_idle_end();
