import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.ts'
import { buildConfig, type Config } from '../src/config.ts'
import { startCli, stop } from './fixtures/process.ts'
import {
  ADMIN_KEY,
  auth,
  DATABASE_URL,
  dropSchema,
  eventually,
  introspect,
  openSession,
  redisSettings,
  revokeSession,
  TEST_KEK,
  uniqueSchema,
} from './helper.ts'

async function cli(args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  let stdout = ''
  let stderr = ''
  run.child.stdout?.on('data', (d) => {
    stdout += d
  })
  run.child.stderr?.on('data', (d) => {
    stderr += d
  })
  // 'close', not 'exit': by then all of stdout and stderr has been read.
  const [code] = await once(run.child, 'close')
  return { code: code as number, output: run.output(), stdout, stderr }
}

test('the CLI migrates, creates a key that works (printed once), lists and revokes keys', async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }

  const migrated = await cli(['migrate'], env)
  assert.equal(migrated.code, 0, migrated.output)
  assert.match(migrated.output, /applied: 001_initial\.sql/)
  assert.match((await cli(['migrate'], env)).output, /up to date/)

  const created = await cli(['keys', 'create', '--name', 'gateway', '--scopes', 'introspect'], env)
  assert.equal(created.code, 0, created.output)
  const key = created.output.match(/^sak_[A-Za-z0-9_-]{43}$/m)?.[0]
  assert.ok(key, created.output)
  const id = created.output.match(/created (key_[0-9a-f]+)/)?.[1]
  assert.ok(id)

  const app = await buildApp(
    buildConfig({
      databaseUrl: DATABASE_URL,
      dbSchema: schema,
      logLevel: 'silent',
      signingKeyEncryptionKey: TEST_KEK,
    }),
  )
  t.after(() => app.close())
  const introspect = () =>
    app.inject({
      method: 'POST',
      url: '/v1/sessions/introspect',
      headers: { authorization: `Bearer ${key}` },
      payload: { token: 'x' },
    })
  assert.equal((await introspect()).statusCode, 200)

  const listed = await cli(['keys', 'list'], env)
  assert.match(listed.output, new RegExp(`${id}\\tgateway\\tintrospect\\tactive`))
  assert.ok(!listed.output.includes(key))

  assert.equal((await cli(['keys', 'revoke', id], env)).code, 0)
  assert.match(
    (await cli(['keys', 'list'], env)).output,
    new RegExp(`${id}\\tgateway\\tintrospect\\trevoked`),
  )
  // This replica trusted the key for API_KEY_CACHE_TTL_MS; a fresh one refuses it at once.
  const fresh = await buildApp(
    buildConfig({
      databaseUrl: DATABASE_URL,
      dbSchema: schema,
      logLevel: 'silent',
      signingKeyEncryptionKey: TEST_KEK,
    }),
  )
  t.after(() => fresh.close())
  const refused = await fresh.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: { authorization: `Bearer ${key}` },
    payload: { token: 'x' },
  })
  assert.equal(refused.statusCode, 401)
})

test('keys rotate-signing makes a new current key and keeps the old one published', async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn', SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK }

  const first = await cli(['keys', 'rotate-signing'], env)
  assert.equal(first.code, 0, first.output)
  const second = await cli(['keys', 'rotate-signing'], env)
  assert.equal(second.code, 0, second.output)
  const lines = (await cli(['keys', 'signing'], env)).output.trim().split('\n')
  assert.equal(lines.length, 2, lines.join('\n'))
  assert.match(lines[0] as string, /^[A-Za-z0-9_-]{43}\tEdDSA\t\S+\tcurrent$/)
  assert.match(lines[1] as string, /^[A-Za-z0-9_-]{43}\tEdDSA\t\S+\tpublished until \S+$/)
  assert.doesNotMatch(first.output + second.output, /PRIVATE|"d":/)

  // Without a key-encryption key (and not in development) it refuses, in one line.
  const refused = await cli(['keys', 'rotate-signing'], {
    DATABASE_URL,
    DB_SCHEMA: schema,
    LOG_LEVEL: 'warn',
  })
  assert.equal(refused.code, 1)
  assert.match(refused.output.trim(), /^invalid configuration: SIGNING_KEY_ENCRYPTION_KEY is required/)
})

test('tenants create, list and update (overrides replaced whole); a bad one is refused in one line, exit 2', async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }
  const lines = (output: string) => output.trim().split('\n')

  const created = await cli(
    ['tenants', 'create', '--id', 't2', '--name', 'Tenant two', '--settings', '{"idle_timeout":600}'],
    env,
  )
  assert.equal(created.code, 0, created.output)
  assert.deepEqual(lines(created.output), ['t2\tTenant two\t{"idle_timeout":600}'])
  const plain = await cli(['tenants', 'create', '--id', 't3', '--name', 'Tenant three'], env)
  assert.equal(plain.code, 0, plain.output)
  assert.deepEqual(lines(plain.output), ['t3\tTenant three\t{}'])

  const listed = await cli(['tenants', 'list'], env)
  assert.equal(listed.code, 0, listed.output)
  assert.deepEqual(lines(listed.output), [
    'default\tDefault\t{}',
    't2\tTenant two\t{"idle_timeout":600}',
    't3\tTenant three\t{}',
  ])

  // New settings replace the old ones whole; a new name alone keeps them.
  const replaced = await cli(['tenants', 'update', 't2', '--settings', '{"max_sessions_per_user":3}'], env)
  assert.equal(replaced.code, 0, replaced.output)
  assert.deepEqual(lines(replaced.output), ['t2\tTenant two\t{"max_sessions_per_user":3}'])
  const renamed = await cli(['tenants', 'update', 't2', '--name', 'Second'], env)
  assert.equal(renamed.code, 0, renamed.output)
  assert.deepEqual(lines(renamed.output), ['t2\tSecond\t{"max_sessions_per_user":3}'])

  const refusals: Array<[string[], RegExp]> = [
    [['tenants', 'create', '--id', 't4', '--name', 'x', '--settings', '{idle'], /--settings is not JSON/],
    [
      ['tenants', 'create', '--id', 't4', '--name', 'x', '--settings', '{"idle_timeout":"soon"}'],
      /\/settings\/idle_timeout/,
    ],
    [['tenants', 'create', '--id', 't4', '--name', 'x', '--settings', '{"color":"red"}'], /\/settings/],
    [['tenants', 'create', '--id', 'Not Valid', '--name', 'x'], /\/id/],
    [['tenants', 'update', 't2', '--settings', '{"ip_drift_policy":"panic"}'], /\/settings\/ip_drift_policy/],
    [['tenants', 'update', 't2'], /needs --name or --settings/],
  ]
  for (const [args, reason] of refusals) {
    const refused = await cli(args, env)
    assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.output}`)
    assert.equal(lines(refused.output).length, 1, refused.output)
    assert.match(refused.output, new RegExp(`^tenants ${args[1]}: `))
    assert.match(refused.output, reason)
  }
  // Refused by the store: one line too, exit 1.
  const twice = await cli(['tenants', 'create', '--id', 't2', '--name', 'again'], env)
  assert.equal(twice.code, 1, twice.output)
  assert.match(twice.output.trim(), /^session-authority: tenant t2 already exists$/)
  const missing = await cli(['tenants', 'update', 'nope', '--name', 'x'], env)
  assert.equal(missing.code, 1, missing.output)
  assert.match(missing.output.trim(), /^session-authority: tenant nope not found$/)

  assert.deepEqual(lines((await cli(['tenants', 'list'], env)).output), [
    'default\tDefault\t{}',
    't2\tSecond\t{"max_sessions_per_user":3}',
    't3\tTenant three\t{}',
  ])
})

test("keys create --tenant makes a key that acts for that tenant's sessions only", async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }

  assert.equal((await cli(['tenants', 'create', '--id', 't2', '--name', 'Two'], env)).code, 0)
  const created = await cli(
    ['keys', 'create', '--name', 'backend', '--scopes', 'sessions:read,sessions:write', '--tenant', 't2'],
    env,
  )
  assert.equal(created.code, 0, created.output)
  const key = created.output.match(/^sak_[A-Za-z0-9_-]{43}$/m)?.[0]
  const id = created.output.match(/created (key_[0-9a-f]+)/)?.[1]
  assert.ok(key && id, created.output)
  const listed = await cli(['keys', 'list'], env)
  assert.match(
    listed.output,
    new RegExp(`^${id}\\tbackend\\tsessions:read,sessions:write\\tactive\\tt2$`, 'm'),
  )
  const unknown = await cli(
    ['keys', 'create', '--name', 'x', '--scopes', 'introspect', '--tenant', 'nope'],
    env,
  )
  assert.equal(unknown.code, 1, unknown.output)
  assert.match(unknown.output.trim(), /^session-authority: tenant nope not found$/)

  const app = await buildApp(
    buildConfig({
      databaseUrl: DATABASE_URL,
      dbSchema: schema,
      logLevel: 'silent',
      adminApiKey: ADMIN_KEY,
      signingKeyEncryptionKey: TEST_KEK,
    }),
  )
  t.after(() => app.close())
  const open = async (headers: Record<string, string>) => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers,
      payload: { user_id: 'alice', ip: '203.0.113.7' },
    })
    assert.equal(res.statusCode, 201, res.body)
    return (res.json() as { session: { id: string } }).session.id
  }
  const ours = await open({ authorization: `Bearer ${key}` })
  const theirs = await open(auth()) // the default tenant's
  const get = (sessionId: string) =>
    app.inject({
      method: 'GET',
      url: `/v1/sessions/${sessionId}`,
      headers: { authorization: `Bearer ${key}` },
    })
  assert.equal((await get(ours)).statusCode, 200)
  const hidden = await get(theirs)
  assert.equal(hidden.statusCode, 404, hidden.body)
  assert.equal(hidden.json().error.code, 'SESSION_NOT_FOUND')
  // The platform key sees the new session, in t2.
  const seen = await app.inject({ method: 'GET', url: `/v1/sessions/${ours}`, headers: auth() })
  assert.equal(seen.statusCode, 200, seen.body)
})

test('the CLI refuses unknown scopes and commands with usage, exit 2', async () => {
  const env = { DATABASE_URL, LOG_LEVEL: 'warn' }
  const bad = await cli(['keys', 'create', '--name', 'x', '--scopes', 'root'], env)
  assert.equal(bad.code, 2)
  assert.match(bad.output, /scopes from: introspect, sessions:read, sessions:write, admin/)
  const unknown = await cli(['frobnicate'], env)
  assert.equal(unknown.code, 2)
  assert.match(unknown.output, /usage: session-authority/)
})

/** Runs `serve`, which should refuse at once; a service that starts instead is stopped, and the test fails. */
async function refusedServe(env: Record<string, string>) {
  const run = startCli(['serve'], env)
  try {
    const [code] = await once(run.child, 'exit', { signal: AbortSignal.timeout(30_000) })
    return { code: code as number, output: run.output() }
  } finally {
    await stop(run.child)
  }
}

test('serve refuses development settings off the developer machine, in one line', async () => {
  const example = 'dev-admin-key-change-me-0123456789abcdef'
  const devOnAllInterfaces = await refusedServe({ DEV_MODE: 'true', HOST: '0.0.0.0', PORT: '0' })
  assert.equal(devOnAllInterfaces.code, 1)
  assert.match(devOnAllInterfaces.output, /^invalid configuration: DEV_MODE .*loopback HOST.*\n$/)

  const exampleKey = await refusedServe({
    DATABASE_URL,
    ADMIN_API_KEY: example,
    SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK,
    PORT: '0',
  })
  assert.equal(exampleKey.code, 1)
  assert.match(exampleKey.output, /^invalid configuration: ADMIN_API_KEY is the README example[^\n]*\n$/)
  assert.ok(!exampleKey.output.includes(example))
})

test('the package bin runs from a checkout with nothing built (npx session-authority after npm ci)', async () => {
  const { execFile } = await import('node:child_process')
  const { promisify } = await import('node:util')
  const pkg = JSON.parse(await (await import('node:fs/promises')).readFile('package.json', 'utf8'))
  const bin = pkg.bin['session-authority'] as string
  const run = await promisify(execFile)(process.execPath, [bin, '--help'], { timeout: 60_000 })
  assert.match(run.stdout + run.stderr, /^usage: session-authority <command>/m)
})

// The sessions commands. Sessions are opened through an app on the same schema, with the real
// clock (the CLI's); the API is the reference the CLI's answers are compared with. Each CLI run
// starts a process, so the tests run as few as cover the behaviour.

/** An app on `schema`, with the real clock, closed after the test; the schema is dropped after it. */
async function appOn(t: TestContext, schema: string, overrides: Partial<Config> = {}) {
  const app = await buildApp(
    buildConfig({
      databaseUrl: DATABASE_URL,
      dbSchema: schema,
      logLevel: 'silent',
      adminApiKey: ADMIN_KEY,
      signingKeyEncryptionKey: TEST_KEK,
      ...overrides,
    }),
  )
  t.after(async () => {
    await app.close()
    await dropSchema(schema)
  })
  return app
}

/** A call to the API with the admin (platform) key, optionally acting in a tenant; fails on another status. */
async function api(
  app: FastifyInstance,
  url: string,
  { method = 'GET', tenant, payload, status = method === 'POST' ? 201 : 200 }: ApiCall = {},
) {
  const res = await app.inject({
    method,
    url,
    headers: { ...auth(), ...(tenant ? { 'x-tenant-id': tenant } : {}) },
    ...(payload ? { payload } : {}),
  })
  assert.equal(res.statusCode, status, res.body)
  return res.json()
}
interface ApiCall {
  method?: 'GET' | 'POST'
  tenant?: string
  payload?: Record<string, unknown>
  status?: number
}

const lines = (text: string) => text.split('\n').filter(Boolean)
const firstColumn = (text: string) => lines(text).map((row) => row.split('\t')[0])
const SESSION_LINE =
  /^[0-9a-f-]{36}\tactive\t\S+Z\t\S+Z\t\S+Z\t203\.0\.113\.7\tChrome 120\.0\.0\.0\tWindows 10\tdesktop$/

test("sessions list and users sessions: a user's live sessions, every page, as lines or the API's JSON", async (t) => {
  const schema = uniqueSchema()
  const app = await appOn(t, schema)
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }

  // More than one page of the API's largest (500), one ended, and another user's.
  const opened: string[] = []
  for (let i = 0; i < 502; i++) opened.push((await openSession(app)).session.id)
  const ended = opened[0] as string
  assert.equal((await revokeSession(app, ended)).statusCode, 200)
  await openSession(app, { user_id: 'bob' })

  const first = await api(app, '/v1/users/alice/sessions?limit=500')
  assert.ok(first.next_cursor, 'the API pages')
  const second = await api(app, `/v1/users/alice/sessions?limit=500&cursor=${first.next_cursor}`)
  const listed = [...first.sessions, ...second.sessions]
  assert.equal(listed.length, 501)

  const table = await cli(['sessions', 'list', '--user', 'alice'], env)
  assert.equal(table.code, 0, table.stderr)
  const rows = lines(table.stdout)
  assert.equal(rows.length, 501)
  for (const row of rows) assert.match(row, SESSION_LINE)
  assert.deepEqual(
    firstColumn(table.stdout),
    listed.map((s) => s.id),
    'newest first, as the API lists them',
  )
  assert.ok(!table.stdout.includes(ended))

  // users sessions is the same listing.
  const json = await cli(['users', 'sessions', 'alice', '--json'], env)
  assert.equal(json.code, 0, json.stderr)
  assert.deepEqual(JSON.parse(json.stdout), { sessions: listed })

  // Events page too: 250 of them, newest first, as the API's two pages give them.
  const page1 = await api(app, '/v1/events?limit=200')
  const page2 = await api(app, `/v1/events?limit=50&before=${page1.next_cursor}`)
  const events = await cli(['events', '--limit', '250', '--json'], env)
  assert.equal(events.code, 0, events.stderr)
  assert.deepEqual(JSON.parse(events.stdout), {
    events: [...page1.events, ...page2.events],
    next_cursor: page2.next_cursor,
  })
})

test('--tenant: user ids are per tenant; a session id is found in any tenant unless --tenant names another', async (t) => {
  const schema = uniqueSchema()
  const app = await appOn(t, schema)
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }
  await api(app, '/v1/tenants', { method: 'POST', payload: { id: 't2', name: 'Two' } })
  const ours = (await openSession(app)).session.id
  const payload = { user_id: 'alice', ip: '203.0.113.7' }
  const theirs = (await api(app, '/v1/sessions', { method: 'POST', tenant: 't2', payload })).session.id

  assert.deepEqual(firstColumn((await cli(['sessions', 'list', '--user', 'alice'], env)).stdout), [ours])
  const inT2 = await cli(['sessions', 'list', '--user', 'alice', '--tenant', 't2'], env)
  assert.deepEqual(firstColumn(inT2.stdout), [theirs])

  const hidden = await cli(['sessions', 'show', theirs, '--tenant', 'default'], env)
  assert.equal(hidden.code, 1)
  assert.equal(hidden.output, `session-authority: session ${theirs} not found\n`)
  const unknown = await cli(['users', 'sessions', 'alice', '--tenant', 'nope'], env)
  assert.equal(unknown.code, 1)
  assert.equal(unknown.output, 'session-authority: tenant nope not found\n')

  // Revoking everything of alice in t2 leaves the default tenant's alice alone.
  const revoked = await cli(['users', 'revoke-all', 'alice', '--tenant', 't2', '--json'], env)
  assert.deepEqual(JSON.parse(revoked.stdout), { revoked: 1 })
  assert.equal((await api(app, `/v1/sessions/${ours}`)).status, 'active')
  assert.equal((await api(app, `/v1/sessions/${theirs}`)).status, 'revoked')
  // A user's events are of one tenant too.
  const events = await cli(['events', '--user', 'alice', '--tenant', 't2', '--json'], env)
  assert.deepEqual(
    JSON.parse(events.stdout).events.map((e: { type: string; session_id: string }) => [e.type, e.session_id]),
    [
      ['session.revoked', theirs],
      ['session.created', theirs],
    ],
  )
})

test('sessions show and revoke: the domain ends the session with the reason, and a replica caching it hears', async (t) => {
  const schema = uniqueSchema()
  // L1 entries live a minute: only the invalidation feed can make the replica answer inactive sooner.
  const app = await appOn(t, schema, { ...redisSettings(), l1TtlMs: 60_000 })
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }
  const { token, session } = await openSession(app)
  const other = (await openSession(app)).session.id

  const shown = await cli(['sessions', 'show', session.id], env)
  assert.equal(shown.code, 0, shown.stderr)
  const fields = new Map(lines(shown.stdout).map((line) => line.split('\t', 2) as [string, string]))
  assert.equal(fields.get('id'), session.id)
  assert.equal(fields.get('user_id'), 'alice')
  assert.equal(fields.get('status'), 'active')
  assert.equal(fields.get('ended_at'), '-')
  assert.equal(JSON.parse(fields.get('device') as string).browser, 'Chrome')
  assert.ok(!shown.stdout.includes(token))
  const shownJson = await cli(['sessions', 'show', session.id, '--json'], env)
  assert.deepEqual(JSON.parse(shownJson.stdout), await api(app, `/v1/sessions/${session.id}`))

  await eventually(async () => (await api(app, '/readyz')).invalidation_feed === 'live', 10_000, 'feed live')
  assert.equal((await introspect(app, token)).active, true)
  const revoked = await cli(['sessions', 'revoke', session.id, '--reason', 'stolen laptop'], env)
  assert.equal(revoked.code, 0, revoked.output)
  assert.equal(revoked.stdout, `revoked ${session.id}\n`)
  const now = await api(app, `/v1/sessions/${session.id}`)
  assert.deepEqual([now.status, now.end_reason], ['revoked', 'stolen laptop'])
  await eventually(async () => !(await introspect(app, token)).active, 10_000, 'the replica hears')

  // Idempotent: once more changes nothing and records nothing.
  const again = await cli(['sessions', 'revoke', session.id, '--json'], env)
  assert.equal(again.code, 0, again.output)
  assert.deepEqual(JSON.parse(again.stdout), await api(app, `/v1/sessions/${session.id}`))
  assert.equal(JSON.parse(again.stdout).end_reason, 'stolen laptop')
  const history = await api(app, '/v1/users/alice/events?type=session.revoked')
  assert.deepEqual(
    history.events.map((e: { session_id: string; data: unknown }) => [e.session_id, e.data]),
    [[session.id, { reason: 'stolen laptop' }]],
  )
  // Only that session: the user's other one lives on.
  assert.equal((await api(app, `/v1/sessions/${other}`)).status, 'active')
})

test('users revoke-all ends every open session of the user but the one excepted, with the reason (default cli)', async (t) => {
  const schema = uniqueSchema()
  const app = await appOn(t, schema)
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }
  const ids: string[] = []
  for (let i = 0; i < 3; i++) ids.push((await openSession(app)).session.id)
  const [kept, a, b] = ids as [string, string, string]
  const bobs = (await openSession(app, { user_id: 'bob' })).session.id

  const run = await cli(['users', 'revoke-all', 'alice', '--except', kept, '--reason', 'offboarding'], env)
  assert.equal(run.code, 0, run.output)
  assert.equal(run.stdout, 'revoked 2\n')
  for (const id of [a, b]) {
    const s = await api(app, `/v1/sessions/${id}`)
    assert.deepEqual([s.status, s.end_reason], ['revoked', 'offboarding'])
  }
  assert.equal((await api(app, `/v1/sessions/${kept}`)).status, 'active')
  assert.equal((await api(app, `/v1/sessions/${bobs}`)).status, 'active')
  const recorded = await api(app, '/v1/users/alice/events?type=session.revoked')
  assert.deepEqual(
    recorded.events.map((e: { session_id: string; data: unknown }) => [e.session_id, e.data]).sort(),
    [
      [a, { reason: 'offboarding' }],
      [b, { reason: 'offboarding' }],
    ].sort(),
  )

  const rest = await cli(['users', 'revoke-all', 'alice', '--json'], env)
  assert.deepEqual(JSON.parse(rest.stdout), { revoked: 1 })
  const last = await api(app, `/v1/sessions/${kept}`)
  assert.deepEqual([last.status, last.end_reason], ['revoked', 'cli'])
})

test('events: newest first, filtered by user, type and time, paged with --limit and --before', async (t) => {
  const schema = uniqueSchema()
  const app = await appOn(t, schema)
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn' }
  const start = new Date().toISOString()
  const alice = [(await openSession(app)).session.id, (await openSession(app)).session.id]
  const bob = (await openSession(app, { user_id: 'bob' })).session.id
  assert.equal((await revokeSession(app, alice[0] as string)).statusCode, 200)

  // Two at a time: the cursor of the rest is told on stderr, and --before goes on from it.
  const first = await cli(['events', '--limit', '2'], env)
  assert.equal(first.code, 0, first.stderr)
  const rows = lines(first.stdout).map((row) => row.split('\t'))
  assert.deepEqual(
    rows.map((r) => [r[2], r[3], r[4]]),
    [
      ['session.revoked', 'alice', alice[0]],
      ['session.created', 'bob', bob],
    ],
  )
  for (const row of rows) {
    assert.match(row[0] as string, /^[0-9]+$/)
    assert.equal(new Date(row[1] as string).toISOString(), row[1])
    assert.ok(Object.keys(JSON.parse(row[5] as string)).length > 0, row[5])
  }
  const cursor = first.stderr.match(/^more: --before ([0-9]+)\n$/)?.[1]
  assert.ok(cursor, first.stderr)
  const rest = await cli(['events', '--limit', '3', '--before', cursor, '--json'], env)
  assert.deepEqual(JSON.parse(rest.stdout), {
    events: (await api(app, `/v1/events?before=${cursor}`)).events,
    next_cursor: null,
  })
  assert.deepEqual(
    JSON.parse(rest.stdout).events.map((e: { session_id: string }) => e.session_id),
    [alice[1], alice[0]],
  )

  const filtered = await cli(
    ['events', '--user', 'alice', '--type', 'session.created', '--since', start, '--json'],
    env,
  )
  assert.equal(filtered.code, 0, filtered.stderr)
  const expected = await api(app, `/v1/users/alice/events?type=session.created&since=${start}`)
  assert.equal(expected.events.length, 2)
  assert.deepEqual(JSON.parse(filtered.stdout), expected)
  const before = await cli(['events', '--until', start, '--json'], env)
  assert.deepEqual(JSON.parse(before.stdout), { events: [], next_cursor: null })
})

/** A listing's items under their name, in a fixed order (each as its JSON text, sorted). */
function itemsOf(body: Record<string, unknown>) {
  const [name, items] = Object.entries(body).find(([, value]) => Array.isArray(value)) ?? []
  return { [String(name)]: (items as unknown[]).map((item) => JSON.stringify(item)).sort() }
}

test('--json on keys, signing keys, webhooks and tenants lists: the API views, no secret; the lines unchanged', async (t) => {
  const schema = uniqueSchema()
  const app = await appOn(t, schema)
  const env = { DATABASE_URL, DB_SCHEMA: schema, LOG_LEVEL: 'warn', SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK }
  await api(app, '/v1/tenants', { method: 'POST', payload: { id: 't2', name: 'Two' } })
  const payload = { name: 'gw', scopes: ['introspect'], tenant_id: 't2' }
  const { key } = await api(app, '/v1/api-keys', { method: 'POST', payload })
  const hook = { url: 'https://hooks.example.com/sa', event_types: ['session.revoked'] }
  const { secret } = await api(app, '/v1/webhooks', { method: 'POST', tenant: 'default', payload: hook })

  const listings: Array<[string[], string]> = [
    [['keys', 'list'], '/v1/api-keys'],
    [['keys', 'signing'], '/v1/signing-keys'],
    [['webhooks', 'list'], '/v1/webhooks'],
    [['tenants', 'list'], '/v1/tenants'],
  ]
  for (const [args, url] of listings) {
    const json = await cli([...args, '--json'], env)
    assert.equal(json.code, 0, json.output)
    // The same items as the API's (which pages them, newest first; the CLI lists them all).
    assert.deepEqual(itemsOf(JSON.parse(json.stdout)), itemsOf(await api(app, url)), args.join(' '))
    for (const shown of [key, secret]) assert.ok(!json.stdout.includes(shown))
  }
  const hooks = await cli(['webhooks', 'list'], env)
  assert.match(
    hooks.stdout,
    /^wh_[0-9a-f]{16}\thttps:\/\/hooks\.example\.com\/sa\tsession\.revoked\tenabled\tdefault\n$/,
  )
})

test('the new commands refuse missing or bad arguments with usage or one line, exit 2', async () => {
  const env = { DATABASE_URL, LOG_LEVEL: 'warn' }
  const usage: string[][] = [
    ['sessions', 'list'],
    ['sessions', 'show'],
    ['users', 'revoke-all'],
    ['events', 'alice'],
    ['sessions', 'list', '--user', 'alice', '--frobnicate'],
    ['migrate', '--json'],
  ]
  for (const args of usage) {
    const refused = await cli(args, env)
    assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.output}`)
    assert.equal(refused.stdout, '')
    assert.match(refused.stderr, /usage: session-authority <command>/, args.join(' '))
  }
  const oneLine: Array<[string[], RegExp]> = [
    [['sessions', 'revoke', 'nope'], /^sessions revoke: session id: /],
    [['users', 'revoke-all', 'alice', '--except', 'nope'], /^users revoke-all: --except: /],
    [['events', '--limit', '0'], /^events: --limit must be a positive whole number\n$/],
    [['events', '--since', 'yesterday'], /^events: --since: /],
  ]
  for (const [args, reason] of oneLine) {
    const refused = await cli(args, env)
    assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.output}`)
    assert.equal(lines(refused.output).length, 1, refused.output)
    assert.match(refused.stderr, reason)
  }
})
