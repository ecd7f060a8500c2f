import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { ApiKey, type ApiKeyStore, Scope } from '../api-keys/api-keys.ts'
import { Text, withErrors } from '../schemas.ts'

const tags = ['api keys']

const CreateApiKeyBody = Type.Object(
  { name: Text({ maxLength: 100 }), scopes: Type.Array(Scope, { minItems: 1, uniqueItems: true }) },
  { additionalProperties: false },
)

const apiKeyRoutes: FastifyPluginAsyncTypebox<{ keys: ApiKeyStore }> = async (app, { keys }) => {
  const config = { scope: 'admin' as const }

  app.post(
    '/v1/api-keys',
    {
      config,
      schema: {
        tags,
        summary: 'Create an API key; the key is shown once',
        body: CreateApiKeyBody,
        response: withErrors({ 201: Type.Object({ key: Type.String(), api_key: ApiKey }) }),
      },
    },
    async (request, reply) => {
      const { key, apiKey } = await keys.create(request.body.name, request.body.scopes)
      return reply.code(201).send({ key, api_key: apiKey })
    },
  )

  app.get(
    '/v1/api-keys',
    {
      config,
      schema: {
        tags,
        summary: 'List API keys (never the keys themselves)',
        response: withErrors({ 200: Type.Object({ api_keys: Type.Array(ApiKey) }) }),
      },
    },
    async () => ({ api_keys: await keys.list() }),
  )

  app.delete(
    '/v1/api-keys/:id',
    {
      config,
      schema: {
        tags,
        summary: 'Revoke an API key (idempotent)',
        params: Type.Object({ id: Text({ maxLength: 64 }) }),
        response: withErrors({ 200: ApiKey }),
      },
    },
    async (request) => keys.revoke(request.params.id),
  )
}

export default apiKeyRoutes
