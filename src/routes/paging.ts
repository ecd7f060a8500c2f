import { type StringOptions, type TProperties, Type } from '@sinclair/typebox'
import { Errors } from '../errors.ts'

// Every list pages the same way: `limit` and `cursor` in, the items and `next_cursor` out, with the same
// words in openapi.yaml. A list's cursor is opaque to clients; each list checks its own shape.

const CURSOR = 'The `next_cursor` of the previous page; leave out for the first page'
const NEXT_CURSOR = 'Pass as `cursor` for the next page; null on the last page'

/** The cursor of a list ordered by a bigint id (events, deliveries): the last id of the previous page. */
export const IdCursor: StringOptions = { pattern: '^[0-9]{1,18}$' }

/**
 * The `limit` and `cursor` of a list's query, to spread into its querystring
 * schema: the list's own default and maximum page size, and the shape of its cursor.
 */
export function pageQuery(limit: { default: number; maximum: number }, cursor: StringOptions) {
  return {
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: limit.maximum,
        default: limit.default,
        description: 'The most items a page holds',
      }),
    ),
    cursor: Type.Optional(Type.String({ ...cursor, description: CURSOR })),
  }
}

/** `before`, the old name of `cursor` on the lists that had it: still accepted, not both at once. */
export function beforeAlias(cursor: StringOptions) {
  return Type.Optional(
    Type.String({
      ...cursor,
      deprecated: true,
      description: 'Deprecated: the old name of `cursor`, still accepted (not together with `cursor`)',
    }),
  )
}

/** The reply of a list: its items under their own name, and `next_cursor`. */
export function pageReply<T extends TProperties>(items: T) {
  return Type.Object({
    ...items,
    next_cursor: Type.Union([Type.String(), Type.Null()], { description: NEXT_CURSOR }),
  })
}

/** The cursor a query gives, under its name or the deprecated `before`; both at once is refused. */
export function cursorOf(query: { cursor?: string; before?: string }): string | null {
  if (query.cursor !== undefined && query.before !== undefined) {
    throw new Errors.VALIDATION_FAILED('querystring: cursor and before (its deprecated name) are both given')
  }
  return query.cursor ?? query.before ?? null
}

/**
 * The `next_cursor` of a page: the cursor of its last row when the page is
 * full (there may be more), null when it is not (the last page). A list whose
 * length is a multiple of `limit` ends with an empty page.
 */
export function nextCursor<T>(
  rows: readonly T[],
  limit: number,
  cursorOfRow: (last: T) => string,
): string | null {
  const last = rows.at(-1)
  return rows.length === limit && last !== undefined ? cursorOfRow(last) : null
}
