import type { Sql } from '../db/connect.ts'

/**
 * Whose data a call may see and change. Every store call that reads or
 * changes a tenant's data takes one, so a route cannot forget the tenant: it
 * has no call to make without it.
 */
export interface Tenancy {
  /** The tenant what the call creates belongs to (sessions, API keys, subscriptions). */
  tenant: string
  /** The tenants whose data it may see and change: its own (or a gateway's list), or every one. */
  sees: readonly string[] | '*'
  /** Who acts, recorded with the events the call leaves (an operator in the admin console). */
  actor?: Actor
}

/** An operator of the admin console: the name they gave, the admin key they signed in with, their console session. */
export interface Actor {
  via: 'console'
  operator: string
  key_id: string
  session_id: string
}

/** What an event records of who acted: nothing for an API key's call (its key is not recorded yet). */
export function actorOf(who: Tenancy): { actor?: Actor } {
  return who.actor ? { actor: who.actor } : {}
}

/** The tenant every install starts with; existing data belongs to it. */
export const DEFAULT_TENANT = 'default'

/** Tenant ids: short, lower case, safe in a URL and a header. */
export const TENANT_ID_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$'

/** The service's own work (purge, the cache's fresh reads of a row already checked): every tenant. */
export const EVERY_TENANT: Tenancy = { tenant: DEFAULT_TENANT, sees: '*' }

/** One tenant's view. */
export const onlyTenant = (tenant: string): Tenancy => ({ tenant, sees: [tenant] })

/**
 * The one tenant a user id is looked up in: user ids are per tenant, so a call
 * keyed by one acts in the caller's tenant (for a platform key, the one it
 * names in x-tenant-id, or its own), never across tenants.
 */
export function userTenancy(who: Tenancy): Tenancy {
  return who.sees === '*' ? onlyTenant(who.tenant) : who
}

/** May `who` see data of `tenantId`? */
export function sees(who: Tenancy, tenantId: string): boolean {
  return who.sees === '*' || who.sees.includes(tenantId)
}

/** The SQL condition every store puts on a tenant's rows: those of the tenants `who` sees. */
export function visibleTo(sql: Sql, who: Tenancy) {
  return who.sees === '*' ? sql`true` : sql`tenant_id = any(${who.sees})`
}
