import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply } from 'fastify'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withErrors } from '../schemas.ts'
import type { SessionService } from '../sessions/service.ts'
import { createDestinations } from '../webhooks/destination.ts'
import {
  Delivery,
  DeliveryStatus,
  NewWebhook,
  Webhook,
  WebhookChange,
  type WebhookStore,
} from '../webhooks/store.ts'
import {
  beforeAlias,
  cursorOf,
  IdCursor,
  NewestFirstQuery,
  nextCursor,
  nextPositionCursor,
  pageQuery,
  pageReply,
  pageRequest,
} from './paging.ts'
import { AllEventsQuery, EventsReply, eventsPage } from './session-views.ts'

const tags = ['webhooks']

const WebhookParams = Type.Object({ id: Type.String({ pattern: '^wh_[0-9a-f]{16}$' }) })
const DeliveryParams = Type.Object({ delivery_id: Type.String({ pattern: '^[0-9]{1,18}$' }) })

/**
 * Webhook subscriptions and their deliveries, and the whole event history, of
 * the caller's tenant (scope admin): another tenant's are not found.
 */
const webhookRoutes: FastifyPluginAsyncTypebox<{
  store: WebhookStore
  sessions: SessionService
  clock: Clock
  config: Pick<Config, 'webhookAllowedCidrs'>
}> = async (app, { store, sessions, clock, config }) => {
  const now = () => new Date(clock.now())
  const destinations = createDestinations({ allowedCidrs: config.webhookAllowedCidrs })
  /** A URL the dispatcher may POST to; refused at the door rather than dead later. */
  const checkUrl = (url: string | undefined) => {
    if (url !== undefined) destinations.checkUrl(url)
  }
  const admin = { scope: 'admin' as const }

  app.post(
    '/v1/webhooks',
    {
      config: admin,
      schema: {
        operationId: 'createWebhook',
        tags,
        summary:
          "Subscribe a URL to the session events of the caller's tenant; the signing secret is shown only in this answer",
        body: NewWebhook,
        response: withErrors({
          201: Type.Object({
            webhook: Webhook,
            secret: Type.String({
              description:
                'Standard Webhooks secret (whsec_…): verifies the webhook-signature header. Shown once.',
            }),
          }),
        }),
      },
    },
    async (request, reply) => {
      checkUrl(request.body.url)
      return reply.code(201).send(await store.create(request.tenancy, request.body, now()))
    },
  )

  app.get(
    '/v1/webhooks',
    {
      config: admin,
      schema: {
        operationId: 'listWebhooks',
        tags,
        summary: "The webhook subscriptions of the caller's tenant, newest first, a page at a time",
        querystring: NewestFirstQuery,
        response: withErrors({ 200: pageReply({ webhooks: Type.Array(Webhook) }) }),
      },
    },
    async (request) => {
      const page = pageRequest(request.query)
      const rows = await store.listPage(request.tenancy, page)
      return { webhooks: rows, next_cursor: nextPositionCursor(rows, page, (row) => row.id) }
    },
  )

  app.get(
    '/v1/webhooks/:id',
    {
      config: admin,
      schema: {
        operationId: 'getWebhook',
        tags,
        summary: 'One webhook subscription',
        params: WebhookParams,
        response: withErrors({ 200: Webhook }),
      },
    },
    async (request) => store.get(request.tenancy, request.params.id),
  )

  app.patch(
    '/v1/webhooks/:id',
    {
      config: admin,
      schema: {
        operationId: 'updateWebhook',
        tags,
        summary: 'Change a webhook subscription (URL, event types, enabled)',
        params: WebhookParams,
        body: WebhookChange,
        response: withErrors({ 200: Webhook }),
      },
    },
    async (request) => {
      checkUrl(request.body.url)
      return store.update(request.tenancy, request.params.id, request.body, now())
    },
  )

  app.delete(
    '/v1/webhooks/:id',
    {
      config: admin,
      schema: {
        operationId: 'deleteWebhook',
        tags,
        summary: 'Delete a webhook subscription and its deliveries',
        params: WebhookParams,
        response: withErrors({ 204: Type.Unsafe<undefined>({ description: 'Deleted' }) }),
      },
    },
    async (request, reply) => {
      await store.remove(request.tenancy, request.params.id)
      return (reply as FastifyReply).code(204).send()
    },
  )

  app.get(
    '/v1/webhooks/:id/deliveries',
    {
      config: admin,
      schema: {
        operationId: 'listWebhookDeliveries',
        tags,
        summary: "A webhook's deliveries, newest first",
        params: WebhookParams,
        querystring: Type.Object(
          {
            status: Type.Optional(DeliveryStatus),
            ...pageQuery({ default: 50, maximum: 200 }, IdCursor),
            before: beforeAlias(IdCursor),
          },
          { additionalProperties: false },
        ),
        response: withErrors({ 200: pageReply({ deliveries: Type.Array(Delivery) }) }),
      },
    },
    async (request) => {
      const { status = null, limit = 50 } = request.query
      const deliveries = await store.listDeliveries(request.tenancy, request.params.id, {
        status,
        limit,
        before: cursorOf(request.query),
      })
      return { deliveries, next_cursor: nextCursor(deliveries, limit, (last) => last.id) }
    },
  )

  app.post(
    '/v1/webhooks/deliveries/:delivery_id/retry',
    {
      config: admin,
      schema: {
        operationId: 'retryWebhookDelivery',
        tags,
        summary: 'Send a delivery again from the first attempt (a dead one, typically)',
        params: DeliveryParams,
        response: withErrors({ 200: Delivery }),
      },
    },
    async (request) => store.retry(request.tenancy, request.params.delivery_id, now()),
  )

  app.get(
    '/v1/events',
    {
      config: admin,
      schema: {
        operationId: 'listEvents',
        tags: ['users'],
        summary: 'The session history of every user, newest first',
        querystring: AllEventsQuery,
        response: withErrors({ 200: EventsReply }),
      },
    },
    async (request) => eventsPage(sessions, request.tenancy, request.query),
  )
}

export default webhookRoutes
