import fp from 'fastify-plugin'
import type { Metrics } from '../metrics.ts'

/** Times every request by route and serves /metrics in Prometheus format. */
export default fp(
  async (app, { metrics, probe }: { metrics: Metrics; probe: () => Promise<unknown> }) => {
    app.addHook('onResponse', (request, reply, done) => {
      const route = request.routeOptions.url
      if (route !== undefined) {
        const labels = { method: request.method, route, status: String(reply.statusCode) }
        metrics.httpDuration.observe(labels, reply.elapsedTime / 1000)
      }
      done()
    })
    app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
      await probe()
      return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
    })
  },
  { name: 'metrics' },
)
