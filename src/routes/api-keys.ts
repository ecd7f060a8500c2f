import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { ApiKey, type ApiKeyStore, Scope } from '../api-keys/api-keys.ts'
import { Errors } from '../errors.ts'
import { Text, withErrors } from '../schemas.ts'
import { TenantId } from '../tenants/store.ts'
import { sees } from '../tenants/tenancy.ts'
import { NewestFirstQuery, nextPositionCursor, pageReply, pageRequest } from './paging.ts'

const tags = ['api keys']

const CreateApiKeyBody = Type.Object(
  {
    name: Text({ maxLength: 100 }),
    scopes: Type.Array(Scope, { minItems: 1, uniqueItems: true }),
    tenant_id: Type.Optional({
      ...TenantId,
      description:
        "The tenant the key acts for; by default the caller's (another one needs the platform scope)",
    }),
  },
  { additionalProperties: false },
)

const apiKeyRoutes: FastifyPluginAsyncTypebox<{ keys: ApiKeyStore }> = async (app, { keys }) => {
  const config = { scope: 'admin' as const }

  app.post(
    '/v1/api-keys',
    {
      config,
      schema: {
        operationId: 'createApiKey',
        tags,
        summary: 'Create an API key; the key is shown once',
        body: CreateApiKeyBody,
        response: withErrors({ 201: Type.Object({ key: Type.String(), api_key: ApiKey }) }),
      },
    },
    async (request, reply) => {
      const { name, scopes, tenant_id: tenant = request.tenancy.tenant } = request.body
      if (!sees(request.tenancy, tenant)) throw new Errors.TENANT_NOT_FOUND(tenant)
      // A tenant's admin makes keys of its tenant, never one that spans tenants.
      if (scopes.includes('platform') && !request.caller?.scopes.includes('platform')) {
        throw new Errors.FORBIDDEN('platform')
      }
      const { key, apiKey } = await keys.create(tenant, name, scopes)
      return reply.code(201).send({ key, api_key: apiKey })
    },
  )

  app.get(
    '/v1/api-keys',
    {
      config,
      schema: {
        operationId: 'listApiKeys',
        tags,
        summary: 'List API keys (never the keys themselves), newest first, a page at a time',
        querystring: NewestFirstQuery,
        response: withErrors({ 200: pageReply({ api_keys: Type.Array(ApiKey) }) }),
      },
    },
    async (request) => {
      const page = pageRequest(request.query)
      const rows = await keys.listPage(request.tenancy, page)
      return { api_keys: rows, next_cursor: nextPositionCursor(rows, page, (row) => row.id) }
    },
  )

  app.delete(
    '/v1/api-keys/:id',
    {
      config,
      schema: {
        operationId: 'revokeApiKey',
        tags,
        summary: 'Revoke an API key (idempotent)',
        params: Type.Object({ id: Text({ maxLength: 64 }) }),
        response: withErrors({ 200: ApiKey }),
      },
    },
    async (request) => keys.revoke(request.tenancy, request.params.id),
  )
}

export default apiKeyRoutes
