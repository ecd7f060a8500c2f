import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Errors } from '../errors.ts'
import { ErrorReply } from '../schemas.ts'

// Two levels up from src/routes/ and from dist/routes/ alike: the package root, where widget/ ships.
const PACKAGE_ROOT = new URL('../../', import.meta.url)
export const WIDGET_FILE = new URL('widget/session-devices.js', PACKAGE_ROOT)

/** The widget's bytes, their version (the package's) and their entity tag. */
export interface WidgetAsset {
  body: Buffer
  version: string
  etag: string
}

/** Reads the widget and the package version once; the routes serve these bytes until the process ends. */
export async function loadWidget(): Promise<WidgetAsset> {
  const [body, manifest] = await Promise.all([
    readFile(WIDGET_FILE),
    readFile(new URL('package.json', PACKAGE_ROOT), 'utf8'),
  ])
  const { version } = JSON.parse(manifest) as { version: string }
  const digest = createHash('sha256').update(body).digest('base64url').slice(0, 32)
  return { body, version, etag: `"${digest}"` }
}

/** Does If-None-Match name this entity (weak comparison, as RFC 9110 has it for GET and HEAD)? */
function matches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false
  if (ifNoneMatch.trim() === '*') return true
  return ifNoneMatch.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag)
}

const SHORT_CACHE = 'public, max-age=300'
const IMMUTABLE = 'public, max-age=31536000, immutable'

const tags = ['self-service']
const script = {
  description: 'The `<session-devices>` element, an ES module (widget/README.md says how to use it)',
  content: { 'text/javascript': { schema: { type: 'string' } } },
}
const notModified = { description: 'The copy named by If-None-Match is current', type: 'null' }
const CORS_NOTE =
  'Sent with `Access-Control-Allow-Origin: *` and `Cross-Origin-Resource-Policy: cross-origin` (a page of another origin loads it as a module script, which needs CORS), an `ETag`, and no cookie is read.'

/**
 * The embeddable "your devices" element, as a static file: at /widget/session-devices.js (cached five
 * minutes, so a deployment reaches every page soon) and at /widget/<version>/session-devices.js
 * (cached for good: those bytes never change under that name).
 */
const widgetRoutes: FastifyPluginAsyncTypebox<{ widget: WidgetAsset }> = async (app, { widget }) => {
  function send(request: FastifyRequest, reply: FastifyReply, cacheControl: string) {
    // Over the app's `no-store`: this file is public and the same for every caller.
    reply.header('cache-control', cacheControl)
    reply.header('etag', widget.etag)
    reply.header('access-control-allow-origin', '*')
    reply.header('cross-origin-resource-policy', 'cross-origin')
    if (matches(request.headers['if-none-match'], widget.etag)) return reply.code(304).send()
    return reply.type('text/javascript; charset=utf-8').send(widget.body)
  }

  app.get(
    '/widget/session-devices.js',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'getWidget',
        tags,
        summary: 'The "your devices" web component, this version of the service (cached for 5 minutes)',
        description: `Follows the service: after an upgrade, pages get the new element within five minutes. ${CORS_NOTE}`,
        response: { 200: script, 304: notModified },
      },
    },
    async (request, reply) => send(request, reply, SHORT_CACHE),
  )

  app.get(
    '/widget/:version/session-devices.js',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'getVersionedWidget',
        tags,
        summary: 'The "your devices" web component of one version of the service (cached for a year)',
        description: `Served \`Cache-Control: public, max-age=31536000, immutable\`. Only the version this replica runs is here (\`version\` of the package); any other is a 404, so pin a version only in pages deployed with the service. ${CORS_NOTE}`,
        params: Type.Object({
          version: Type.String({ maxLength: 64, description: 'The package version of the service' }),
        }),
        response: {
          200: script,
          304: notModified,
          404: {
            description: 'This replica runs another version (`NOT_FOUND`)',
            content: { 'application/json': { schema: ErrorReply } },
          },
        },
      },
    },
    async (request, reply) => {
      const { version } = request.params
      if (version !== widget.version) {
        throw new Errors.NOT_FOUND(
          'GET',
          `/widget/${version.slice(0, 64)}/session-devices.js (this is ${widget.version})`,
        )
      }
      return send(request, reply, IMMUTABLE)
    },
  )
}

export default widgetRoutes
