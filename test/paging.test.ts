import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { auth, buildTestApp, createKey, openSession, type TestApp } from './helper.ts'

// Every list pages alike (src/routes/paging.ts): `limit` and `cursor` in, its items and `next_cursor` out.
// The table below has one entry per list; the first test walks the OpenAPI document, so a GET that
// answers an array and is not in the table (nor exempted with a reason) fails.

/** Small pages, so a few items make several. */
const LIMIT = 3
/** Items each list is given: more than two pages, some made at the same instant (ties). */
const COUNT = 7

type Item = Record<string, unknown>

interface List {
  /** The array the reply holds the items in. */
  items: string
  /** The field that names an item. */
  id: 'id' | 'kid'
  /**
   * The documented order: `created` is newest first (created_at, then id, both
   * descending); `serial` is by the numeric id, descending.
   */
  order: 'created' | 'serial'
  /** The list had `before` before `cursor`, and still takes it. */
  before?: true
  /** Makes COUNT items of the list; returns the list's URL and the ids of what it made. */
  make: (x: TestApp) => Promise<{ url: string; made: string[] }>
}

/** Makes `count` things, the clock moving a second after each of the first ones, the last three at one instant. */
async function madeOverTime(x: TestApp, count: number, makeOne: (i: number) => Promise<string[]>) {
  const made: string[] = []
  for (let i = 0; i < count; i++) {
    made.push(...(await makeOne(i)))
    if (i < count - 3) x.clock.advance(1000)
  }
  return made
}

async function post(app: FastifyInstance, url: string, payload?: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url, headers: auth(), ...(payload && { payload }) })
  assert.equal(res.statusCode, 201, res.body)
  return res.json()
}

async function sessionsOf(x: TestApp, userOf: (i: number) => string) {
  const made = await madeOverTime(x, COUNT, async (i) => [
    (await openSession(x.app, { user_id: userOf(i) })).session.id,
  ])
  return made
}

/** Ids of the session.created events of these sessions. */
async function createdEventsOf(x: TestApp, sessionIds: string[]) {
  const rows = await x.app.db.sql<{ id: string }[]>`
    select id::text as id from session_events where type = 'session.created' and session_id = any(${sessionIds}::uuid[])`
  return rows.map((r) => r.id)
}

const LISTS: Record<string, List> = {
  'GET /v1/users/{user_id}/sessions': {
    items: 'sessions',
    id: 'id',
    order: 'created',
    make: async (x) => ({ url: '/v1/users/paged/sessions', made: await sessionsOf(x, () => 'paged') }),
  },
  'GET /v1/users/{user_id}/events': {
    items: 'events',
    id: 'id',
    order: 'serial',
    before: true,
    make: async (x) => {
      const sessions = await sessionsOf(x, () => 'paged')
      return { url: '/v1/users/paged/events', made: await createdEventsOf(x, sessions) }
    },
  },
  'GET /v1/events': {
    items: 'events',
    id: 'id',
    order: 'serial',
    before: true,
    make: async (x) => {
      const sessions = await sessionsOf(x, (i) => `user-${i % 2}`)
      return { url: '/v1/events', made: await createdEventsOf(x, sessions) }
    },
  },
  'GET /v1/webhooks/{id}/deliveries': {
    items: 'deliveries',
    id: 'id',
    order: 'serial',
    before: true,
    make: async (x) => {
      const { webhook } = await post(x.app, '/v1/webhooks', { url: 'https://hooks.example.com/all' })
      const sessions = await sessionsOf(x, () => 'paged')
      const events = await createdEventsOf(x, sessions)
      const rows = await x.app.db.sql<{ id: string }[]>`
        select id::text as id from webhook_deliveries where event_id = any(${events}::bigint[])`
      assert.equal(rows.length, COUNT)
      return { url: `/v1/webhooks/${webhook.id}/deliveries`, made: rows.map((r) => r.id) }
    },
  },
  'GET /v1/api-keys': {
    items: 'api_keys',
    id: 'id',
    order: 'created',
    make: async (x) => ({
      url: '/v1/api-keys',
      made: await madeOverTime(x, COUNT, async () => [(await createKey(x.app, ['introspect'])).api_key.id]),
    }),
  },
  'GET /v1/webhooks': {
    items: 'webhooks',
    id: 'id',
    order: 'created',
    make: async (x) => ({
      url: '/v1/webhooks',
      made: await madeOverTime(x, COUNT, async (i) => [
        (await post(x.app, '/v1/webhooks', { url: `https://hooks.example.com/${i}` })).webhook.id,
      ]),
    }),
  },
  'GET /v1/tenants': {
    items: 'tenants',
    id: 'id',
    order: 'created',
    make: async (x) => ({
      url: '/v1/tenants',
      // Names out of creation order, so the order by time and the order by id differ.
      made: await madeOverTime(x, COUNT, async (i) => [
        (await post(x.app, '/v1/tenants', { id: `t${(i * 5) % COUNT}`, name: `T ${i}` })).id,
      ]),
    }),
  },
  'GET /v1/signing-keys': {
    items: 'keys',
    id: 'kid',
    order: 'created',
    make: async (x) => ({
      url: '/v1/signing-keys',
      made: await madeOverTime(x, COUNT, async () => [(await post(x.app, '/v1/signing-keys/rotate')).kid]),
    }),
  },
}

/** GETs that answer an array and are not lists to page, and why. */
/** The lists of the end user's own API: paged alike, walked with a user's token in test/self-service.test.ts. */
const SELF_SERVICE_LISTS: Record<string, Pick<List, 'items' | 'before'>> = {
  'GET /v1/me/sessions': { items: 'sessions' },
  'GET /v1/me/events': { items: 'events' },
}

const NOT_LISTS: Record<string, string> = {
  'GET /.well-known/jwks.json':
    'an RFC 7517 JWK Set: verifiers read the whole set (a handful of keys), in the shape the RFC gives',
  'GET /v1/webhooks/{id}': 'one subscription: event_types is a field of it',
}

interface Operation {
  parameters?: Array<{ in: string; name: string; description?: string; schema: Item }>
  responses: Record<
    string,
    {
      content?: Record<
        string,
        { schema: { $ref?: string; properties?: Record<string, Item>; required?: string[] } }
      >
    }
  >
}

test('every GET answering an array pages alike: limit, cursor and next_cursor, described once for all', async (t) => {
  const { app } = await buildTestApp(t)
  const doc = (await app.inject({ url: '/openapi.json' })).json() as {
    paths: Record<string, Record<string, Operation>>
    components: { schemas: Record<string, { properties?: Record<string, Item>; required?: string[] }> }
  }
  // A reply named in components is a $ref: look it up.
  const resolve = (schema?: { $ref?: string; properties?: Record<string, Item>; required?: string[] }) =>
    schema?.$ref ? doc.components.schemas[schema.$ref.replace('#/components/schemas/', '')] : schema
  const descriptions = { limit: new Set(), cursor: new Set(), next_cursor: new Set(), before: new Set() }
  const lists: string[] = []
  for (const [path, operations] of Object.entries(doc.paths)) {
    const op = operations.get
    if (!op) continue
    const name = `GET ${path}`
    const reply = resolve(op.responses['200']?.content?.['application/json']?.schema)
    const properties = reply?.properties ?? {}
    const arrays = Object.keys(properties).filter((p) => properties[p]?.type === 'array')
    if (arrays.length === 0 || name in NOT_LISTS) continue
    lists.push(name)
    const list = LISTS[name] ?? SELF_SERVICE_LISTS[name]
    assert.ok(
      list,
      `${name} answers a list (${arrays}) but does not page: use src/routes/paging.ts, and add it here`,
    )
    assert.deepEqual(arrays, [list.items], name)

    const query = Object.fromEntries(
      (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => [p.name, p]),
    )
    const { limit, cursor, before } = query
    assert.ok(limit && cursor, `${name} documents limit and cursor`)
    assert.equal(limit.schema.type, 'integer', name)
    assert.equal(limit.schema.minimum, 1, name)
    assert.equal(typeof limit.schema.maximum, 'number', name)
    assert.equal(typeof limit.schema.default, 'number', name)
    assert.ok((limit.schema.default as number) <= (limit.schema.maximum as number), name)
    assert.equal(cursor.schema.type, 'string', name)
    const next = properties.next_cursor
    assert.ok(next, `${name} answers next_cursor`)
    assert.deepEqual([next.type, next.nullable], ['string', true], name)
    assert.ok(reply?.required?.includes('next_cursor'), `${name}: next_cursor is always there`)
    assert.equal(
      Boolean(before),
      Boolean(list.before),
      `${name}: before is documented exactly where it existed`,
    )
    if (before) {
      assert.equal(before.schema.deprecated, true, name)
      assert.match(before.description ?? '', /^Deprecated/, name)
      assert.deepEqual(
        { ...before.schema, deprecated: undefined },
        { ...cursor.schema, deprecated: undefined },
      )
      descriptions.before.add(before.description)
    }
    descriptions.limit.add(limit.description)
    descriptions.cursor.add(cursor.description)
    descriptions.next_cursor.add(next.description)
  }
  assert.deepEqual(
    lists.sort(),
    [...Object.keys(LISTS), ...Object.keys(SELF_SERVICE_LISTS)].sort(),
    'the table names every list of the document',
  )
  for (const [field, seen] of Object.entries(descriptions)) {
    assert.equal(seen.size, 1, `${field} is described in one way everywhere: ${[...seen].join(' | ')}`)
    assert.ok([...seen][0], `${field} has a description`)
  }
})

/** One page of a list. */
function page(app: FastifyInstance, url: string, query: Record<string, string>) {
  return app.inject({ url: `${url}?${new URLSearchParams(query)}`, headers: auth() })
}

/**
 * Walks a list page by page from `start` (the first page when null), the
 * cursor given as `param`; returns the items in order and the page count.
 */
async function walk(
  app: FastifyInstance,
  url: string,
  list: List,
  limit: number,
  { param = 'cursor', start = null as string | null } = {},
) {
  const items: Item[] = []
  let cursor = start
  let pages = 0
  do {
    const res = await page(app, url, { limit: String(limit), ...(cursor !== null && { [param]: cursor }) })
    assert.equal(res.statusCode, 200, res.body)
    assert.ok(!res.body.includes('position_at'), 'the response schema keeps what paging needs inside')
    const body = res.json() as Record<string, unknown>
    const got = body[list.items] as Item[]
    assert.ok(got.length <= limit, `a page of ${got.length} > ${limit}`)
    assert.ok(typeof body.next_cursor === 'string' || body.next_cursor === null, res.body)
    // A page that is not full is the last; a full one says where the next begins.
    assert.equal(body.next_cursor === null, got.length < limit, `page ${pages}: ${res.body.slice(0, 300)}`)
    items.push(...got)
    cursor = body.next_cursor as string | null
    pages++
    assert.ok(pages < 100, 'the walk ends')
  } while (cursor !== null)
  return { items, pages }
}

/** Is `a` before `b` in the list's documented order? */
function before(list: List, a: Item, b: Item): boolean {
  if (list.order === 'serial') return BigInt(a[list.id] as string) > BigInt(b[list.id] as string)
  const [at, bt] = [Date.parse(a.created_at as string), Date.parse(b.created_at as string)]
  return at > bt || (at === bt && (a[list.id] as string) > (b[list.id] as string))
}

const b64 = (value: unknown) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

/** Cursors no list ever gives: each must be refused with VALIDATION_FAILED, never answered or a 500. */
const MALFORMED = [
  'not a cursor',
  '%00',
  '\u0000',
  'x'.repeat(1000),
  '-1',
  '9999999999999999999',
  '00000000-0000-0000-0000-00000000000g',
  // A session id: what a user's sessions took as a cursor before it was a position.
  randomUUID(),
  b64('garbage'),
  b64(['2026-02-30T00:00:00.000000Z', 'key_0']),
  b64(['2026-01-01T00:00:00.000Z', 'key_0']),
  b64(['0000-01-01T00:00:00.000000Z', 'key_0']),
  b64(['2026-01-01T00:00:00.000000Z', '']),
  b64(['2026-01-01T00:00:00.000000Z', 'a\u0000b']),
  b64(['2026-01-01T00:00:00.000000Z', 7]),
  b64({ at: '2026-01-01T00:00:00.000000Z', id: 'key_0' }),
  `${b64(['2026-01-01T00:00:00.000000Z', 'key_0'])}==`,
]

for (const [name, list] of Object.entries(LISTS)) {
  test(`${name} pages: every item once, in order, next_cursor null on the last page; bad cursors refused`, async (t) => {
    const x = await buildTestApp(t, { webhookPollMs: 0 })
    const { url, made } = await list.make(x)
    assert.equal(made.length, COUNT)

    const { items, pages } = await walk(x.app, url, list, LIMIT)
    const ids = items.map((item) => item[list.id] as string)
    assert.equal(new Set(ids).size, ids.length, `no item twice: ${ids}`)
    for (const id of made) assert.ok(ids.includes(id), `${id} was listed`)
    assert.ok(pages >= Math.ceil(COUNT / LIMIT), `${pages} pages`)
    for (let i = 1; i < items.length; i++) {
      assert.ok(before(list, items[i - 1] as Item, items[i] as Item), `${ids[i - 1]} before ${ids[i]}`)
    }
    // The same as one page that holds everything.
    const whole = await page(x.app, url, { limit: '200' })
    assert.equal(whole.statusCode, 200, whole.body)
    assert.deepEqual(
      (whole.json()[list.items] as Item[]).map((item) => item[list.id]),
      ids,
    )
    assert.equal(whole.json().next_cursor, null)

    // A list that fills its last page whole ends with an empty page.
    const full = await page(x.app, url, { limit: String(ids.length) })
    assert.equal(full.json()[list.items].length, ids.length)
    const after = await page(x.app, url, { cursor: full.json().next_cursor })
    const { total: _total, ...rest } = after.json()
    assert.deepEqual(rest, { [list.items]: [], next_cursor: null })

    for (const cursor of MALFORMED) {
      const res = await page(x.app, url, { cursor })
      assert.equal(res.statusCode, 400, `${JSON.stringify(cursor)}: ${res.body}`)
      assert.equal(res.json().error.code, 'VALIDATION_FAILED', res.body)
    }
    // Only a malformed cursor is refused (as README.md says): one well made but never given, here past
    // every item, is a position like any other.
    const madeUp =
      list.order === 'serial' ? '999999999999' : b64(['2999-01-01T00:00:00.000000Z', randomUUID()])
    const fromMadeUp = await page(x.app, url, { cursor: madeUp, limit: '200' })
    assert.equal(fromMadeUp.statusCode, 200, fromMadeUp.body)
    assert.deepEqual(
      (fromMadeUp.json()[list.items] as Item[]).map((item) => item[list.id]),
      ids,
    )

    const second = (await page(x.app, url, { limit: String(LIMIT) })).json().next_cursor as string
    if (list.before) {
      const old = await walk(x.app, url, list, LIMIT, { param: 'before' })
      assert.deepEqual(
        old.items.map((item) => item[list.id]),
        ids,
        'before walks the same pages',
      )
      const both = await page(x.app, url, { cursor: second, before: second })
      assert.equal(both.statusCode, 400, both.body)
      assert.equal(both.json().error.code, 'VALIDATION_FAILED')
      assert.match(both.json().error.message, /cursor and before/)
    } else {
      // No `before` here: an unknown parameter, refused like any other.
      const refused = await page(x.app, url, { before: second })
      assert.equal(refused.statusCode, 400, refused.body)
      assert.equal(refused.json().error.code, 'VALIDATION_FAILED')
    }
  })
}

test('signing keys: the current key is said current, whichever page it is on, and no other', async (t) => {
  const x = await buildTestApp(t)
  const list = LISTS['GET /v1/signing-keys'] as List
  const { made } = await list.make(x)
  const { items } = await walk(x.app, '/v1/signing-keys', list, 2)
  assert.deepEqual(
    items.filter((k) => k.current).map((k) => k.kid),
    [made.at(-1)],
  )
})

/** Deletes an item of a list between two pages: a webhook by the API, a session as the purge does (the row gone). */
const DELETED: Record<string, (x: TestApp, id: string) => Promise<void>> = {
  'GET /v1/webhooks': async (x, id) => {
    const del = await x.app.inject({ method: 'DELETE', url: `/v1/webhooks/${id}`, headers: auth() })
    assert.equal(del.statusCode, 204)
  },
  'GET /v1/users/{user_id}/sessions': async (x, id) => {
    const gone = await x.app.db.sql`delete from sessions where id = ${id}`
    assert.equal(gone.count, 1)
  },
}

for (const [name, remove] of Object.entries(DELETED)) {
  test(`${name}: an item deleted between two pages, the next page still begins where the first ended`, async (t) => {
    const x = await buildTestApp(t, { webhookPollMs: 0 })
    const list = LISTS[name] as List
    const { url, made } = await list.make(x)
    const first = (await page(x.app, url, { limit: String(LIMIT) })).json()
    await remove(x, first[list.items].at(-1)[list.id] as string)
    const { items } = await walk(x.app, url, list, LIMIT, { start: first.next_cursor })
    const seen = [...first[list.items], ...items].map((item: Item) => item[list.id])
    assert.deepEqual(new Set(seen), new Set(made))
    assert.equal(seen.length, made.length)
  })
}

test("a user's sessions: a cursor well made but naming no session id is refused, not a 500", async (t) => {
  const x = await buildTestApp(t)
  await openSession(x.app, { user_id: 'paged' })
  // Cursors the text-keyed lists (api keys, tenants) would take: a session's id is a uuid, as Postgres writes it.
  for (const id of ['key_0', randomUUID().toUpperCase(), `${randomUUID()}x`]) {
    const res = await page(x.app, '/v1/users/paged/sessions', {
      cursor: b64(['2026-01-01T00:00:00.000000Z', id]),
    })
    assert.equal(res.statusCode, 400, `${id}: ${res.body}`)
    assert.equal(res.json().error.code, 'VALIDATION_FAILED', res.body)
  }
})

test('rows apart by microseconds only are neither skipped nor repeated (a cursor keeps the microseconds)', async (t) => {
  const x = await buildTestApp(t)
  for (let i = 0; i < 6; i++) await post(x.app, '/v1/tenants', { id: `m${i}`, name: `M ${i}` })
  // All in one millisecond, as now() in SQL may write them (the tenant `default` was): were the cursor's time
  // a JavaScript Date, rounded to the millisecond, the second page would skip rows.
  await x.app.db.sql`
    update tenants set created_at = '2026-01-01T00:00:00Z'::timestamptz + substr(id, 2)::int * interval '100 microseconds'
    where id like 'm%'`
  const { items } = await walk(x.app, '/v1/tenants', LISTS['GET /v1/tenants'] as List, 1)
  const ids = items.map((i) => i.id as string)
  assert.equal(new Set(ids).size, ids.length)
  assert.deepEqual(
    ids.filter((id) => id.startsWith('m')),
    ['m5', 'm4', 'm3', 'm2', 'm1', 'm0'],
  )
})

/** Tenants a and b, an admin key of each, and a helper to list as one of them. */
async function twoTenants(t: TestContext) {
  const x = await buildTestApp(t, { webhookPollMs: 0 })
  for (const id of ['a', 'b']) await post(x.app, '/v1/tenants', { id, name: id })
  const keyOf = async (tenant: string) =>
    (await post(x.app, '/v1/api-keys', { name: `admin ${tenant}`, scopes: ['admin'], tenant_id: tenant })).key
  const keys = { a: await keyOf('a'), b: await keyOf('b') }
  const as = async (tenant: 'a' | 'b', url: string) => {
    const res = await x.app.inject({ url, headers: auth(keys[tenant]) })
    assert.equal(res.statusCode, 200, res.body)
    return res.json()
  }
  return { ...x, keys, as }
}

test("another tenant's cursor shows only the caller's own items, and tells nothing of the other's", async (t) => {
  const x = await twoTenants(t)
  const create = async (tenant: 'a' | 'b', path: string, payload: Record<string, unknown>) => {
    const res = await x.app.inject({ method: 'POST', url: path, headers: auth(x.keys[tenant]), payload })
    assert.equal(res.statusCode, 201, res.body)
  }
  // B's things are older than A's, so a cursor of A's would place B's pages, were it honoured as A's.
  for (const tenant of ['b', 'a'] as const) {
    for (let i = 0; i < 3; i++) {
      await create(tenant, '/v1/api-keys', { name: `${tenant}${i}`, scopes: ['introspect'] })
      await create(tenant, '/v1/webhooks', { url: `https://hooks.example.com/${tenant}${i}` })
      x.clock.advance(1000)
    }
  }
  for (const [url, items] of [
    ['/v1/api-keys', 'api_keys'],
    ['/v1/webhooks', 'webhooks'],
  ] as const) {
    const ofA = await x.as('a', `${url}?limit=1`)
    assert.ok(ofA.next_cursor)
    const all = await x.as('b', url)
    const byACursor = await x.as('b', `${url}?cursor=${ofA.next_cursor}`)
    assert.deepEqual(
      byACursor[items].map((i: Item) => i.tenant_id),
      byACursor[items].map(() => 'b'),
    )
    // A's cursor only says "older than A's newest", which B's are: B sees its own list, no more.
    assert.deepEqual(byACursor, all)
  }

  // A user's sessions: B's alice is older than A's, so A's cursor only says "older than A's", as above.
  const b = await x.app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(x.keys.b),
    payload: { user_id: 'alice' },
  })
  assert.equal(b.statusCode, 201, b.body)
  x.clock.advance(1000)
  const a = await x.app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(x.keys.a),
    payload: { user_id: 'alice' },
  })
  const aSession = a.json().session.id as string
  const aSecond = await x.app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(x.keys.a),
    payload: { user_id: 'alice' },
  })
  assert.equal(aSecond.statusCode, 201, aSecond.body)
  const aCursor = (await x.as('a', '/v1/users/alice/sessions?limit=1')).next_cursor
  assert.ok(aCursor)
  const byA = await x.as('b', `/v1/users/alice/sessions?cursor=${aCursor}`)
  const allOfB = await x.as('b', '/v1/users/alice/sessions')
  assert.equal(allOfB.total, 1)
  assert.deepEqual(byA, allOfB)

  // Events: A's event id places B's page by the id alone; nothing of A's is in it.
  const aEvents = await x.as('a', '/v1/events?limit=1')
  const bEvents = await x.as('b', `/v1/events?cursor=${aEvents.events[0].id}`)
  assert.ok(bEvents.events.length > 0)
  assert.ok(bEvents.events.every((e: Item) => e.session_id !== aSession))
})
