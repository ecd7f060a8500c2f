import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Health } from '../health.ts'
import { Nullable } from '../schemas.ts'

const tags = ['operations']

const ReadyReply = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  postgres: Type.Union([Type.Literal('up'), Type.Literal('down')]),
  redis: Type.Union([Type.Literal('up'), Type.Literal('degraded'), Type.Literal('disabled')], {
    description: 'degraded: Redis is away; the service answers from Postgres (slower, still correct)',
  }),
  invalidation_feed: Type.Union(
    [Type.Literal('live'), Type.Literal('stale'), Type.Literal('local'), Type.Literal('off')],
    {
      description:
        'live: this replica has proven, within L1_TTL_MS, that it hears every session change from Postgres, so it may answer from Redis; stale: it cannot prove that now and answers from Postgres (or 503); local: embedded database, this process makes every change; off: L1_TTL_MS=0, no caching',
    },
  ),
  invalidation_feed_lag_ms: Nullable(
    Type.Integer({ description: 'Age of the latest proof that the feed is complete; null before the first' }),
  ),
})

const healthRoutes: FastifyPluginAsyncTypebox<{ health: Health }> = async (app, { health }) => {
  // Probes arrive every few seconds: log them only when something is wrong.
  app.get(
    '/healthz',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'healthz',
        tags,
        summary: 'The process is alive',
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'readyz',
        tags,
        summary: 'Ready for traffic: Postgres answers (Redis is reported, not required)',
        response: { 200: ReadyReply, 503: ReadyReply },
      },
    },
    async (_request, reply) => {
      const report = await health.check()
      const ready = report.postgres === 'up'
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', ...report })
    },
  )
}

export default healthRoutes
