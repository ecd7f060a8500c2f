import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { withErrors } from '../schemas.ts'
import { NewTenant, Tenant, TenantChange, TenantId, type TenantStore } from '../tenants/store.ts'
import { NewestFirstQuery, nextPositionCursor, pageReply, pageRequest } from './paging.ts'

const tags = ['tenants']
const TenantParams = Type.Object({ id: TenantId })

/** Creating and changing tenants: the platform operator's (scope platform). */
const tenantRoutes: FastifyPluginAsyncTypebox<{ tenants: TenantStore }> = async (app, { tenants }) => {
  const config = { scope: 'platform' as const }

  app.post(
    '/v1/tenants',
    {
      config,
      schema: {
        operationId: 'createTenant',
        tags,
        summary: 'Create a tenant, with overrides of the global settings if any',
        body: NewTenant,
        response: withErrors({ 201: Tenant }),
      },
    },
    async (request, reply) => reply.code(201).send(await tenants.create(request.body)),
  )

  app.get(
    '/v1/tenants',
    {
      config,
      schema: {
        operationId: 'listTenants',
        tags,
        summary: 'List the tenants, newest first, a page at a time',
        querystring: NewestFirstQuery,
        response: withErrors({ 200: pageReply({ tenants: Type.Array(Tenant) }) }),
      },
    },
    async (request) => {
      const page = pageRequest(request.query)
      const rows = await tenants.listPage(page)
      return { tenants: rows, next_cursor: nextPositionCursor(rows, page, (row) => row.id) }
    },
  )

  app.get(
    '/v1/tenants/:id',
    {
      config,
      schema: {
        operationId: 'getTenant',
        tags,
        summary: 'One tenant',
        params: TenantParams,
        response: withErrors({ 200: Tenant }),
      },
    },
    async (request) => tenants.get(request.params.id),
  )

  app.patch(
    '/v1/tenants/:id',
    {
      config,
      schema: {
        operationId: 'updateTenant',
        tags,
        summary:
          'Rename a tenant and/or replace its overrides (every replica applies them within TENANT_RELOAD_MS)',
        params: TenantParams,
        body: TenantChange,
        response: withErrors({ 200: Tenant }),
      },
    },
    async (request) => tenants.update(request.params.id, request.body),
  )
}

export default tenantRoutes
