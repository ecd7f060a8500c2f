/**
 * Every error code the service answers with (its src/errors.ts; a test keeps the
 * two lists equal), plus UNEXPECTED_RESPONSE: an answer without the service's
 * error shape, such as a proxy's own 502 page.
 */
export const ERROR_CODES = [
  'VALIDATION_FAILED',
  'INVALID_JSON',
  'METADATA_TOO_LARGE',
  'WEBHOOK_URL_NOT_ALLOWED',
  'REFRESH_TOKEN_INVALID',
  'REFRESH_TOKEN_REUSED',
  'SESSION_REVOKED',
  'SESSION_SUSPENDED',
  'SESSION_EXPIRED',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'GATEWAY_NOT_ALLOWED',
  'NOT_FOUND',
  'SESSION_NOT_FOUND',
  'API_KEY_NOT_FOUND',
  'WEBHOOK_NOT_FOUND',
  'DELIVERY_NOT_FOUND',
  'TENANT_NOT_FOUND',
  'SESSION_LIMIT_REACHED',
  'SESSION_ENDED',
  'TENANT_EXISTS',
  'RATE_LIMITED',
  'METHOD_NOT_ALLOWED',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'REQUEST_TIMEOUT',
  'HEADERS_TOO_LARGE',
  'SERVICE_UNAVAILABLE',
  'INTERNAL',
] as const

export type ServiceErrorCode = (typeof ERROR_CODES)[number]

export type ErrorCode = ServiceErrorCode | 'UNEXPECTED_RESPONSE'

/**
 * A refusal by the service: `code` is the stable contract to switch on (a newer
 * service may send a code this version does not list; it is passed on as sent),
 * `message` is for humans, `requestId` finds the request in the service's logs.
 */
export class SessionAuthorityError extends Error {
  override readonly name = 'SessionAuthorityError'
  readonly status: number
  readonly code: ErrorCode
  readonly requestId: string | undefined

  constructor(status: number, code: ErrorCode, message: string, requestId?: string) {
    super(message)
    this.status = status
    this.code = code
    this.requestId = requestId
  }
}

/** The error an unsuccessful answer stands for, from its `{ error: { code, message } }` body. */
export function errorFromResponse(response: Response, body: unknown): SessionAuthorityError {
  const requestId = response.headers.get('x-request-id') ?? undefined
  const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : undefined
  if (typeof error === 'object' && error !== null) {
    const { code, message } = error as { code?: unknown; message?: unknown }
    if (typeof code === 'string') {
      const text = typeof message === 'string' ? message : code
      return new SessionAuthorityError(response.status, code as ErrorCode, text, requestId)
    }
  }
  const message = `the service answered ${response.status} ${response.statusText}`.trim()
  return new SessionAuthorityError(response.status, 'UNEXPECTED_RESPONSE', message, requestId)
}
