import createError from '@fastify/error'

/**
 * Every error code the API can return. The code is the stable contract (clients
 * switch on it); the message is for humans. README.md lists them all and a test
 * checks that it does.
 */
export const Errors = {
  // 400
  VALIDATION_FAILED: createError('VALIDATION_FAILED', '%s', 400),
  INVALID_JSON: createError('INVALID_JSON', 'request body is not valid JSON: %s', 400),
  METADATA_TOO_LARGE: createError('METADATA_TOO_LARGE', 'metadata is %d bytes as JSON; the limit is %d', 400),
  WEBHOOK_URL_NOT_ALLOWED: createError('WEBHOOK_URL_NOT_ALLOWED', 'url: %s', 400),
  // 400, refresh: the end user must log in again (OAuth's invalid_grant)
  REFRESH_TOKEN_INVALID: createError(
    'REFRESH_TOKEN_INVALID',
    'the refresh token is malformed or unknown',
    400,
  ),
  REFRESH_TOKEN_REUSED: createError(
    'REFRESH_TOKEN_REUSED',
    'the refresh token was already used; the session has been revoked as a precaution',
    400,
  ),
  SESSION_REVOKED: createError('SESSION_REVOKED', 'session %s has been revoked', 400),
  SESSION_SUSPENDED: createError('SESSION_SUSPENDED', 'session %s is suspended', 400),
  SESSION_EXPIRED: createError('SESSION_EXPIRED', 'session %s has expired', 400),
  // 401 / 403
  UNAUTHORIZED: createError('UNAUTHORIZED', '%s', 401),
  // 401 of the self-service API (/v1/me): the end user's own token is not active; `reason` says why
  SESSION_INACTIVE: createError('SESSION_INACTIVE', '%s', 401),
  FORBIDDEN: createError('FORBIDDEN', 'this API key lacks the %s scope', 403),
  GATEWAY_NOT_ALLOWED: createError('GATEWAY_NOT_ALLOWED', 'not an allowed gateway: %s', 403),
  // 404
  NOT_FOUND: createError('NOT_FOUND', 'no route %s %s', 404),
  SESSION_NOT_FOUND: createError('SESSION_NOT_FOUND', 'session %s not found', 404),
  API_KEY_NOT_FOUND: createError('API_KEY_NOT_FOUND', 'API key %s not found', 404),
  WEBHOOK_NOT_FOUND: createError('WEBHOOK_NOT_FOUND', 'webhook %s not found', 404),
  DELIVERY_NOT_FOUND: createError('DELIVERY_NOT_FOUND', 'webhook delivery %s not found', 404),
  TENANT_NOT_FOUND: createError('TENANT_NOT_FOUND', 'tenant %s not found', 404),
  // 409
  SESSION_LIMIT_REACHED: createError(
    'SESSION_LIMIT_REACHED',
    'user %s already has %d live sessions; log one out first',
    409,
  ),
  SESSION_ENDED: createError('SESSION_ENDED', 'session %s is %s; it cannot be suspended or resumed', 409),
  SESSION_NOT_RESUMABLE: createError(
    'SESSION_NOT_RESUMABLE',
    "session %s is an operator's admin console session; it is never resumed: its operator signs in again",
    409,
  ),
  TENANT_EXISTS: createError('TENANT_EXISTS', 'tenant %s already exists', 409),
  // 429
  RATE_LIMITED: createError(
    'RATE_LIMITED',
    'too many failed authentications from this address or for this key id; retry in %d s',
    429,
  ),
  // 405 / 413 / 415
  METHOD_NOT_ALLOWED: createError('METHOD_NOT_ALLOWED', '%s', 405),
  PAYLOAD_TOO_LARGE: createError('PAYLOAD_TOO_LARGE', 'request body is larger than %d bytes', 413),
  UNSUPPORTED_MEDIA_TYPE: createError(
    'UNSUPPORTED_MEDIA_TYPE',
    'content type %s is not accepted; send JSON',
    415,
  ),
  // 408 / 431: refused by the HTTP server itself, before any route
  REQUEST_TIMEOUT: createError('REQUEST_TIMEOUT', 'the request was not received in full within %d ms', 408),
  HEADERS_TOO_LARGE: createError(
    'HEADERS_TOO_LARGE',
    'the request line and headers are larger than the server accepts',
    431,
  ),
  // 5xx
  SERVICE_UNAVAILABLE: createError('SERVICE_UNAVAILABLE', '%s', 503),
  INTERNAL: createError('INTERNAL', 'internal error; see the service log for request %s', 500),
} as const

export type ErrorCode = keyof typeof Errors

/** HTTP status of each code, for the README and the OpenAPI document. */
export function errorCatalogue(): Array<{ code: ErrorCode; status: number }> {
  return (Object.keys(Errors) as ErrorCode[]).map((code) => ({
    code,
    status: new Errors[code]().statusCode ?? 500,
  }))
}
