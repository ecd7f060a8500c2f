import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { buildApp } from '../src/app.ts'
import { buildConfig } from '../src/config.ts'
import { startCli, stop } from './fixtures/process.ts'
import { ADMIN_KEY, auth, DATABASE_URL, dropSchema, TEST_KEK, uniqueSchema } from './helper.ts'

async function cli(args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  const [code] = await once(run.child, 'exit')
  return { code: code as number, output: run.output() }
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
