import { randomBytes } from 'node:crypto'
import { type Static, Type } from '@sinclair/typebox'
import type { Sql } from '../db/connect.ts'
import { newestFirst, type PageRequest, type Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import { Nullable, Text, Timestamp } from '../schemas.ts'
import { type Tenancy, visibleTo } from '../tenants/tenancy.ts'

const WebhookUrl = Type.String({
  pattern: '^https?://',
  maxLength: 2048,
  description:
    'Where events are POSTed: http or https, no user:password@, a public address (or one WEBHOOK_ALLOWED_CIDRS lists)',
})
const EventTypes = Type.Array(Text({ maxLength: 64 }), {
  maxItems: 32,
  description: 'Event types to send, e.g. session.revoked; empty = all',
})

/** What a new subscription is made of (the URL is checked further by the destinations). */
export const NewWebhook = Type.Object(
  { url: WebhookUrl, event_types: Type.Optional(EventTypes), enabled: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
)
export type NewWebhook = Static<typeof NewWebhook>

/** A change to a subscription: any of its fields, the others kept. */
export const WebhookChange = Type.Object(
  {
    url: Type.Optional(WebhookUrl),
    event_types: Type.Optional(EventTypes),
    enabled: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)
export type WebhookChange = Static<typeof WebhookChange>

/** A subscription as stored and shown (never its secret). */
export const Webhook = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String({
      description: "The tenant the subscription belongs to: it receives that tenant's events only",
    }),
    url: Type.String(),
    event_types: Type.Array(Type.String()),
    enabled: Type.Boolean(),
    created_at: Timestamp(),
    updated_at: Timestamp(),
  },
  { title: 'Webhook' },
)
export type Webhook = Static<typeof Webhook>

export const DeliveryStatus = Type.Union([
  Type.Literal('pending'),
  Type.Literal('delivered'),
  Type.Literal('dead'),
])
export type DeliveryStatus = Static<typeof DeliveryStatus>

/** A delivery of one event to one subscription, as shown. */
export const Delivery = Type.Object(
  {
    id: Type.String(),
    event_id: Type.String(),
    event_type: Type.String(),
    status: DeliveryStatus,
    attempts: Type.Integer(),
    next_attempt_at: Timestamp(),
    last_status: Nullable(Type.Integer()),
    last_error: Nullable(Type.String()),
    created_at: Timestamp(),
    delivered_at: Nullable(Timestamp()),
  },
  { title: 'WebhookDelivery' },
)
export type Delivery = Static<typeof Delivery>

/** A delivery as a dispatcher claims it: with what to send and where. */
export interface ClaimedDelivery {
  id: string
  attempts: number
  claims: number
  subscription_id: string
  url: string
  secret: Buffer
  kek_id: string
  event_id: string
  type: string
  session_id: string
  user_id: string
  data: Record<string, unknown>
  event_created_at: Date
}

/** Standard Webhooks secrets: `whsec_` and the base64 of the key. */
export const SECRET_PREFIX = 'whsec_'

const WEBHOOK_COLUMNS = 'id, tenant_id, url, event_types, enabled, created_at, updated_at'

/**
 * All SQL of webhooks: subscriptions and their deliveries as a tenant's admin
 * sees them (every call takes the caller's Tenancy: another tenant's are not
 * found), and the delivery outbox of the dispatcher, which serves every tenant.
 */
export function createWebhookStore({ sql, kek }: { sql: Sql; kek: KeyEncryptionKey }) {
  const columns = sql.unsafe(WEBHOOK_COLUMNS)

  /**
   * A new subscription of `who.tenant` (which must exist: TENANT_NOT_FOUND
   * otherwise), and its signing secret: the only time the secret is shown.
   */
  async function create(
    who: Tenancy,
    input: NewWebhook,
    now: Date,
  ): Promise<{ webhook: Webhook; secret: string }> {
    const id = `wh_${randomBytes(8).toString('hex')}`
    const key = randomBytes(32)
    const [webhook] = await sql<Webhook[]>`
      insert into webhook_subscriptions (id, tenant_id, url, event_types, secret, kek_id, enabled, created_at, updated_at)
      select ${id}, id, ${input.url}, ${input.event_types ?? []}::text[], ${kek.seal(key, id)}, ${kek.id},
        ${input.enabled ?? true}, ${now}, ${now}
      from tenants where id = ${who.tenant}
      returning ${columns}`
    if (!webhook) throw new Errors.TENANT_NOT_FOUND(who.tenant)
    return { webhook, secret: SECRET_PREFIX + key.toString('base64') }
  }

  /** Every subscription `who` sees, oldest first (the CLI's list). */
  async function list(who: Tenancy): Promise<Webhook[]> {
    return sql<Webhook[]>`
      select ${columns} from webhook_subscriptions where ${visibleTo(sql, who)} order by created_at, id`
  }

  /** A page of the subscriptions `who` sees, newest first. */
  async function listPage(who: Tenancy, page: PageRequest): Promise<Positioned<Webhook>[]> {
    const { positionAt, after, orderAndLimit } = newestFirst(sql, page)
    return sql<Positioned<Webhook>[]>`
      select ${columns}, ${positionAt} from webhook_subscriptions
      where ${visibleTo(sql, who)} and ${after} ${orderAndLimit}`
  }

  async function get(who: Tenancy, id: string): Promise<Webhook> {
    const [webhook] = await sql<Webhook[]>`
      select ${columns} from webhook_subscriptions where id = ${id} and ${visibleTo(sql, who)}`
    if (!webhook) throw new Errors.WEBHOOK_NOT_FOUND(id)
    return webhook
  }

  async function update(who: Tenancy, id: string, change: WebhookChange, now: Date): Promise<Webhook> {
    const [webhook] = await sql<Webhook[]>`
      update webhook_subscriptions set
        url = coalesce(${change.url ?? null}, url),
        event_types = coalesce(${change.event_types ?? null}::text[], event_types),
        enabled = coalesce(${change.enabled ?? null}::boolean, enabled),
        updated_at = ${now}
      where id = ${id} and ${visibleTo(sql, who)}
      returning ${columns}`
    if (!webhook) throw new Errors.WEBHOOK_NOT_FOUND(id)
    return webhook
  }

  async function remove(who: Tenancy, id: string): Promise<void> {
    const result = await sql`delete from webhook_subscriptions where id = ${id} and ${visibleTo(sql, who)}`
    if (result.count === 0) throw new Errors.WEBHOOK_NOT_FOUND(id)
  }

  const deliveryColumns = sql`
    d.id::text as id, d.event_id::text as event_id, e.type as event_type, d.status, d.attempts, d.next_attempt_at,
    d.last_status, d.last_error, d.created_at, d.delivered_at`

  async function listDeliveries(
    who: Tenancy,
    subscriptionId: string,
    page: { status: DeliveryStatus | null; before: string | null; limit: number },
  ): Promise<Delivery[]> {
    await get(who, subscriptionId)
    return sql<Delivery[]>`
      select ${deliveryColumns}
      from webhook_deliveries d join session_events e on e.id = d.event_id
      where d.subscription_id = ${subscriptionId}
        and (${page.status}::text is null or d.status = ${page.status}::text)
        and (${page.before}::bigint is null or d.id < ${page.before}::bigint)
      order by d.id desc
      limit ${page.limit}`
  }

  /** Sends a delivery (of a subscription `who` sees) again from the start (a dead one, typically), due now. */
  async function retry(who: Tenancy, deliveryId: string, now: Date): Promise<Delivery> {
    const [delivery] = await sql<Delivery[]>`
      with changed as (
        update webhook_deliveries set status = 'pending', attempts = 0, last_error = null, delivered_at = null,
          -- Not while a dispatcher is sending it: never two at once.
          next_attempt_at = greatest(${now}::timestamptz, coalesce(leased_until, ${now}::timestamptz))
        where id = ${deliveryId}
          and subscription_id in (select id from webhook_subscriptions where ${visibleTo(sql, who)})
        returning *
      )
      select ${deliveryColumns} from changed d join session_events e on e.id = d.event_id`
    if (!delivery) throw new Errors.DELIVERY_NOT_FOUND(deliveryId)
    return delivery
  }

  /**
   * Claims up to `limit` due deliveries for this dispatcher: rows another one
   * holds are skipped (SKIP LOCKED), and each claimed row is leased (due again
   * only after `leaseUntil`), so no two dispatchers send one at the same time.
   */
  async function claim(now: Date, leaseUntil: Date, limit: number): Promise<ClaimedDelivery[]> {
    return sql<ClaimedDelivery[]>`
      with due as (
        select id from webhook_deliveries
        where status = 'pending' and next_attempt_at <= ${now}
        order by next_attempt_at, id
        limit ${limit}
        for update skip locked
      ), claimed as (
        update webhook_deliveries d set attempts = d.attempts + 1, claims = d.claims + 1,
          next_attempt_at = ${leaseUntil}, leased_until = ${leaseUntil}
        from due where d.id = due.id
        returning d.id, d.attempts, d.claims, d.subscription_id, d.event_id
      )
      select c.id::text as id, c.attempts, c.claims, c.subscription_id, s.url, s.secret, s.kek_id, c.event_id::text as event_id,
        e.type, e.session_id, e.user_id, e.data, e.created_at as event_created_at
      from claimed c
        join webhook_subscriptions s on s.id = c.subscription_id
        join session_events e on e.id = c.event_id
      order by c.id`
  }

  /**
   * Records an attempt's outcome, unless the delivery was claimed again
   * meanwhile (its lease ran out): then the newer attempt's outcome counts.
   */
  async function settle(
    claimed: Pick<ClaimedDelivery, 'id' | 'claims'>,
    outcome: {
      status: DeliveryStatus
      nextAttemptAt: Date
      lastStatus: number | null
      lastError: string | null
    },
    now: Date,
  ): Promise<void> {
    await sql`
      update webhook_deliveries set status = ${outcome.status}, next_attempt_at = ${outcome.nextAttemptAt},
        last_status = ${outcome.lastStatus}, last_error = ${outcome.lastError},
        delivered_at = ${outcome.status === 'delivered' ? now : null}, leased_until = null
      where id = ${claimed.id} and claims = ${claimed.claims} and status = 'pending'`
  }

  /** How many deliveries wait and how many were given up on. */
  async function backlog(): Promise<{ pending: number; dead: number }> {
    const rows = await sql<Array<{ status: DeliveryStatus; count: number }>>`
      select status, count(*)::int as count from webhook_deliveries where status in ('pending', 'dead') group by status`
    const of = (status: DeliveryStatus) => rows.find((r) => r.status === status)?.count ?? 0
    return { pending: of('pending'), dead: of('dead') }
  }

  return { create, list, listPage, get, update, remove, listDeliveries, retry, claim, settle, backlog }
}

export type WebhookStore = ReturnType<typeof createWebhookStore>
