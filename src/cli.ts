#!/usr/bin/env node

import { parseArgs } from 'node:util'
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import pino from 'pino'
import { createApiKeyStore, SCOPES, type Scope } from './api-keys/api-keys.ts'
import { systemClock } from './clock.ts'
import { type Config, ConfigError, loadConfig } from './config.ts'
import { connectDatabase } from './db/connect.ts'
import { migrate } from './db/migrate.ts'
import { requireKeyEncryptionKey } from './keys/key-encryption.ts'
import { createSigningKeys } from './keys/signing-keys.ts'
import { loggerOptions } from './logger.ts'
import { serve } from './server.ts'
import { purgeSessions } from './sessions/purge.ts'
import { createSessionRepository } from './sessions/repository.ts'
import { createTenantStore, NewTenant, type Tenant, TenantChange } from './tenants/store.ts'
import { DEFAULT_TENANT, EVERY_TENANT, onlyTenant } from './tenants/tenancy.ts'
import { createDestinations } from './webhooks/destination.ts'
import { createWebhookStore } from './webhooks/store.ts'

const USAGE = `usage: session-authority <command>

  serve                                   run the service (applies migrations unless MIGRATE_ON_START=false)
  migrate                                 apply pending database migrations and exit
  purge                                   mark overdue sessions expired, delete old ended sessions and events
  keys create --name N --scopes a,b [--tenant T]
                                          create an API key (of tenant T, by default: default) and print it once
                                          scopes: ${SCOPES.join(', ')}
  keys list                               list API keys (never the keys themselves)
  keys revoke <id>                        revoke an API key
  keys rotate-signing                     make a new JWT signing key current (tokens signed before stay valid)
  keys signing                            list the JWT signing keys (never a private key)
  webhooks create --url U [--events a,b] [--tenant T]
                                          subscribe a URL to the session events of tenant T (by default:
                                          default); prints the signing secret once
  webhooks list                           list webhook subscriptions of every tenant (never a secret)
  webhooks delete <id>                    delete a webhook subscription
  tenants create --id ID --name N [--settings JSON]
                                          create a tenant, with overrides of the global settings if any
  tenants list                            list the tenants: id, name, settings
  tenants update <id> [--name N] [--settings JSON]
                                          rename a tenant and/or replace its overrides whole
                                          (replicas apply them within TENANT_RELOAD_MS)

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

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
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
      help: { type: 'boolean', short: 'h' },
    },
  })
  const [command, sub, arg] = positionals
  if (values.help || !command) {
    console.log(USAGE)
    return command || values.help ? 0 : 2
  }
  if (command === 'serve') {
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
      `expired ${counts?.expired ?? 0}, deleted ${counts?.sessions_deleted ?? 0} sessions, deleted ${counts?.events_deleted ?? 0} events`,
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
      return (await store.list(EVERY_TENANT)).map(
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
    for (const tenant of tenants) console.log(tenantLine(tenant))
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
