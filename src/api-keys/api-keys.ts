import { hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { type Static, Type } from '@sinclair/typebox'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import type { Sql } from '../db/connect.ts'
import { newestFirst, type PageRequest, type Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import { Nullable, Timestamp } from '../schemas.ts'
import { DEFAULT_TENANT, type Tenancy, visibleTo } from '../tenants/tenancy.ts'

export const SCOPES = ['introspect', 'sessions:read', 'sessions:write', 'admin', 'platform'] as const
export const Scope = Type.Union(SCOPES.map((s) => Type.Literal(s)))
export type Scope = (typeof SCOPES)[number]

/** Generated keys start with this, so secret scanners can spot leaked ones. */
export const API_KEY_PREFIX = 'sak_'

/** The id of the key seeded from ADMIN_API_KEY. */
export const ENV_ADMIN_KEY_ID = 'env-admin'

/** An API key as stored and shown (never the key itself: only its hash is kept). */
export const ApiKey = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    tenant_id: Type.String({ description: 'The tenant the key belongs to and acts for' }),
    scopes: Type.Array(Scope),
    created_at: Timestamp(),
    revoked_at: Nullable(Timestamp()),
  },
  { title: 'ApiKey' },
)
export type ApiKey = Static<typeof ApiKey>

export interface Caller {
  keyId: string
  scopes: Scope[]
  /** The tenant the key belongs to: the only one whose data it sees, unless it has the platform scope. */
  tenantId: string
}

function hashKey(key: string): Buffer {
  return hash('sha256', key, 'buffer')
}

/**
 * Names one key's secret, not its id: a replaced ADMIN_API_KEY keeps the id `env-admin`, but not this.
 * A hash of the stored hash, so it can be shown (console sessions keep it in their metadata).
 */
export function fingerprintOf(key: string): string {
  return fingerprintOfHash(hashKey(key))
}

function fingerprintOfHash(keyHash: Buffer): string {
  return hash('sha256', keyHash, 'base64url').slice(0, 22)
}

/**
 * Does a caller with these scopes pass a route that needs `scope`? A tenant's
 * admin passes every route of its tenant; platform passes every route, the
 * tenants' own included.
 */
export function allows(scopes: readonly Scope[], scope: Scope): boolean {
  if (scopes.includes(scope) || scopes.includes('platform')) return true
  return scope !== 'platform' && scopes.includes('admin')
}

const KEY_COLUMNS = 'id, name, tenant_id, scopes, created_at, revoked_at'

/**
 * API keys of the callers (backends, gateways). Keys are stored as SHA-256
 * hashes: they are 256-bit random strings, so a slow hash would add nothing but
 * latency. Verified keys are remembered for `cacheTtlMs`, so a revoked key can
 * keep working on another replica for at most that long.
 */
export function createApiKeyStore({
  sql,
  clock,
  cacheTtlMs,
}: {
  sql: Sql
  clock: Clock
  cacheTtlMs: number
}) {
  const verified =
    cacheTtlMs > 0 ? new LRUCache<string, { caller: Caller | null }>({ max: 10_000, ttl: cacheTtlMs }) : null
  // Hashes of keys this replica has seen valid (at start or since): only real keys get in, so a
  // guesser never does. Their holders pass a block on failed authentications (see caller-auth).
  const seenValid = new Set<string>()
  // Good keys by their text (see recall): a guesser's keys never get in, so it stays small.
  const recentlyGood = cacheTtlMs > 0 ? new LRUCache<string, Caller>({ max: 1000, ttl: cacheTtlMs }) : null

  const columns = sql.unsafe(KEY_COLUMNS)

  /** A new key of `tenant` (which must exist: TENANT_NOT_FOUND otherwise). */
  async function create(
    tenant: string,
    name: string,
    scopes: Scope[],
  ): Promise<{ key: string; apiKey: ApiKey }> {
    const id = `key_${randomBytes(8).toString('hex')}`
    const key = API_KEY_PREFIX + randomBytes(32).toString('base64url')
    const [apiKey] = await sql<ApiKey[]>`
      insert into api_keys (id, name, tenant_id, key_hash, scopes, created_at)
      select ${id}, ${name}, id, ${hashKey(key)}, ${scopes}, ${new Date(clock.now())} from tenants where id = ${tenant}
      returning ${columns}`
    if (!apiKey) throw new Errors.TENANT_NOT_FOUND(tenant)
    seenValid.add(hashKey(key).toString('base64'))
    return { key, apiKey: apiKey as ApiKey }
  }

  /**
   * Makes ADMIN_API_KEY the one admin key it names, or disables that key when the
   * variable is unset. A revoked value stays revoked ('revoked': the variable
   * seeds nothing), and a replaced one is kept revoked under an id of its own,
   * so neither comes back with a restart or a rolled-back deployment.
   */
  async function seedEnvAdmin(key: string | undefined): Promise<'seeded' | 'revoked' | 'unset'> {
    const now = new Date(clock.now())
    if (key === undefined) {
      await sql`update api_keys set revoked_at = ${now} where id = ${ENV_ADMIN_KEY_ID} and revoked_at is null`
      return 'unset'
    }
    const keyHash = hashKey(key)
    return sql.begin(async (tx) => {
      const retiredId = `${ENV_ADMIN_KEY_ID}-replaced-${randomBytes(4).toString('hex')}`
      await tx`
        update api_keys set id = ${retiredId}, name = 'ADMIN_API_KEY (replaced)', revoked_at = coalesce(revoked_at, ${now})
        where id = ${ENV_ADMIN_KEY_ID} and key_hash <> ${keyHash}`
      const [revoked] =
        await tx`select 1 from api_keys where key_hash = ${keyHash} and revoked_at is not null`
      if (revoked) return 'revoked'
      // The operator's key: platform, so it also manages tenants (it belongs to the default one).
      await tx`
        insert into api_keys (id, name, tenant_id, key_hash, scopes, created_at)
        values (${ENV_ADMIN_KEY_ID}, 'ADMIN_API_KEY', ${DEFAULT_TENANT}, ${keyHash}, ${['admin', 'platform']}, ${now})
        on conflict (id) do update set scopes = excluded.scopes, tenant_id = excluded.tenant_id`
      return 'seeded' as const
    })
  }

  /** Learns the keys that are valid now, so their holders pass a block decided before this replica saw them. */
  async function loadValid(): Promise<void> {
    const rows = await sql<{ key_hash: Buffer }[]>`select key_hash from api_keys where revoked_at is null`
    for (const row of rows) seenValid.add(row.key_hash.toString('base64'))
  }

  /** Has this replica seen this key valid? (It may have been revoked since: verify() still decides.) */
  function seenAsValid(key: string): boolean {
    return seenValid.has(hashKey(key).toString('base64'))
  }

  /** Every key `who` sees, oldest first (the CLI's list). */
  async function list(who: Tenancy): Promise<ApiKey[]> {
    return sql<ApiKey[]>`select ${columns} from api_keys where ${visibleTo(sql, who)} order by created_at, id`
  }

  /** A page of the keys `who` sees, newest first. */
  async function listPage(who: Tenancy, page: PageRequest): Promise<Positioned<ApiKey>[]> {
    const { positionAt, after, orderAndLimit } = newestFirst(sql, page)
    return sql<Positioned<ApiKey>[]>`
      select ${columns}, ${positionAt} from api_keys where ${visibleTo(sql, who)} and ${after} ${orderAndLimit}`
  }

  /** Revokes a key `who` sees; a platform key only when `who` sees every tenant (an operator). */
  async function revoke(who: Tenancy, id: string): Promise<ApiKey> {
    const [row] = await sql<ApiKey[]>`
      update api_keys set revoked_at = coalesce(revoked_at, ${new Date(clock.now())})
      where id = ${id} and ${visibleTo(sql, who)} and (${who.sees === '*'} or not ('platform' = any(scopes)))
      returning ${columns}`
    if (!row) throw new Errors.API_KEY_NOT_FOUND(id)
    verified?.clear()
    recentlyGood?.clear()
    return row
  }

  /**
   * What a recent verify() said of this key, without asking Postgres; undefined when it does not know.
   * A good key is recalled by its own text, not hashed again on every request: the callers' few keys
   * are held here, as they arrive in every request anyway, for at most the cache's lifetime.
   */
  function recall(key: string): Caller | null | undefined {
    const good = recentlyGood?.get(key)
    if (good) return good
    return verified?.get(hashKey(key).toString('base64'))?.caller
  }

  /** The caller a presented key belongs to, or null for an unknown or revoked key. */
  async function verify(key: string): Promise<Caller | null> {
    const hash = hashKey(key)
    const known = verified?.get(hash.toString('base64'))
    if (known) return known.caller
    const [row] = await sql<{ id: string; key_hash: Buffer; scopes: Scope[]; tenant_id: string }[]>`
      select id, key_hash, scopes, tenant_id from api_keys where key_hash = ${hash} and revoked_at is null`
    const caller =
      row && timingSafeEqual(row.key_hash, hash)
        ? { keyId: row.id, scopes: row.scopes, tenantId: row.tenant_id }
        : null
    verified?.set(hash.toString('base64'), { caller })
    if (caller) recentlyGood?.set(key, caller)
    if (caller) seenValid.add(hash.toString('base64'))
    else seenValid.delete(hash.toString('base64'))
    return caller
  }

  /** The caller of a key by its id, as Postgres says now: null once it is revoked (the admin console's check). */
  async function findLive(id: string): Promise<(Caller & { name: string; fingerprint: string }) | null> {
    const [row] = await sql<
      { id: string; name: string; scopes: Scope[]; tenant_id: string; key_hash: Buffer }[]
    >`
      select id, name, scopes, tenant_id, key_hash from api_keys where id = ${id} and revoked_at is null`
    return row
      ? {
          keyId: row.id,
          name: row.name,
          scopes: row.scopes,
          tenantId: row.tenant_id,
          fingerprint: fingerprintOfHash(row.key_hash),
        }
      : null
  }

  return { create, seedEnvAdmin, list, listPage, revoke, recall, verify, findLive, loadValid, seenAsValid }
}

export type ApiKeyStore = ReturnType<typeof createApiKeyStore>
