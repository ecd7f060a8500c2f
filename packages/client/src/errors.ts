import type { components } from './schema.ts'

/** Every error code the service answers with: the enum of the Error schema in its OpenAPI document. */
export type ServiceErrorCode = components['schemas']['Error']['error']['code']

/**
 * The codes, for code that needs them at run time. Written out so that the
 * compiler checks the list against the document both ways (a test checks it
 * against the service's own catalogue).
 */
export const ERROR_CODES = Object.keys({
  VALIDATION_FAILED: true,
  INVALID_JSON: true,
  METADATA_TOO_LARGE: true,
  WEBHOOK_URL_NOT_ALLOWED: true,
  REFRESH_TOKEN_INVALID: true,
  REFRESH_TOKEN_REUSED: true,
  SESSION_REVOKED: true,
  SESSION_SUSPENDED: true,
  SESSION_EXPIRED: true,
  UNAUTHORIZED: true,
  SESSION_INACTIVE: true,
  FORBIDDEN: true,
  GATEWAY_NOT_ALLOWED: true,
  NOT_FOUND: true,
  SESSION_NOT_FOUND: true,
  API_KEY_NOT_FOUND: true,
  WEBHOOK_NOT_FOUND: true,
  DELIVERY_NOT_FOUND: true,
  TENANT_NOT_FOUND: true,
  SESSION_LIMIT_REACHED: true,
  SESSION_ENDED: true,
  SESSION_NOT_RESUMABLE: true,
  TENANT_EXISTS: true,
  RATE_LIMITED: true,
  METHOD_NOT_ALLOWED: true,
  PAYLOAD_TOO_LARGE: true,
  UNSUPPORTED_MEDIA_TYPE: true,
  REQUEST_TIMEOUT: true,
  HEADERS_TOO_LARGE: true,
  SERVICE_UNAVAILABLE: true,
  INTERNAL: true,
} satisfies Record<ServiceErrorCode, true>) as ServiceErrorCode[]

/** The service's codes, and UNEXPECTED_RESPONSE: an answer without its error shape (a proxy's own 502 page). */
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
