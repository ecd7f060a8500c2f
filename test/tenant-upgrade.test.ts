import assert from 'node:assert/strict'
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import postgres from 'postgres'
import { migrate, migrationsDir } from '../src/db/migrate.ts'
import { type PreviousVersion, previousVersion } from './fixtures/previous-version.ts'
import { holdTableLock } from './fixtures/table-lock.ts'
import { createTenant, eventsOf, introspectAs, openAs, readAs, tenantKey } from './fixtures/tenants.ts'
import { adminSql, auth, buildTestApp, DATABASE_URL, dropSchema, eventually, uniqueSchema } from './helper.ts'

/**
 * Migration 006 (tenants) is expand-only: a replica of the previous version
 * keeps serving while it is applied and after, without one failed statement,
 * and everything that version wrote, before or after, belongs to the tenant
 * `default` as the new version sees it.
 */

const log = pino({ level: 'silent' })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const BEFORE_TENANTS = [
  '001_initial.sql',
  '002_jwt_sessions.sql',
  '003_binding_and_policies.sql',
  '004_webhooks.sql',
  '005_invalidation_feed.sql',
]

/** Where buildTestApp's clock starts: the old replica's times lie just before it, so both agree on what is live. */
const NEW_APP_NOW = Date.parse('2026-01-01T00:00:00Z')

interface Kept {
  token: string
  id: string
  userId: string
  /** Whether migration 006 had committed before the iteration that made it began. */
  afterUpgrade: boolean
}

/**
 * The old replica at work: logins (with their events), introspection reads,
 * last-seen writes, and every other session revoked again, one round after
 * another until stopped. Each step checks its own answer; whatever goes wrong
 * is collected, not thrown, so the loop keeps serving as a replica would.
 */
function oldReplicaLoop(old: PreviousVersion, key: string, upgrade: { committed: boolean }) {
  let tick = NEW_APP_NOW - 12 * 3600_000
  const now = () => {
    tick += 100
    return new Date(tick)
  }
  const errors: unknown[] = []
  const kept: Kept[] = []
  const revoked: Kept[] = []
  let rounds = 0
  let roundsAfterUpgrade = 0
  let stopped = false

  async function round(n: number) {
    const afterUpgrade = upgrade.committed
    const caller = await old.verifyApiKey(key)
    assert.ok(caller?.scopes.includes('introspect'), 'the key is valid')
    const userId = `old-${n % 4}`
    const { token, session } = await old.login(userId, now())
    const read = await old.readByToken(token)
    assert.equal(read?.id, session.id)
    assert.equal(read?.status, 'active')
    assert.equal(await old.touch([{ id: session.id, at: now(), ip: '198.51.100.21' }]), 1)
    const made = { token, id: session.id, userId, afterUpgrade }
    if (n % 2 === 0) {
      kept.push(made)
      return afterUpgrade
    }
    const ended = await old.revoke([session.id], 'api', now())
    assert.deepEqual(
      ended.map((e) => e.id),
      [session.id],
    )
    assert.equal((await old.readByToken(token))?.status, 'revoked')
    revoked.push(made)
    return afterUpgrade
  }

  const running = (async () => {
    while (!stopped) {
      try {
        if (await round(rounds)) roundsAfterUpgrade++
      } catch (err) {
        errors.push(err)
      }
      rounds++
      await sleep(5)
    }
  })()

  return {
    errors,
    kept,
    revoked,
    now,
    rounds: () => rounds,
    roundsAfterUpgrade: () => roundsAfterUpgrade,
    async stop() {
      stopped = true
      await running
    },
  }
}

/** Whether a backend of `applicationName` waits for a lock right now. */
async function waitsForLock(sql: postgres.Sql, applicationName: string) {
  const rows = await sql`
    select 1 from pg_stat_activity where application_name = ${applicationName} and wait_event_type = 'Lock'`
  return rows.length > 0
}

async function feedLive(app: FastifyInstance) {
  await eventually(
    async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().invalidation_feed === 'live',
    15_000,
    'the invalidation feed is live',
  )
}

test('an upgrade to tenants while a replica of the previous version keeps serving', async (t) => {
  const schema = uniqueSchema()
  const names = { migration: `migrate-${schema}`, old: `old-${schema}`, blocker: `blocker-${schema}` }
  const dir = await mkdtemp(join(tmpdir(), 'migrations-'))
  const client = (applicationName: string) =>
    postgres(DATABASE_URL, {
      max: 1,
      onnotice: () => {},
      connection: { search_path: schema, application_name: applicationName },
    })
  const migrator = client(names.migration)
  const blocker = client(names.blocker)
  const admin = adminSql()
  const old = previousVersion(DATABASE_URL, schema, names.old)
  let loop: ReturnType<typeof oldReplicaLoop> | null = null
  let appBuilt = false
  // Runs first (hooks run in the order they were added); the new app, once built, closes next.
  t.after(async () => {
    await loop?.stop()
    await Promise.all([old.close(), migrator.end(), blocker.end(), admin.end()])
    await rm(dir, { recursive: true, force: true })
    if (!appBuilt) await dropSchema(schema)
  })

  // The schema as the previous version left it, and its data, written by its statements.
  for (const file of BEFORE_TENANTS) await copyFile(join(migrationsDir, file), join(dir, file))
  assert.deepEqual(await migrate(migrator, schema, log, dir), BEFORE_TENANTS)
  const setupAt = new Date(NEW_APP_NOW - 13 * 3600_000)
  const apiKey = await old.createApiKey('gateway (before tenants)', ['introspect', 'sessions:read'], setupAt)
  const existing = []
  for (const userId of ['pre-1', 'pre-2', 'pre-3']) existing.push(await old.login(userId, setupAt))
  const endedBefore = await old.login('pre-ended', setupAt)
  assert.equal((await old.revoke([endedBefore.session.id], 'api', setupAt)).length, 1)

  // The old replica serves, and goes on serving from here to the end of the test.
  const upgrade = { committed: false }
  loop = oldReplicaLoop(old, apiKey.key, upgrade)
  const serving = loop
  await eventually(() => serving.rounds() >= 3, 15_000, 'the old replica serves')

  // Migration 006, held half-way (by a lock on session_events, which it alters after api_keys and
  // sessions) until the old replica is seen waiting behind it: statements the old replica prepared
  // before the upgrade then run on the upgraded tables.
  const lock = await holdTableLock(blocker, 'session_events')
  const migrating = migrate(migrator, schema, log)
  // Awaited below; a failure while held must not surface as an unhandled rejection first.
  migrating.catch(() => {})
  try {
    await eventually(() => waitsForLock(admin, names.migration), 15_000, 'the migration waits half-way')
    await eventually(() => waitsForLock(admin, names.old), 15_000, 'the old replica waits for the migration')
  } finally {
    lock.release()
    await lock.held
  }
  // Tenants, and every migration after them.
  const since = (await readdir(migrationsDir)).filter((f) => f.endsWith('.sql') && f >= '006').sort()
  assert.deepEqual(await migrating, since)
  upgrade.committed = true
  const [mark] = await admin<{ id: string }[]>`
    select coalesce(max(id), 0)::text as id from ${admin(schema)}.session_events`
  const eventsAtUpgrade = BigInt(mark?.id ?? '0')

  await eventually(
    () => serving.roundsAfterUpgrade() >= 5,
    15_000,
    'the old replica serves after the upgrade',
  )
  assert.deepEqual(serving.errors, [], 'no statement of the old replica failed during the upgrade')

  // A replica of the new version on the upgraded schema (its migrations find nothing to apply).
  const { app, logs } = await buildTestApp(t, { dbSchema: schema, l1TtlMs: 60_000 })
  appBuilt = true
  t.after(() => dropSchema(schema))
  assert.doesNotMatch(logs.text(), /migration applied/)
  await feedLive(app)

  // Every row written before or during the upgrade, or by the old replica since, is the default tenant's.
  // (The old replica goes on writing meanwhile: which tenants, not how many rows.)
  const tenantsOf = async (table: string) =>
    (await admin`select distinct tenant_id from ${admin(schema)}.${admin(table)}`).map((r) => r.tenant_id)
  assert.deepEqual(await tenantsOf('sessions'), ['default'])
  assert.deepEqual(await tenantsOf('api_keys'), ['default'])
  const [oldKey] = await admin`select tenant_id from ${admin(schema)}.api_keys where id = ${apiKey.id}`
  assert.equal(oldKey?.tenant_id, 'default')
  const events = await admin<{ id: string; tenant_id: string }[]>`
    select id::text as id, tenant_id from ${admin(schema)}.session_events order by id`
  const eventsSince = events.filter((e) => BigInt(e.id) > eventsAtUpgrade)
  assert.ok(eventsSince.length >= 5, 'the old replica recorded events after the upgrade')
  assert.deepEqual(new Set(events.map((e) => e.tenant_id)), new Set(['default']))

  await createTenant(app, 'other')
  const byDefault = await tenantKey(app, 'default')
  const byOther = await tenantKey(app, 'other')

  // The sessions from before the upgrade: the default tenant's, active for its key, unknown to another's.
  for (const { token, session } of existing) {
    const answer = await introspectAs(app, byDefault, token)
    assert.equal(answer.active, true, session.user_id)
    assert.equal(answer.user_id, session.user_id)
    assert.equal((await introspectAs(app, byOther, token)).active, false)
    assert.equal((await readAs(app, byOther, session.id)).statusCode, 404)
  }
  assert.equal((await introspectAs(app, byDefault, endedBefore.token)).active, false)

  // The key from before the upgrade works, for the default tenant only.
  const [first] = existing
  assert.ok(first)
  const gateway = await introspectAs(app, apiKey.key, first.token)
  assert.equal(gateway.active, true)
  const keys = await app.inject({ method: 'GET', url: '/v1/api-keys', headers: auth() })
  const listed = (keys.json() as { api_keys: Array<{ id: string; tenant_id: string }> }).api_keys
  assert.equal(listed.find((k) => k.id === apiKey.id)?.tenant_id, 'default')

  // What the old replica opened and revoked, before, during and after the upgrade, as the new version sees it.
  // (Copies: the old replica goes on adding to them.)
  const kept = [...serving.kept]
  assert.ok(kept.some((s) => !s.afterUpgrade) && kept.some((s) => s.afterUpgrade))
  for (const made of kept) {
    const answer = await introspectAs(app, byDefault, made.token)
    assert.equal(answer.active, true, `${made.id} (after the upgrade: ${made.afterUpgrade})`)
    assert.equal((await introspectAs(app, byOther, made.token)).active, false)
  }
  for (const made of [...serving.revoked]) {
    assert.equal((await introspectAs(app, byDefault, made.token)).active, false, made.id)
  }
  // Their events, written after the upgrade too, are the default tenant's history (newest first:
  // the latest such revocation is on the first page).
  const lateRevocation = serving.revoked.findLast((s) => s.afterUpgrade && s.userId === 'old-1')
  assert.ok(lateRevocation, 'the old replica revoked a session of old-1 after the upgrade')
  const history = (await eventsOf(app, byDefault, 'old-1')).filter((e) => e.session_id === lateRevocation.id)
  assert.deepEqual(
    history.map((e) => e.type),
    ['session.revoked', 'session.created'],
  )
  assert.ok(history.every((e) => BigInt(e.id) > eventsAtUpgrade))
  assert.deepEqual(await eventsOf(app, byOther, 'old-1'), [])

  // The old replica revokes a session the new one has cached: the invalidation trigger still tells it.
  const [, second] = existing
  assert.ok(second)
  assert.equal((await introspectAs(app, byDefault, second.token)).active, true)
  assert.deepEqual(
    (await old.revoke([second.session.id], 'api', serving.now())).map((e) => e.id),
    [second.session.id],
  )
  await eventually(
    async () => !(await introspectAs(app, byDefault, second.token)).active,
    10_000,
    'the new replica hears of the old replica’s revocation',
  )
  const revokedView = (await readAs(app, byDefault, second.session.id)).json()
  assert.equal(revokedView.status, 'revoked')

  // A session of another tenant, revoked by the old replica (which knows nothing of tenants): its
  // event belongs to that tenant, as the trigger says.
  const theirs = await openAs(app, byOther, { user_id: 'bob' })
  assert.equal((await introspectAs(app, byOther, theirs.token)).active, true)
  await old.revoke([theirs.session.id], 'api', new Date(NEW_APP_NOW + 1000))
  await eventually(
    async () => !(await introspectAs(app, byOther, theirs.token)).active,
    10_000,
    'the new replica hears of it',
  )
  const [revocation] = await admin<{ tenant_id: string }[]>`
    select tenant_id from ${admin(schema)}.session_events
    where session_id = ${theirs.session.id} and type = 'session.revoked'`
  assert.equal(revocation?.tenant_id, 'other')
  assert.deepEqual(
    (await eventsOf(app, byOther, 'bob')).map((e) => e.type),
    ['session.revoked', 'session.created'],
  )
  assert.deepEqual(await eventsOf(app, byDefault, 'bob'), [])

  // Still serving, still without a failure, next to the new version.
  const rounds = serving.rounds()
  await eventually(() => serving.rounds() >= rounds + 3, 15_000, 'the old replica still serves')
  await serving.stop()
  assert.deepEqual(serving.errors, [])
})
