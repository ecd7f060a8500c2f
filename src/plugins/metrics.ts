import { hash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import { Errors } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { ErrorReply } from '../schemas.ts'

/** Hashed first, so the comparison takes the same time whatever the length of what was sent. */
const digest = (text: string) => hash('sha256', text, 'buffer')

/**
 * Times every request by route and serves /metrics in Prometheus format; with
 * METRICS_TOKEN, only to `Authorization: Bearer <token>` (Prometheus's
 * `authorization` / `bearer_token_file` scrape settings).
 */
export default fp(
  async (
    app,
    {
      metrics,
      probe,
      token,
    }: { metrics: Metrics; probe: () => Promise<unknown>; token?: string | undefined },
  ) => {
    app.addHook('onResponse', (request, reply, done) => {
      const route = request.routeOptions.url
      if (route !== undefined) {
        metrics.httpDuration
          .series(request.method, route, String(reply.statusCode))
          .observe(reply.elapsedTime / 1000)
      }
      done()
    })
    const expected = token === undefined ? null : digest(token)
    const presented = (header = '') => (/^bearer /i.test(header) ? header.slice(7).trim() : '')
    const schema = {
      operationId: 'getMetrics',
      tags: ['operations'],
      summary: 'Prometheus metrics (text exposition format)',
      description:
        'Open unless METRICS_TOKEN is set; then only to `Authorization: Bearer <METRICS_TOKEN>`. The series are listed in README.md (Metrics).',
      // Either scheme: no credentials (METRICS_TOKEN unset) or the token.
      security: [{}, { metricsToken: [] }] as Array<Record<string, string[]>>,
      response: {
        200: {
          description: 'The metrics',
          content: { 'text/plain': { schema: { type: 'string' } } },
        },
        401: ErrorReply,
      },
    }
    app.get('/metrics', { schema }, async (request, reply) => {
      if (expected && !timingSafeEqual(digest(presented(request.headers.authorization)), expected)) {
        reply.header('www-authenticate', 'Bearer realm="metrics"')
        throw new Errors.UNAUTHORIZED('send the METRICS_TOKEN as Authorization: Bearer <token>')
      }
      await probe()
      return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
    })
  },
  { name: 'metrics' },
)
