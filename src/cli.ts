#!/usr/bin/env node

import { parseArgs } from 'node:util'
import { type TSchema, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import pino from 'pino'
import { ApiKey, createApiKeyStore, SCOPES, type Scope } from './api-keys/api-keys.ts'
import { systemClock } from './clock.ts'
import { type Config, ConfigError, loadConfig } from './config.ts'
import { connectDatabase } from './db/connect.ts'
import type { Position } from './db/keyset.ts'
import { migrate } from './db/migrate.ts'
import { createAccessTokens } from './keys/access-tokens.ts'
import { keyEncryptionKey, requireKeyEncryptionKey } from './keys/key-encryption.ts'
import { createSigningKeys, SigningKeyView } from './keys/signing-keys.ts'
import { loggerOptions } from './logger.ts'
import { createMetrics } from './metrics.ts'
import {
  AllEventsQuery,
  EventsReply,
  eventsPage,
  RevokeAllReply,
  SessionView,
  sessionView,
} from './routes/session-views.ts'
import { Text, Uuid } from './schemas.ts'
import { createSessionCache } from './sessions/cache.ts'
import { offFeed } from './sessions/invalidation-feed.ts'
import { UserId } from './sessions/model.ts'
import { purgeSessions } from './sessions/purge.ts'
import { createSessionRepository } from './sessions/repository.ts'
import { createSessionService, type SessionService } from './sessions/service.ts'
import { createWriteBehind } from './sessions/write-behind.ts'
import { createTenantStore, NewTenant, Tenant, TenantChange } from './tenants/store.ts'
import { DEFAULT_TENANT, EVERY_TENANT, onlyTenant, type Tenancy, userTenancy } from './tenants/tenancy.ts'
import { createDestinations } from './webhooks/destination.ts'
import { createWebhookStore, Webhook } from './webhooks/store.ts'

const USAGE = `usage: session-authority <command>

  serve                                   run the service (applies migrations unless MIGRATE_ON_START=false)
  migrate                                 apply pending database migrations and exit
  purge                                   mark overdue sessions expired, delete old ended sessions and events
  keys create --name N --scopes a,b [--tenant T]
                                          create an API key (of tenant T, by default: default) and print it once
                                          scopes: ${SCOPES.join(', ')}
  keys list [--json]                      list API keys (never the keys themselves)
  keys revoke <id>                        revoke an API key
  keys rotate-signing                     make a new JWT signing key current (tokens signed before stay valid)
  keys signing [--json]                   list the JWT signing keys (never a private key)
  webhooks create --url U [--events a,b] [--tenant T]
                                          subscribe a URL to the session events of tenant T (by default:
                                          default); prints the signing secret once
  webhooks list [--json]                  list webhook subscriptions of every tenant (never a secret)
  webhooks delete <id>                    delete a webhook subscription
  tenants create --id ID --name N [--settings JSON]
                                          create a tenant, with overrides of the global settings if any
  tenants list [--json]                   list the tenants: id, name, settings
  tenants update <id> [--name N] [--settings JSON]
                                          rename a tenant and/or replace its overrides whole
                                          (replicas apply them within TENANT_RELOAD_MS)
  sessions list --user U [--tenant T] [--json]
                                          a user's live sessions, newest first, every page (ended ones are
                                          not listed: see events): id, status, created, last seen, expires,
                                          ip, browser, os, device type
  sessions show <session-id> [--tenant T] [--json]
                                          one session, whatever its state
  sessions revoke <session-id> [--reason R] [--tenant T] [--json]
                                          revoke one session (idempotent), recorded with reason R (default: cli)
  users sessions <user-id> [--tenant T] [--json]
                                          the same as sessions list --user
  users revoke-all <user-id> [--except <session-id>] [--reason R] [--tenant T] [--json]
                                          revoke every open session of a user, or all but one; prints how many
  events [--user U] [--type T] [--since TIME] [--until TIME] [--limit N] [--before CURSOR] [--tenant T] [--json]
                                          session events, newest first: N of them (default 50), older than
                                          CURSOR if given: id, time, type, user, session, data

  User ids are per tenant: a command given one acts in tenant T (by default: default). Commands given a
  session id, and events without --user, see every tenant unless --tenant names one.
  --json prints one JSON document with the HTTP API's field names instead of the lines.

Settings come from the environment; see README.md.`

type Database = Awaited<ReturnType<typeof connectDatabase>>

/** Runs a command that needs only the database (not the HTTP app). */
async function withDatabase<T>(
  fn: (db: Database, context: { config: Config; log: pino.Logger }) => Promise<T>,
): Promise<T> {
  const config = loadConfig()
  const log = pino({ ...loggerOptions(config), level: 'warn' })
  const db = await connectDatabase(config, log)
  try {
    await migrate(db.sql, config.dbSchema, log)
    return await fn(db, { config, log })
  } finally {
    await db.close()
  }
}

const keyStore = (db: Database) => createApiKeyStore({ sql: db.sql, clock: systemClock, cacheTtlMs: 0 })

/** Why `value` does not fit `schema`, in one line (null if it fits). */
function invalid(schema: TSchema, value: unknown): string | null {
  if (Value.Check(schema, value)) return null
  const first = Value.Errors(schema, value).First()
  return first ? `${first.path || '/'}: ${first.message}` : 'invalid'
}

/** The --settings option as an object, or why it is not JSON. */
function parseSettings(text: string | undefined): { settings?: unknown; error?: string } {
  if (text === undefined) return {}
  try {
    return { settings: JSON.parse(text) }
  } catch {
    return { error: '--settings is not JSON' }
  }
}

const tenantLine = (t: Tenant) => `${t.id}\t${t.name}\t${JSON.stringify(t.settings)}`

/** The command line: every command's options (each command reads its own). */
function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      events: { type: 'string' },
      name: { type: 'string' },
      scopes: { type: 'string' },
      tenant: { type: 'string' },
      id: { type: 'string' },
      settings: { type: 'string' },
      user: { type: 'string' },
      reason: { type: 'string' },
      except: { type: 'string' },
      type: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string' },
      before: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

type Values = ReturnType<typeof parse>['values']

/** The commands whose output --json turns into one JSON document. */
const JSON_COMMANDS = new Set([
  'keys list',
  'keys signing',
  'webhooks list',
  'tenants list',
  'sessions list',
  'sessions show',
  'sessions revoke',
  'users sessions',
  'users revoke-all',
  'events',
])

/** Who a command acts as: one tenant if named, else every one (user-keyed calls then act in the default). */
const tenancyOf = (tenant: string | undefined): Tenancy => (tenant ? onlyTenant(tenant) : EVERY_TENANT)

/**
 * Runs a command with the sessions domain: the functions the HTTP routes call, so what it changes
 * leaves the same events. It caches nothing, and need not tell the replicas: each hears of a change
 * from Postgres (the invalidation feed's triggers). It signs and verifies no token and seals nothing,
 * so it runs without a key-encryption key (the development one then fills slots nothing here uses).
 */
async function withSessions<T>(
  tenant: string | undefined,
  fn: (sessions: SessionService) => Promise<T>,
): Promise<T> {
  return withDatabase(async (db, { config, log }) => {
    const tenants = createTenantStore({ sql: db.sql, clock: systemClock, config, log })
    // A tenant named by mistake is refused, not answered with nothing.
    if (tenant !== undefined) await tenants.get(tenant)
    await tenants.start()
    const repo = createSessionRepository(db.sql)
    const metrics = createMetrics()
    const kek = keyEncryptionKey(config.signingKeyEncryptionKey)
    const touches = createWriteBehind({ repo, intervalMs: config.writeBehindIntervalMs, metrics, log })
    const cache = createSessionCache({
      ...config,
      l1TtlMs: 0,
      keyPrefix: config.redisKeyPrefix,
      redis: null,
      feed: offFeed,
      macKey: kek.derive('session cache values'),
      metrics,
      log,
    })
    const signingKeys = createSigningKeys({ sql: db.sql, clock: systemClock, kek, config, log })
    const sessions = createSessionService({
      repo,
      cache,
      touches,
      clock: systemClock,
      access: createAccessTokens({ keys: signingKeys, config }),
      refreshSecret: kek.derive('refresh token chain'),
      policy: tenants.policy,
      loginPolicy: tenants.loginPolicy,
      // The replicas' last-seen writes may be pending, as for a replica beside others.
      config: { ...config, idleGraceMs: config.writeBehindIntervalMs },
      log,
    })
    try {
      return await fn(sessions)
    } finally {
      tenants.close()
      await touches.close()
      await cache.close()
    }
  })
}

/** A value as the HTTP API answers it: the reply schema's fields only, times in ISO 8601. */
const wire = (schema: TSchema, value: unknown) => Value.Clean(schema, JSON.parse(JSON.stringify(value)))

/** One JSON document, as the HTTP API would answer with it. */
const jsonText = (schema: TSchema, value: unknown) => JSON.stringify(wire(schema, value), null, 2)
const printJson = (schema: TSchema, value: unknown) => console.log(jsonText(schema, value))

/** What `--name value` breaks of `schema`, in one line (null if it fits). */
function badOption(name: string, schema: TSchema, value: string | undefined): string | null {
  if (value === undefined || Value.Check(schema, value)) return null
  return `${name}: ${Value.Errors(schema, value).First()?.message ?? 'invalid'}`
}

const ApiKeysReply = Type.Object({ api_keys: Type.Array(ApiKey) })
const WebhooksReply = Type.Object({ webhooks: Type.Array(Webhook) })
const TenantsReply = Type.Object({ tenants: Type.Array(Tenant) })
const SigningKeysReply = Type.Object({ keys: Type.Array(SigningKeyView) })
const SessionsReply = Type.Object({ sessions: Type.Array(SessionView) })
const Reason = Text({ maxLength: 200 })
const SessionId = Uuid()

/** The largest page the HTTP listing of a user's sessions serves. */
const SESSION_PAGE = 500
/** The largest page of events the HTTP API serves. */
const EVENT_PAGE = 200

type SessionWire = ReturnType<typeof sessionView>
const iso = (date: Date | null) => date?.toISOString() ?? '-'
const versioned = (name: string | null, version: string | null) =>
  name ? [name, version].filter(Boolean).join(' ') : '-'

const sessionLine = (s: SessionWire) =>
  [
    s.id,
    s.status,
    iso(s.created_at),
    iso(s.last_seen_at),
    iso(s.expires_at),
    s.ip ?? '-',
    versioned(s.device.browser, s.device.browser_version),
    versioned(s.device.os, s.device.os_version),
    s.device.type,
  ].join('\t')

/** A session as `field<TAB>value` lines, in the order of the HTTP view; objects as JSON. */
function sessionLines(view: SessionWire): string[] {
  return Object.entries(wire(SessionView, view) as Record<string, unknown>).map(([field, value]) => {
    const text = value === null ? '-' : typeof value === 'object' ? JSON.stringify(value) : String(value)
    return `${field}\t${text}`
  })
}

/** Every live session of a user, newest first, page after page as the HTTP listing serves them. */
async function allSessionsOf(sessions: SessionService, who: Tenancy, userId: string) {
  const rows = []
  for (let after: Position | null = null; ; ) {
    const page = await sessions.listForUser(who, userId, { limit: SESSION_PAGE, after })
    rows.push(...page)
    const last = page.at(-1)
    if (page.length < SESSION_PAGE || !last) return rows.map((row) => sessionView(row, ''))
    after = { at: last.position_at, id: last.id }
  }
}

/** Lists a user's sessions: `sessions list --user U` and `users sessions U`. */
async function listUserSessions(
  name: string,
  userId: string,
  tenant: string | undefined,
  json: boolean,
): Promise<number> {
  const problem = badOption('user id', UserId, userId)
  if (problem) {
    console.error(`${name}: ${problem}`)
    return 2
  }
  const views = await withSessions(tenant, (sessions) =>
    allSessionsOf(sessions, userTenancy(tenancyOf(tenant)), userId),
  )
  if (json) printJson(SessionsReply, { sessions: views })
  else for (const view of views) console.log(sessionLine(view))
  return 0
}

/** `sessions show|revoke <id>` and `users revoke-all <user-id>`. */
async function endOrShow(command: string, sub: string, arg: string, values: Values): Promise<number> {
  const { tenant, json = false, reason = 'cli', except } = values
  const problem =
    (sub === 'revoke-all'
      ? (badOption('user id', UserId, arg) ?? badOption('--except', SessionId, except))
      : badOption('session id', SessionId, arg)) ?? badOption('--reason', Reason, reason)
  if (problem) {
    console.error(`${command} ${sub}: ${problem}`)
    return 2
  }
  if (sub === 'revoke-all') {
    const revoked = await withSessions(tenant, (sessions) =>
      sessions.revokeAllForUser(userTenancy(tenancyOf(tenant)), arg, except ?? null, reason),
    )
    if (json) printJson(RevokeAllReply, { revoked })
    else console.log(`revoked ${revoked}`)
    return 0
  }
  const view = sessionView(
    await withSessions(tenant, (sessions) =>
      sub === 'show'
        ? sessions.get(tenancyOf(tenant), arg)
        : // This session only, whatever the tenant's LOGOUT_ALL_ON_LOGOUT: users revoke-all ends them all.
          sessions.revoke(tenancyOf(tenant), arg, reason, 'session'),
    ),
  )
  if (json) printJson(SessionView, view)
  else if (sub === 'show') for (const line of sessionLines(view)) console.log(line)
  else console.log(view.status === 'revoked' ? `revoked ${view.id}` : `${view.id} had ended: ${view.status}`)
  return 0
}

/** Why an events query does not fit the HTTP API's rules, naming the option (null if it fits). */
function eventsProblem(query: Record<string, unknown>): string | null {
  const first = Value.Check(AllEventsQuery, query) ? undefined : Value.Errors(AllEventsQuery, query).First()
  if (!first) return null
  const option = first.path === '/user_id' ? '--user' : first.path.replace(/^\//, '--')
  return `${option}: ${first.message}`
}

/** `events`: newest first, as many as --limit asks, page after page. */
async function listEvents(values: Values): Promise<number> {
  const { tenant, json = false, user, type, since, until, before } = values
  const limit = Number(values.limit ?? 50)
  const query = Object.fromEntries(
    Object.entries({ user_id: user, type, since, until, before }).filter(([, v]) => v !== undefined),
  )
  const problem =
    values.limit !== undefined && !(/^[0-9]{1,9}$/.test(values.limit) && limit >= 1)
      ? '--limit must be a positive whole number'
      : eventsProblem(query)
  if (problem) {
    console.error(`events: ${problem}`)
    return 2
  }
  const who = user === undefined ? tenancyOf(tenant) : userTenancy(tenancyOf(tenant))
  const reply = await withSessions(tenant, async (sessions) => {
    const events: Awaited<ReturnType<typeof eventsPage>>['events'] = []
    let cursor = before
    for (;;) {
      const size = Math.min(EVENT_PAGE, limit - events.length)
      const page = await eventsPage(sessions, who, { ...query, before: cursor, limit: size })
      events.push(...page.events)
      if (page.next_cursor === null || events.length >= limit)
        return { events, next_cursor: page.next_cursor }
      cursor = page.next_cursor
    }
  })
  if (json) {
    printJson(EventsReply, reply)
    return 0
  }
  for (const e of reply.events)
    console.log(
      `${e.id}\t${e.created_at.toISOString()}\t${e.type}\t${e.user_id}\t${e.session_id}\t${JSON.stringify(e.data)}`,
    )
  if (reply.next_cursor !== null) console.error(`more: --before ${reply.next_cursor}`)
  return 0
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (err) {
    // An unknown option, or one without its value: a usage error.
    console.error(`${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { positionals, values } = parsed
  const [command, sub, arg] = positionals
  if (values.help || !command) {
    console.log(USAGE)
    return command || values.help ? 0 : 2
  }
  const json = values.json ?? false
  if (json && !JSON_COMMANDS.has(command === 'events' ? command : `${command} ${sub}`)) {
    console.error(`--json is not an option of ${positionals.join(' ')}\n\n${USAGE}`)
    return 2
  }
  if (command === 'sessions' && sub === 'list' && positionals.length === 2 && values.user !== undefined)
    return listUserSessions('sessions list', values.user, values.tenant, json)
  if (command === 'users' && sub === 'sessions' && arg !== undefined && positionals.length === 3)
    return listUserSessions('users sessions', arg, values.tenant, json)
  if (
    ((command === 'sessions' && (sub === 'show' || sub === 'revoke')) ||
      (command === 'users' && sub === 'revoke-all')) &&
    arg !== undefined &&
    positionals.length === 3
  )
    return endOrShow(command, sub, arg, values)
  if (command === 'events' && positionals.length === 1) return listEvents(values)
  if (command === 'serve') {
    // Loaded only here: the other commands start faster without the HTTP server and its routes.
    const { serve } = await import('./server.ts')
    await serve(loadConfig())
    return -1
  }
  if (command === 'migrate') {
    const config = loadConfig()
    const log = pino(loggerOptions(config))
    const db = await connectDatabase(config, log)
    try {
      const applied = await migrate(db.sql, config.dbSchema, log)
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date')
    } finally {
      await db.close()
    }
    return 0
  }
  if (command === 'purge') {
    // No cache to drop here: a session past its expiry is inactive by its own timestamps on every replica.
    const invalidate = async () => {}
    const counts = await withDatabase((db, { config }) =>
      purgeSessions(createSessionRepository(db.sql), { clock: systemClock, config, invalidate }, true),
    )
    console.log(
      `expired ${counts?.expired ?? 0}, deleted ${counts?.sessions_deleted ?? 0} sessions, deleted ${counts?.events_deleted ?? 0} events, forgot ${counts?.devices_forgotten ?? 0} devices`,
    )
    return 0
  }
  if (command === 'keys' && sub === 'create') {
    const scopes = (values.scopes ?? '').split(',').filter(Boolean)
    const unknown = scopes.filter((s) => !SCOPES.includes(s as Scope))
    if (!values.name || scopes.length === 0 || unknown.length > 0) {
      console.error(`keys create needs --name and --scopes from: ${SCOPES.join(', ')}`)
      return 2
    }
    const { key, apiKey } = await withDatabase((db) =>
      keyStore(db).create(values.tenant ?? DEFAULT_TENANT, values.name as string, scopes as Scope[]),
    )
    console.error(`created ${apiKey.id} (${apiKey.scopes.join(', ')}); the key is shown only this once:`)
    console.log(key)
    return 0
  }
  if (command === 'keys' && sub === 'list') {
    const keys = await withDatabase((db) => keyStore(db).list(EVERY_TENANT))
    if (json) {
      printJson(ApiKeysReply, { api_keys: keys })
      return 0
    }
    for (const k of keys) {
      const state = k.revoked_at ? `revoked ${k.revoked_at.toISOString()}` : 'active'
      console.log(`${k.id}\t${k.name}\t${k.scopes.join(',')}\t${state}\t${k.tenant_id}`)
    }
    return 0
  }
  if (command === 'keys' && sub === 'revoke' && arg) {
    const key = await withDatabase((db) => keyStore(db).revoke(EVERY_TENANT, arg))
    console.log(`revoked ${key.id}`)
    return 0
  }
  if (command === 'webhooks' && (sub === 'create' || sub === 'list' || (sub === 'delete' && arg))) {
    const { events, url, tenant = DEFAULT_TENANT } = values
    if (sub === 'create' && !url) {
      console.error('webhooks create needs --url')
      return 2
    }
    const output = await withDatabase(async (db, { config }) => {
      const store = createWebhookStore({ sql: db.sql, kek: requireKeyEncryptionKey(config) })
      if (sub === 'create') {
        // The same rule as POST /v1/webhooks: refused here, not dead at the first delivery.
        createDestinations({ allowedCidrs: config.webhookAllowedCidrs }).checkUrl(url as string)
        const eventTypes = (events ?? '').split(',').filter(Boolean)
        const { webhook, secret } = await store.create(
          onlyTenant(tenant),
          { url: url as string, event_types: eventTypes },
          new Date(),
        )
        console.error(
          `created ${webhook.id} (tenant ${webhook.tenant_id}); the signing secret is shown only this once:`,
        )
        return [secret]
      }
      if (sub === 'delete') {
        await store.remove(EVERY_TENANT, arg as string)
        return [`deleted ${arg}`]
      }
      const webhooks = await store.list(EVERY_TENANT)
      if (json) return [jsonText(WebhooksReply, { webhooks })]
      return webhooks.map(
        (w) =>
          `${w.id}\t${w.url}\t${w.event_types.join(',') || '*'}\t${w.enabled ? 'enabled' : 'disabled'}\t${w.tenant_id}`,
      )
    })
    for (const line of output) console.log(line)
    return 0
  }
  if (command === 'tenants' && (sub === 'create' || sub === 'list' || (sub === 'update' && arg))) {
    const { settings, error } = parseSettings(values.settings)
    const given = {
      ...(values.name !== undefined && { name: values.name }),
      ...(settings !== undefined && { settings }),
    }
    // The same rules as POST and PATCH /v1/tenants, checked before the database is opened.
    let problem = error ?? null
    if (!problem && sub === 'create')
      problem =
        !values.id || !values.name ? 'needs --id and --name' : invalid(NewTenant, { id: values.id, ...given })
    if (!problem && sub === 'update')
      problem = Object.keys(given).length === 0 ? 'needs --name or --settings' : invalid(TenantChange, given)
    if (problem) {
      console.error(`tenants ${sub}: ${problem}`)
      return 2
    }
    const tenants = await withDatabase(async (db, { config, log }) => {
      const store = createTenantStore({ sql: db.sql, clock: systemClock, config, log })
      if (sub === 'create') return [await store.create({ id: values.id, ...given } as NewTenant)]
      if (sub === 'update') return [await store.update(arg as string, given as TenantChange)]
      return store.list()
    })
    if (json && sub === 'list') printJson(TenantsReply, { tenants })
    else for (const tenant of tenants) console.log(tenantLine(tenant))
    return 0
  }
  if (command === 'keys' && (sub === 'rotate-signing' || sub === 'signing')) {
    const keys = await withDatabase(async (db, { config, log }) => {
      const kek = requireKeyEncryptionKey(config)
      const signing = createSigningKeys({ sql: db.sql, clock: systemClock, kek, config, log })
      if (sub === 'rotate-signing') await signing.rotateNow()
      return signing.list()
    })
    if (sub === 'rotate-signing')
      console.error('a new signing key is current; replicas sign with it within SIGNING_KEY_RELOAD_MS')
    if (json) {
      printJson(SigningKeysReply, { keys })
      return 0
    }
    for (const k of keys) {
      const state = k.current
        ? 'current'
        : k.publish_until
          ? `published until ${k.publish_until.toISOString()}`
          : 'retired'
      console.log(`${k.kid}\t${k.alg}\t${k.created_at.toISOString()}\t${state}`)
    }
    return 0
  }
  console.error(USAGE)
  return 2
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (err: unknown) => {
    // A bad setting or a refused command is one line, not a stack trace.
    const message = err instanceof Error ? err.message : String(err)
    console.error(err instanceof ConfigError ? message : `session-authority: ${message}`)
    process.exitCode = 1
  },
)
