-- Deleting a session that had already ended (purge's delete step: nearly every
-- delete) no longer notifies the invalidation feed. Ending it notified already
-- (migration 005's update trigger), and a cached copy of the ended row answers
-- "inactive" as the missing row does: no token is ever answered active by it.
-- (A copy still cached may tell the reason, revoked or expired, where a fresh
-- read says unknown, until it ages out: L1_TTL_MS, and an L2 entry never
-- outlives the session's absolute expiry.) Purge deletes a thousand sessions a
-- statement, each a notification every listening replica had to read and act
-- on. A session deleted while live or suspended still notifies; so does any
-- status this list does not name.
drop trigger sessions_notify_delete on sessions;
create trigger sessions_notify_delete
  after delete on sessions
  for each row
  when (old.status not in ('revoked', 'expired'))
  execute function notify_session_change();
