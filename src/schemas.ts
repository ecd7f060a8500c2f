import { FormatRegistry, type TSchema, Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { isAddress } from './addresses.ts'
import { type ErrorCode, Errors } from './errors.ts'

// TypeBox checks formats only once they are registered.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
FormatRegistry.Set('uuid', (v) => UUID.test(v))
// The service's one address parser: what validates is what Postgres stores (no zone ids, no `127.1`).
FormatRegistry.Set('ip', isAddress)
FormatRegistry.Set('date-time', (v) => !Number.isNaN(Date.parse(v)))
// Unpaired surrogates would be stored as U+FFFD, silently merging distinct ids.
FormatRegistry.Set('text', (v) => v.isWellFormed())

/** Printable text: no control characters (they break logs and Postgres refuses NUL). */
export const Text = (options: { minLength?: number; maxLength: number; description?: string }) =>
  Type.String({ minLength: 1, format: 'text', pattern: '^[^\\u0000-\\u001f\\u007f]*$', ...options })

/** The schema, or null. */
export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()])

export const Uuid = (description?: string) => Type.String({ format: 'uuid', description })

/** A timestamp: a Date inside the service (as Postgres gives it), an ISO 8601 string on the wire. */
export const Timestamp = (description?: string) =>
  Type.Unsafe<Date>({ type: 'string', format: 'date-time', description })

export const ErrorReply = Type.Object(
  {
    error: Type.Object({
      code: Type.Unsafe<ErrorCode>({
        type: 'string',
        enum: Object.keys(Errors),
        description: 'Stable error code (clients switch on it); README.md says what each means',
      }),
      message: Type.String({ description: 'What was wrong, for humans' }),
      reason: Type.Optional(
        Type.String({
          description:
            'A detail some codes carry, for programs: with SESSION_INACTIVE, why (revoked, expired, suspended, unknown)',
        }),
      ),
    }),
  },
  { title: 'Error' },
)

/** A route's responses: the given ones plus the one error shape for 4xx and 5xx. */
export function withErrors<T extends Record<number, TSchema>>(responses: T) {
  return { ...responses, '4xx': ErrorReply, '5xx': ErrorReply }
}

/** A preValidation hook for routes whose body is optional: a request without one is validated as `{}`. */
export function noBodyIsEmpty(request: FastifyRequest, _reply: FastifyReply, done: () => void) {
  request.body ??= {}
  done()
}
