import { type Static, Type } from '@sinclair/typebox'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { Sql } from '../db/connect.ts'
import { newestFirst, type PageRequest, type Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import type { Log } from '../logger.ts'
import { Text, Timestamp } from '../schemas.ts'
import { DriftPolicy, LimitAction } from '../sessions/model.ts'
import { TENANT_ID_PATTERN } from './tenancy.ts'

/** The settings a tenant may override; each one's global default is the setting named beside it. */
const OVERRIDES = {
  idle_timeout: 'idleTimeoutSeconds',
  absolute_lifetime: 'absoluteLifetimeSeconds',
  ua_drift_policy: 'uaDriftPolicy',
  ip_drift_policy: 'ipDriftPolicy',
  ipv4_drift_prefix: 'ipv4DriftPrefix',
  ipv6_drift_prefix: 'ipv6DriftPrefix',
  max_sessions_per_user: 'maxSessionsPerUser',
  session_limit_action: 'sessionLimitAction',
  logout_all_on_logout: 'logoutAllOnLogout',
  new_device_window_days: 'newDeviceWindowDays',
  new_device_by_network: 'newDeviceByNetwork',
} as const satisfies Record<string, keyof Config>

/**
 * The policy a tenant's sessions follow: the global settings, with the tenant's overrides; and the
 * origins whose pages may call the self-service API (SELF_SERVICE_ORIGINS and the tenant's own).
 */
export type Policy = Pick<Config, (typeof OVERRIDES)[keyof typeof OVERRIDES]> & {
  selfServiceOrigins: readonly string[]
}

/** An origin as browsers send it: scheme, host and port, nothing else. */
const Origin = Type.String({ pattern: '^https?://[^/\\s]+$', maxLength: 256 })

/** The origins of a comma-separated list (SELF_SERVICE_ORIGINS), lower-cased as browsers send them. */
const originsOf = (list: string | undefined) =>
  list ? list.split(',').map((o) => o.trim().toLowerCase()) : []

const Seconds = Type.Integer({ minimum: 1, maximum: 31_536_000 })

/** A tenant's overrides of the global settings; one left out follows the global one. */
export const TenantSettings = Type.Object(
  {
    idle_timeout: Type.Optional(Seconds),
    absolute_lifetime: Type.Optional(Seconds),
    ua_drift_policy: Type.Optional(DriftPolicy),
    ip_drift_policy: Type.Optional(DriftPolicy),
    ipv4_drift_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 32 })),
    ipv6_drift_prefix: Type.Optional(Type.Integer({ minimum: 0, maximum: 128 })),
    max_sessions_per_user: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
    session_limit_action: Type.Optional(LimitAction),
    logout_all_on_logout: Type.Optional(Type.Boolean()),
    new_device_window_days: Type.Optional(Type.Integer({ minimum: 0, maximum: 365 })),
    new_device_by_network: Type.Optional(Type.Boolean()),
    self_service_origins: Type.Optional(
      Type.Array(Origin, {
        maxItems: 50,
        description: 'Origins whose pages may call /v1/me from the browser, besides SELF_SERVICE_ORIGINS',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Overrides of IDLE_TIMEOUT_SECONDS, ABSOLUTE_LIFETIME_SECONDS, UA_DRIFT_POLICY, IP_DRIFT_POLICY, IPV4_DRIFT_PREFIX, IPV6_DRIFT_PREFIX, MAX_SESSIONS_PER_USER, SESSION_LIMIT_ACTION, LOGOUT_ALL_ON_LOGOUT, NEW_DEVICE_WINDOW_DAYS and NEW_DEVICE_BY_NETWORK for this tenant, and origins added to SELF_SERVICE_ORIGINS',
  },
)
export type TenantSettings = Static<typeof TenantSettings>

export const TenantId = Type.String({
  pattern: TENANT_ID_PATTERN,
  description: 'Lower case, digits, - and _',
})

export const Tenant = Type.Object(
  {
    id: TenantId,
    name: Type.String(),
    settings: TenantSettings,
    created_at: Timestamp(),
    updated_at: Timestamp(),
  },
  { title: 'Tenant' },
)
export type Tenant = Static<typeof Tenant>

export const NewTenant = Type.Object(
  { id: TenantId, name: Text({ maxLength: 100 }), settings: Type.Optional(TenantSettings) },
  { additionalProperties: false },
)
export type NewTenant = Static<typeof NewTenant>

/** A change of a tenant: a new name, and/or its overrides, which replace the old ones whole. */
export const TenantChange = Type.Object(
  { name: Type.Optional(Text({ maxLength: 100 })), settings: Type.Optional(TenantSettings) },
  { additionalProperties: false },
)
export type TenantChange = Static<typeof TenantChange>

const COLUMNS = 'id, name, settings, created_at, updated_at'

/**
 * The tenants and the policy each one's sessions follow. Every replica keeps
 * the policies in memory (a lookup per check) and rereads them every
 * TENANT_RELOAD_MS; a change made through this replica applies here at once.
 */
export function createTenantStore({
  sql,
  clock,
  config,
  log,
}: {
  sql: Sql
  clock: Clock
  config: Config
  log: Log
}) {
  const columns = sql.unsafe(COLUMNS)
  const globalOrigins = originsOf(config.selfServiceOrigins)
  const defaults: Policy = {
    ...(Object.fromEntries(Object.values(OVERRIDES).map((key) => [key, config[key]])) as unknown as Policy),
    selfServiceOrigins: globalOrigins,
  }
  let policies = new Map<string, Policy>()
  let timer: NodeJS.Timeout | undefined

  function policyOf(settings: TenantSettings): Policy {
    const policy: Record<string, unknown> = { ...defaults }
    for (const [name, key] of Object.entries(OVERRIDES)) {
      const value = settings[name as keyof TenantSettings]
      if (value !== undefined) policy[key] = value
    }
    const own = (settings.self_service_origins ?? []).map((o) => o.toLowerCase())
    policy.selfServiceOrigins = [...globalOrigins, ...own]
    return policy as unknown as Policy
  }

  let lastUnknownReload = 0

  /**
   * The policy of a tenant's sessions. A tenant this replica does not know yet
   * (just created on another) follows the global one until the reread this
   * asks for, at most once a second, rather than waiting for TENANT_RELOAD_MS.
   */
  function policy(tenantId: string): Policy {
    const known = policies.get(tenantId)
    if (known) return known
    const now = Date.now()
    if (now - lastUnknownReload >= 1000) {
      lastUnknownReload = now
      load().catch((err: unknown) => log.warn({ err }, 'could not reload the tenants'))
    }
    return defaults
  }

  /** Every tenant, oldest first: what the policies are loaded from (and the CLI's list). */
  async function list(): Promise<Tenant[]> {
    return sql<Tenant[]>`select ${columns} from tenants order by created_at, id`
  }

  /** A page of the tenants, newest first. */
  async function listPage(page: PageRequest): Promise<Positioned<Tenant>[]> {
    const { positionAt, after, orderAndLimit } = newestFirst(sql, page)
    return sql<Positioned<Tenant>[]>`
      select ${columns}, ${positionAt} from tenants where ${after} ${orderAndLimit}`
  }

  // A reread that began before a later one, or before a change made here, must not undo it.
  let changes = 0
  let loadsStarted = 0
  let loadApplied = 0

  async function load(): Promise<void> {
    const seq = ++loadsStarted
    const changesBefore = changes
    const next = new Map<string, Policy>()
    for (const tenant of await list()) next.set(tenant.id, policyOf(tenant.settings))
    if (seq < loadApplied || changes !== changesBefore) return
    loadApplied = seq
    policies = next
  }

  /**
   * The policy a new session of a tenant gets: as policy(), but a tenant this
   * replica does not know yet (created on another) is read first, so its
   * lifetimes and limit are never replaced by the global ones.
   */
  async function loginPolicy(tenantId: string): Promise<Policy> {
    const known = policies.get(tenantId)
    if (known) return known
    await load()
    return policies.get(tenantId) ?? defaults
  }

  async function get(id: string): Promise<Tenant> {
    const [tenant] = await sql<Tenant[]>`select ${columns} from tenants where id = ${id}`
    if (!tenant) throw new Errors.TENANT_NOT_FOUND(id)
    return tenant
  }

  async function create(input: NewTenant): Promise<Tenant> {
    const now = new Date(clock.now())
    const [tenant] = await sql<Tenant[]>`
      insert into tenants (id, name, settings, created_at, updated_at)
      values (${input.id}, ${input.name}, ${sql.json((input.settings ?? {}) as never)}, ${now}, ${now})
      on conflict (id) do nothing
      returning ${columns}`
    if (!tenant) throw new Errors.TENANT_EXISTS(input.id)
    changes++
    policies.set(tenant.id, policyOf(tenant.settings))
    return tenant
  }

  async function update(id: string, change: TenantChange): Promise<Tenant> {
    const [tenant] = await sql<Tenant[]>`
      update tenants set name = coalesce(${change.name ?? null}, name),
        settings = coalesce(${change.settings ? sql.json(change.settings as never) : null}::jsonb, settings),
        updated_at = ${new Date(clock.now())}
      where id = ${id}
      returning ${columns}`
    if (!tenant) throw new Errors.TENANT_NOT_FOUND(id)
    changes++
    policies.set(tenant.id, policyOf(tenant.settings))
    return tenant
  }

  /** Loads the policies, then rereads them every TENANT_RELOAD_MS until close(). */
  async function start(): Promise<void> {
    await load()
    timer = setInterval(() => {
      load().catch((err: unknown) => log.warn({ err }, 'could not reload the tenants'))
    }, config.tenantReloadMs)
    timer.unref()
  }

  function close() {
    clearInterval(timer)
  }

  /**
   * Whether some tenant's pages (or every tenant's, by SELF_SERVICE_ORIGINS) may call the
   * self-service API from this origin: what a CORS preflight, which carries no credentials, can know.
   */
  function someTenantAllowsOrigin(origin: string): boolean {
    const wanted = origin.toLowerCase()
    if (globalOrigins.includes(wanted)) return true
    for (const policy of policies.values()) if (policy.selfServiceOrigins.includes(wanted)) return true
    return false
  }

  return { policy, loginPolicy, list, listPage, get, create, update, start, close, someTenantAllowsOrigin }
}

export type TenantStore = ReturnType<typeof createTenantStore>
