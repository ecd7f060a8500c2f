import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { test } from 'node:test'
import { freePort, startCli, stop, waitForOk } from './fixtures/process.ts'
import { ADMIN_KEY, CHROME_WINDOWS } from './helper.ts'

async function call(base: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { token?: string } }
}

test('with no DATABASE_URL the service runs on embedded Postgres and keeps its data across a restart', async (t) => {
  const dataDir = await mkdtemp(`${tmpdir()}/sa-embedded-`)
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  // The README's one command: development mode, so no key-encryption key is needed.
  const env = {
    PORT: String(port),
    DATA_DIR: dataDir,
    ADMIN_API_KEY: ADMIN_KEY,
    LOG_LEVEL: 'info',
    DEV_MODE: 'true',
  }

  const first = startCli(['serve'], env)
  t.after(() => stop(first.child))
  await waitForOk(`${base}/readyz`, first.child, 240_000, first.output)
  assert.match(first.output(), /embedded Postgres/)

  const kept = await call(base, 'POST', '/v1/sessions', { user_id: 'alice', user_agent: CHROME_WINDOWS })
  assert.equal(kept.status, 201)
  const gone = await call(base, 'POST', '/v1/sessions', { user_id: 'alice' })
  assert.equal(
    (await call(base, 'POST', '/v1/sessions/introspect', { token: gone.body.token })).body.active,
    true,
  )
  const goneId = (gone.body.session as { id: string }).id
  assert.equal((await call(base, 'DELETE', `/v1/sessions/${goneId}`)).status, 200)
  assert.equal(
    (await call(base, 'POST', '/v1/sessions/introspect', { token: gone.body.token })).body.active,
    false,
  )

  const jwt = await call(base, 'POST', '/v1/sessions', { user_id: 'alice', token_type: 'jwt' })
  assert.equal(jwt.status, 201)
  const accessToken = jwt.body.access_token as string
  assert.equal(
    (await call(base, 'POST', '/v1/sessions/introspect', { token: accessToken })).body.active,
    true,
  )
  assert.match(first.output(), /DEV_MODE/)

  // SIGTERM closes gracefully (exit 0); the data survives.
  assert.equal(await stop(first.child), 0)
  assert.doesNotMatch(first.output(), /sat_[A-Za-z0-9_-]{43}|srt_|eyJ/)

  const second = startCli(['serve'], env)
  t.after(() => stop(second.child))
  await waitForOk(`${base}/readyz`, second.child, 240_000, second.output)
  const after = await call(base, 'POST', '/v1/sessions/introspect', { token: kept.body.token })
  assert.equal(after.body.active, true)
  // The signing key survived too: the access JWT still verifies.
  assert.equal(
    (await call(base, 'POST', '/v1/sessions/introspect', { token: accessToken })).body.active,
    true,
  )
  assert.equal(
    (await call(base, 'POST', '/v1/sessions/introspect', { token: gone.body.token })).body.active,
    false,
  )
  assert.equal(await stop(second.child), 0)
})

test('a bad setting stops the process at start with one line naming the variable', async () => {
  const { child, output } = startCli(['serve'], { PORT: 'eighty' })
  const code = await new Promise((resolve) => child.on('exit', resolve))
  assert.equal(code, 1)
  assert.equal(output().trim(), 'invalid configuration: PORT: Expected integer')
})

test('without a key-encryption key, outside development, the service refuses to start', async () => {
  const { child, output } = startCli(['serve'], { PORT: '0', DATA_DIR: '/nonexistent' })
  const code = await new Promise((resolve) => child.on('exit', resolve))
  assert.equal(code, 1)
  assert.match(output().trim(), /^invalid configuration: SIGNING_KEY_ENCRYPTION_KEY is required/)
})
