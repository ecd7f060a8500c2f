export {
  type ClientOptions,
  createClient,
  type EndUserClient,
  type EventsOptions,
  type Introspection,
  type JwtSessionIssued,
  type ListSessionsOptions,
  type OpaqueSessionIssued,
  type OpenSessionInput,
  type RevokeOptions,
  type Session,
  type SessionAuthorityClient,
  type SessionEvent,
  type SessionIssued,
} from './client.ts'
export { type ClientInfo, type ClientInfoOptions, clientInfo, type RequestLike } from './client-info.ts'
export { ERROR_CODES, type ErrorCode, type ServiceErrorCode, SessionAuthorityError } from './errors.ts'
export type { HeadersLike } from './headers.ts'
export type { components, operations, paths } from './schema.ts'
export type { RetryOptions } from './transport.ts'
export { type VerifyOptions, verifyWebhook, type WebhookEvent, WebhookVerificationError } from './webhooks.ts'
