-- no-transaction
-- Indexes that keep background work proportional to the work, not the table:
-- purge's expire step, its delete batches and the events listing's filters.
--
-- Built CONCURRENTLY on a deployment that has data (writes go on meanwhile;
-- see migrate.ts for how such a file is applied). One statement per `;`.

-- Purge's expire step: live sessions past their absolute or their idle expiry,
-- each found from its own index, in its order (a batch stops after its rows,
-- and the next resumes after the last one, by time and id). Live sessions
-- only: an ended one leaves these indexes at the next vacuum.
create index concurrently if not exists sessions_live_absolute_idx on sessions (absolute_expires_at, id)
  where status in ('active', 'suspended');
create index concurrently if not exists sessions_live_idle_idx on sessions (idle_expires_at, id)
  where status in ('active', 'suspended');

-- The events listing filtered by type, newest first (its keyset order is id).
create index concurrently if not exists session_events_type_idx on session_events (type, id);

-- A tenant's events, newest first, in a deployment shared by tenants.
create index concurrently if not exists session_events_tenant_idx on session_events (tenant_id, id);
