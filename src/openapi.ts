import { isDeepStrictEqual } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { stringify } from 'yaml'

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
