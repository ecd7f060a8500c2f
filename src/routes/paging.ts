import { type Static, type StringOptions, type TProperties, Type } from '@sinclair/typebox'
import type { PageRequest, Position } from '../db/keyset.ts'
import { Errors } from '../errors.ts'

// Every list pages the same way: `limit` and `cursor` in, the items and `next_cursor` out, with the same
// words in openapi.yaml. A list's cursor is opaque to clients; each list checks its own shape.

const CURSOR = 'The `next_cursor` of the previous page; leave out for the first page'
const NEXT_CURSOR = 'Pass as `cursor` for the next page; null on the last page'

/** The cursor of a list ordered by a bigint id (events, deliveries): the last id of the previous page. */
export const IdCursor: StringOptions = { pattern: '^[0-9]{1,18}$' }

/** The cursor of a list ordered by creation time: base64url, decoded and checked by positionOf. */
export const PositionCursor: StringOptions = { pattern: '^[A-Za-z0-9_-]+$', maxLength: 400 }

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

/** The reply of a list: its items under their own name, and `next_cursor`; `title` names it in the document. */
export function pageReply<T extends TProperties>(items: T, title?: string) {
  return Type.Object(
    { ...items, next_cursor: Type.Union([Type.String(), Type.Null()], { description: NEXT_CURSOR }) },
    title === undefined ? {} : { title },
  )
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

const EXACT_TIME = /^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/

/** The cursor of a row of a list ordered by creation time: where the next page resumes. */
export function positionCursor(position: Position): string {
  return Buffer.from(JSON.stringify([position.at, position.id])).toString('base64url')
}

/** The ids of a list whose rows are named by a uuid, as Postgres writes them (a user's sessions). */
export const UUID_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * The position a cursor made by positionCursor names, or null for none; VALIDATION_FAILED for anything
 * else, also for an id not of the shape `idShape` (the list's ids), which Postgres could not compare.
 */
export function positionOf(cursor: string | null, idShape?: RegExp): Position | null {
  if (cursor === null) return null
  const refuse = () =>
    new Errors.VALIDATION_FAILED('querystring.cursor: is not a next_cursor (pass it back as it came)')
  let decoded: unknown
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw refuse()
  }
  if (!Array.isArray(decoded) || decoded.length !== 2) throw refuse()
  const [at, id] = decoded as unknown[]
  if (typeof at !== 'string' || typeof id !== 'string') throw refuse()
  // Both go to Postgres: an id it can compare (no NUL), a real instant (no 30 February).
  if (id.length === 0 || id.length > 200 || id.includes('\u0000')) throw refuse()
  if (idShape !== undefined && !idShape.test(id)) throw refuse()
  const ms = EXACT_TIME.test(at) ? Date.parse(at) : Number.NaN
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 23) !== at.slice(0, 23)) throw refuse()
  const position = { at, id }
  // Only the one spelling positionCursor writes: padding, stray bits and reordered JSON are not cursors.
  if (positionCursor(position) !== cursor) throw refuse()
  return position
}

/** The query of a list ordered newest first by creation time: `limit` (100, up to 500) and `cursor`. */
export const NewestFirstQuery = Type.Object(pageQuery({ default: 100, maximum: 500 }, PositionCursor), {
  additionalProperties: false,
})

/** The page a NewestFirstQuery asks for (VALIDATION_FAILED for a cursor that is not one of ours). */
export function pageRequest(query: Static<typeof NewestFirstQuery>): PageRequest {
  return { limit: query.limit ?? 100, after: positionOf(query.cursor ?? null) }
}

/** The `next_cursor` of a page of such a list: the position of its last row, if the page is full. */
export function nextPositionCursor<T extends { position_at: string }>(
  rows: readonly T[],
  page: PageRequest,
  idOf: (row: T) => string,
): string | null {
  return nextCursor(rows, page.limit, (last) => positionCursor({ at: last.position_at, id: idOf(last) }))
}
