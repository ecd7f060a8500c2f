import type { FastifyInstance } from 'fastify'
import { stringify } from 'yaml'

/** The OpenAPI document of a built app, as the YAML committed in openapi.yaml (no anchors, stable). */
export function openapiYaml(app: FastifyInstance): string {
  return stringify(app.swagger(), { aliasDuplicateObjects: false, lineWidth: 0 })
}
