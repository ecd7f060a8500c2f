import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
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

interface Reply {
  status: number
  code: string
  message: string
  /** A machine-readable detail some codes carry (SESSION_INACTIVE: why). */
  reason?: string
}

const as = (status: number, code: string, message: string, reason?: string): Reply =>
  reason === undefined ? { status, code, message } : { status, code, message, reason }

/** The one error shape every refusal is answered in. */
const errorBody = ({ code, message, reason }: { code: string; message: string; reason?: string }) => ({
  error: reason === undefined ? { code, message } : { code, message, reason },
})

/**
 * Turns any error into the one error shape with a stable code. Expected
 * refusals are answered as they are; anything else is logged and becomes a
 * bare 500 or 503 without internals.
 */
export function toReply(error: FastifyError | Coded, request: FastifyRequest): Reply {
  const { code = '', statusCode = 500 } = error
  if (code in Errors) {
    const { reason } = error as { reason?: unknown }
    return as(statusCode, code, error.message, typeof reason === 'string' ? reason : undefined)
  }
  const validation = (error as FastifyError).validation
  if (validation) {
    const where = (error as FastifyError).validationContext ?? 'request'
    const first = validation[0]
    const path = first?.instancePath ? `.${first.instancePath.slice(1).replaceAll('/', '.')}` : ''
    return as(400, 'VALIDATION_FAILED', `${where}${path}: ${first?.message ?? 'is invalid'}`)
  }
  if (UNAVAILABLE.has(code)) {
    return as(503, 'SERVICE_UNAVAILABLE', 'the session store is unavailable; retry shortly')
  }
  // Postgres data exceptions (class 22): a value Postgres refuses to store, such as \u0000 in JSON.
  if (/^22[0-9A-Z]{3}$/.test(code)) {
    return as(400, 'VALIDATION_FAILED', 'a value contains characters that cannot be stored')
  }
  if (statusCode >= 500) return as(500, 'INTERNAL', new Errors.INTERNAL(request.id).message)
  // The JSON parser's own message quotes the body (which may hold a token): say less.
  if (code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) {
    return as(400, 'INVALID_JSON', new Errors.INVALID_JSON('it does not parse').message)
  }
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    const type = JSON.stringify(String(request.headers['content-type'] ?? '').slice(0, 100))
    return as(415, 'UNSUPPORTED_MEDIA_TYPE', new Errors.UNSUPPORTED_MEDIA_TYPE(type).message)
  }
  return as(statusCode, BY_STATUS[statusCode] ?? 'VALIDATION_FAILED', error.message)
}

/**
 * Answers what the HTTP server refuses before Fastify sees a request (a request
 * not received within REQUEST_TIMEOUT_MS, oversized headers, broken HTTP) in the
 * one error shape, then closes the connection, as Node itself would.
 */
export function clientErrorHandler(requestTimeoutMs: number) {
  return function answerClientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket) {
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const error =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT'
        ? new Errors.REQUEST_TIMEOUT(requestTimeoutMs)
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? new Errors.HEADERS_TOO_LARGE()
          : new Errors.VALIDATION_FAILED(
              'the HTTP request is malformed (request line, headers or body framing)',
            )
    const status = error.statusCode ?? 400
    this.log.info({ code: error.code, status, reason: err.code }, error.message)
    // Like Node: no answer once a response has begun on this connection.
    const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (socket.writable && !response?.headersSent) {
      const body = JSON.stringify(errorBody(error))
      socket.write(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nX-Content-Type-Options: nosniff\r\n` +
          `Cache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
      )
    }
    socket.destroy()
  }
}

/**
 * Answers a URL the router cannot parse (a path segment badly percent-encoded or
 * longer than maxParamLength) in the one error shape. Fastify calls it before
 * any hook or error handler, so it also sets the headers every other reply gets
 * from the onRequest hook.
 */
export function frameworkErrorHandler(maxParamLength: number) {
  return function answerMalformedUrl(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
    request.log.info({ code: error.code }, 'malformed URL')
    const refusal = new Errors.VALIDATION_FAILED(
      `malformed URL: a path segment is badly percent-encoded or longer than ${maxParamLength} characters`,
    )
    reply
      .code(refusal.statusCode ?? 400)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .send(errorBody(refusal))
  }
}

export default fp(
  async (app) => {
    app.setErrorHandler((error, request, reply) => {
      const answer = toReply(error as Coded, request)
      const { status, code, message } = answer
      if (status >= 500) request.log.error({ err: error }, 'request failed')
      else request.log.info({ code, status }, message)
      reply.code(status).send(errorBody(answer))
    })
    // Which methods each path has, so a wrong method is a 405 rather than a 404.
    const routes: Array<{ pattern: RegExp; methods: Set<string> }> = []
    app.addHook('onRoute', (route) => {
      const pattern = new RegExp(`^${route.url.replace(/:[^/]+/g, '[^/]+')}$`)
      const known = routes.find((r) => r.pattern.source === pattern.source)
      const methods = [route.method].flat()
      if (known) for (const m of methods) known.methods.add(m)
      else routes.push({ pattern, methods: new Set(methods) })
    })
    app.setNotFoundHandler((request, reply) => {
      const path = request.url.split('?')[0] ?? '/'
      const route = routes.find((r) => r.pattern.test(path))
      const error = route
        ? new Errors.METHOD_NOT_ALLOWED(
            `${request.method} is not allowed on ${path}; it accepts ${[...route.methods].join(', ')}`,
          )
        : new Errors.NOT_FOUND(request.method, path)
      if (route) reply.header('allow', [...route.methods].join(', '))
      reply.code(error.statusCode ?? 404).send(errorBody(error))
    })
  },
  { name: 'error-handler' },
)
