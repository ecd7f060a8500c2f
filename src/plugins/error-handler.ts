import type { FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import { Errors } from '../errors.ts'

// postgres.js and Node socket errors that mean "the database is not there right now".
const UNAVAILABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
])

const BY_STATUS: Record<number, keyof typeof Errors> = {
  401: 'UNAUTHORIZED',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
}

interface Coded {
  code?: string
  statusCode?: number
  message: string
}

/**
 * Turns any error into the one error shape with a stable code. Expected
 * refusals are answered as they are; anything else is logged and becomes a
 * bare 500 or 503 without internals.
 */
function toReply(error: FastifyError | Coded, requestId: string): { status: number; code: string; message: string } {
  const { code = '', statusCode = 500 } = error
  if (code in Errors) return { status: statusCode, code, message: error.message }
  const validation = (error as FastifyError).validation
  if (validation) {
    const where = (error as FastifyError).validationContext ?? 'request'
    const first = validation[0]
    const path = first?.instancePath ? first.instancePath.replace(/^\//, '').replaceAll('/', '.') : ''
    const message = `${where}${path ? `.${path}` : ''}: ${first?.message ?? 'is invalid'}`
    return { status: 400, code: 'VALIDATION_FAILED', message }
  }
  if (UNAVAILABLE.has(code)) {
    return { status: 503, code: 'SERVICE_UNAVAILABLE', message: 'the session store is unavailable; retry shortly' }
  }
  // Postgres data exceptions (class 22): a value Postgres refuses to store, such as \u0000 in JSON.
  if (/^22[0-9A-Z]{3}$/.test(code)) {
    return { status: 400, code: 'VALIDATION_FAILED', message: 'a value contains characters that cannot be stored' }
  }
  if (statusCode >= 400 && statusCode < 500) {
    if (error instanceof SyntaxError || code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
      return { status: 400, code: 'INVALID_JSON', message: `request body is not valid JSON: ${error.message}` }
    }
    return { status: statusCode, code: BY_STATUS[statusCode] ?? 'VALIDATION_FAILED', message: error.message }
  }
  return { status: 500, code: 'INTERNAL', message: new Errors.INTERNAL(requestId).message }
}

export default fp(
  async (app) => {
    app.setErrorHandler((error, request, reply) => {
      const { status, code, message } = toReply(error as Coded, request.id)
      if (status >= 500) request.log.error({ err: error }, 'request failed')
      else request.log.info({ code, status }, message)
      reply.code(status).send({ error: { code, message } })
    })
    app.setNotFoundHandler((request, reply) => {
      const error = new Errors.NOT_FOUND(request.method, request.url.split('?')[0])
      reply.code(404).send({ error: { code: error.code, message: error.message } })
    })
  },
  { name: 'error-handler' },
)
