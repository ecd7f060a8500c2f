import fp from 'fastify-plugin'
import type { Metrics } from '../metrics.ts'

/** Times every request by route and serves /metrics in Prometheus format. */
export default fp(
  async (app, { metrics, probe }: { metrics: Metrics; probe: () => Promise<unknown> }) => {
    // Label lookups hash their labels on every call; bind each combination once.
    const series = new Map<string, ReturnType<typeof metrics.httpDuration.labels>>()
    app.addHook('onResponse', (request, reply, done) => {
      const route = request.routeOptions.url
      if (route !== undefined) {
        const id = `${request.method} ${route} ${reply.statusCode}`
        let timer = series.get(id)
        if (!timer) {
          timer = metrics.httpDuration.labels(request.method, route, String(reply.statusCode))
          series.set(id, timer)
        }
        timer.observe(reply.elapsedTime / 1000)
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
