import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Sql } from '../db/connect.ts'

const tags = ['operations']

const ReadyReply = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  postgres: Type.Union([Type.Literal('up'), Type.Literal('down')]),
})

const healthRoutes: FastifyPluginAsyncTypebox<{ sql: Sql }> = async (app, { sql }) => {
  app.get(
    '/healthz',
    {
      schema: {
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
      schema: {
        tags,
        summary: 'Ready for traffic: Postgres answers',
        response: { 200: ReadyReply, 503: ReadyReply },
      },
    },
    async (_request, reply) => {
      const up = await Promise.race([
        sql`select 1`.then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((resolve) => setTimeout(resolve, 2000, false).unref()),
      ])
      return reply
        .code(up ? 200 : 503)
        .send({ status: up ? ('ready' as const) : ('unavailable' as const), postgres: up ? 'up' : 'down' })
    },
  )
}

export default healthRoutes
