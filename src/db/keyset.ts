import type { Sql } from './connect.ts'

/**
 * Where a page of a list ordered newest first resumes: after the row created
 * at `at` (ISO 8601 to the microsecond, as Postgres keeps it) with this id.
 */
export interface Position {
  at: string
  id: string
}

/** One page: at most `limit` rows, those after `after` (null: from the newest). */
export interface PageRequest {
  limit: number
  after: Position | null
}

/** A row of a page with its created_at to the microsecond (a Date would round it, and a cursor so made skip rows). */
export type Positioned<T> = T & { position_at: string }

/**
 * Keyset paging of a table newest first (created_at, then the id column, both
 * descending, so ties keep one order): the select column `position_at`, the
 * condition for the rows after the page's position, and the order and limit.
 * `idType` is the id column's type; a uuid id must have been checked to be one.
 */
export function newestFirst(sql: Sql, page: PageRequest, idColumn = 'id', idType: 'text' | 'uuid' = 'text') {
  const id = sql(idColumn)
  const asId = idType === 'uuid' ? sql`::uuid` : sql``
  // The time is sent as text: as a timestamptz parameter, postgres.js would make it a Date, dropping microseconds.
  const after =
    page.after === null
      ? sql`true`
      : sql`(created_at, ${id}) < (${page.after.at}::text::timestamptz, ${page.after.id}::text${asId})`
  return {
    positionAt: sql`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as position_at`,
    after,
    orderAndLimit: sql`order by created_at desc, ${id} desc limit ${page.limit}`,
  }
}
