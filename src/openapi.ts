import { isDeepStrictEqual } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { stringify } from 'yaml'
import type { OperationExamples } from './openapi-examples.ts'

/** The OpenAPI document of a built app, as the YAML committed in openapi.yaml (no anchors, stable). */
export function openapiYaml(app: FastifyInstance): string {
  return stringify(app.swagger(), { aliasDuplicateObjects: false, lineWidth: 0 })
}

type Json = unknown
type Schemas = Record<string, Json>

/**
 * Moves every schema that has a `title` into `components.schemas` under that title and leaves a `$ref`
 * where it was, so generated clients get named types (Session, Error, …). The route schemas stay
 * inline, as the validators and serialisers compile them; only the document is factored. Two different
 * schemas with one title are a mistake in the route schemas and stop the build of the document.
 */
export function nameTitledSchemas<T extends { components?: { schemas?: Schemas }; paths?: Json }>(
  document: T,
): T {
  const schemas: Schemas = { ...document.components?.schemas }
  const hoist = (node: Json): Json => {
    if (Array.isArray(node)) return node.map(hoist)
    if (node === null || typeof node !== 'object') return node
    const entries = Object.entries(node).map(([key, value]) => [key, hoist(value)] as const)
    const schema = Object.fromEntries(entries)
    const title = schema.title
    if (typeof title !== 'string' || !/^[A-Z][A-Za-z0-9]*$/.test(title)) return schema
    const known = schemas[title]
    if (known !== undefined && !isDeepStrictEqual(known, schema)) {
      throw new Error(`openapi: two different schemas are titled ${title}`)
    }
    schemas[title] = schema
    return { $ref: `#/components/schemas/${title}` }
  }
  const paths = hoist(document.paths)
  const sorted = Object.fromEntries(Object.entries(schemas).sort(([a], [b]) => a.localeCompare(b)))
  return { ...document, paths, components: { ...document.components, schemas: sorted } }
}

interface Operation {
  operationId?: string
  parameters?: Array<{ name: string; example?: unknown }>
  requestBody?: { content: Record<string, { example?: unknown }> }
  responses?: Record<string, { description?: string; content?: Record<string, { example?: unknown }> }>
}

/** What a response without a description of its own says, by status. */
const RESPONSE_DESCRIPTIONS: Record<string, string> = {
  200: 'OK',
  201: 'Created',
  401: 'No API key, or an unknown or revoked one (`UNAUTHORIZED`)',
  403: 'The key lacks the scope, or the caller is not an allowed gateway',
  404: "Not found (or another tenant's)",
  409: 'Conflicts with the current state',
  429: 'Too many failed authentications from this address or for this key id (`RATE_LIMITED`)',
  '4XX': 'Refused: `error.code` says why',
  '5XX': 'The service could not answer: `error.code` says why (503: retry)',
  503: 'The session store is unavailable (`SERVICE_UNAVAILABLE`): retry shortly',
}

/**
 * Puts each operation's examples (by operationId) into the document, and a description on every
 * response that has only the generator's placeholder. Parameters take their example by name, bodies
 * in each of their media types.
 */
export function withExamples<T extends { paths?: unknown }>(
  document: T,
  examples: Record<string, OperationExamples>,
): T {
  const paths = (document.paths ?? {}) as Record<string, Record<string, Operation>>
  for (const item of Object.values(paths)) {
    for (const operation of Object.values(item)) {
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        const described = RESPONSE_DESCRIPTIONS[status]
        if (response.description === 'Default Response' && described) response.description = described
      }
      const given = operation.operationId ? examples[operation.operationId] : undefined
      if (!given) continue
      for (const parameter of operation.parameters ?? []) {
        if (given.params && parameter.name in given.params) parameter.example = given.params[parameter.name]
      }
      if (given.request !== undefined) {
        for (const media of Object.values(operation.requestBody?.content ?? {})) media.example = given.request
      }
      for (const [status, body] of Object.entries(given.responses ?? {})) {
        const content = operation.responses?.[status]?.content
        if (!content)
          throw new Error(`openapi: ${operation.operationId} has no ${status} body for its example`)
        for (const media of Object.values(content)) media.example = body
      }
    }
  }
  return document
}
