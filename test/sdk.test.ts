import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type TestContext, test } from 'node:test'
import { promisify } from 'node:util'
import Fastify from 'fastify'
import { Webhook } from 'standardwebhooks'
import { generateSchema, OPENAPI_FILE, SCHEMA_FILE } from '../packages/client/scripts/generate.ts'
import {
  type ClientOptions,
  clientInfo,
  createClient,
  ERROR_CODES,
  type ServiceErrorCode,
  SessionAuthorityError,
  type SessionEvent,
  verifyWebhook,
  WebhookVerificationError,
} from '../packages/client/src/index.ts'
import { Errors, type ErrorCode as ServiceCode } from '../src/errors.ts'
import { startReceiver } from './fixtures/receiver.ts'
import { ADMIN_KEY, buildTestApp, CHROME_WINDOWS, redisSettings, SAFARI_IPHONE } from './helper.ts'

/**
 * The client SDK (packages/client) against a live service: a real app on a
 * local port, with the machine's Postgres and Redis. Retries are shown with a
 * small HTTP server in front of the service that answers 503 (or 429, or
 * nothing) as told, and with a fetch that fails the way a network does.
 */

const PACKAGE = new URL('../packages/client/', import.meta.url)
const CLIENT = { ip: '203.0.113.7', user_agent: CHROME_WINDOWS }
// Retries without waiting around in tests.
const FAST = { limit: 2, baseDelayMs: 1, maxDelayMs: 50 } satisfies ClientOptions['retries']

/** A service listening on 127.0.0.1, and an SDK client of it with the admin key. */
async function service(t: TestContext, options: Partial<ClientOptions> = {}) {
  const built = await buildTestApp(t, { ...redisSettings(), webhookAllowedCidrs: '127.0.0.0/8' })
  const base = await built.app.listen({ host: '127.0.0.1', port: 0 })
  const client = createClient({ baseUrl: base, apiKey: ADMIN_KEY, retries: FAST, ...options })
  return { ...built, base, client }
}

/** Everything an async iterable yields. */
async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of items) out.push(item)
  return out
}

/** The error a promise rejects with (fails when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (err) {
    return err
  }
  assert.fail('expected a rejection')
}

type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'forward' | 'hang'

/**
 * An HTTP server in front of `target` that answers each request with the next
 * scripted answer (a bare status, or none at all), then forwards the rest.
 * A request is recorded as it arrives (its body once read), so one abandoned
 * while its body is on the way still counts; `arrived(n)` waits for the n-th.
 */
async function front(t: TestContext, target: string, script: Answer[]) {
  const seen: Array<{ method: string; url: string; body: string }> = []
  const waiting: Array<{ count: number; resolve: () => void }> = []
  const server = createServer(async (req: IncomingMessage, res) => {
    const request = { method: req.method ?? '', url: req.url ?? '', body: '' }
    seen.push(request)
    for (const waiter of waiting.filter((w) => seen.length >= w.count)) waiter.resolve()
    const answer = script.shift() ?? 'forward'
    try {
      const chunks: Buffer[] = []
      for await (const chunk of req) chunks.push(chunk as Buffer)
      request.body = Buffer.concat(chunks).toString('utf8')
      if (answer === 'hang') return
      if (answer !== 'forward') {
        const code = answer.status === 429 ? 'RATE_LIMITED' : 'SERVICE_UNAVAILABLE'
        const payload = JSON.stringify({ error: { code, message: 'scripted' } })
        res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers })
        res.end(answer.body ?? payload)
        return
      }
      const headers = Object.fromEntries(
        Object.entries(req.headers).filter(
          (entry): entry is [string, string] => typeof entry[1] === 'string',
        ),
      )
      delete headers.host
      delete headers['content-length']
      const upstream = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers,
        body: request.body || undefined,
      })
      res.writeHead(upstream.status, Object.fromEntries(upstream.headers))
      res.end(Buffer.from(await upstream.arrayBuffer()))
    } catch {
      // The client gave up mid-request (its timeout), or the service did not answer: nothing to send.
      res.destroy()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  /** Resolves once `count` requests have arrived; rejects after `withinMs` without them. */
  const arrived = (count: number, withinMs: number) =>
    new Promise<void>((resolve, reject) => {
      if (seen.length >= count) return resolve()
      const timer = setTimeout(
        () => reject(new Error(`${seen.length} of ${count} requests arrived in ${withinMs} ms`)),
        withinMs,
      )
      waiting.push({
        count,
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
      })
    })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, arrived }
}

/** A fetch that fails like an unreachable network `failures` times, then fetches; counts every call. */
function flakyFetch(failures: number) {
  const calls: Array<{ method: string; url: string; body: string }> = []
  const fetchImpl = async (input: Request, init?: RequestInit) => {
    const request = new Request(input, init)
    calls.push({ method: request.method, url: request.url, body: await request.clone().text() })
    if (calls.length <= failures) throw new TypeError('fetch failed', { cause: new Error('ECONNRESET') })
    return fetch(request)
  }
  return { fetch: fetchImpl, calls }
}

// ---------------------------------------------------------------------------
// The package itself
// ---------------------------------------------------------------------------

test('the committed src/schema.ts is what openapi-typescript makes of openapi.yaml (npm run sdk:types)', async () => {
  const fresh = await generateSchema(await readFile(OPENAPI_FILE, 'utf8'))
  assert.ok(fresh === (await readFile(SCHEMA_FILE, 'utf8')), 'schema.ts is stale: run `npm run sdk:types`')
})

test('the package has one runtime dependency, and its runtime files import only it and each other', async () => {
  const pkg = JSON.parse(await readFile(new URL('package.json', PACKAGE), 'utf8'))
  assert.equal(pkg.name, 'session-authority-client')
  assert.equal(pkg.type, 'module')
  assert.equal(pkg.license, 'MIT')
  assert.deepEqual(Object.keys(pkg.dependencies), ['openapi-fetch'])
  assert.equal(pkg.exports['.'].default, './dist/index.js')
  assert.deepEqual(pkg.files, ['dist'])
  assert.ok(pkg.engines.node)

  const dir = new URL('src/', PACKAGE)
  const files = (await readdir(dir)).filter((name) => name.endsWith('.ts'))
  assert.ok(files.includes('index.ts') && files.includes('schema.ts'))
  const specifier = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g
  for (const name of files) {
    const source = await readFile(new URL(name, dir), 'utf8')
    const imports = [...source.matchAll(specifier)].map((match) => match[1] ?? '')
    for (const spec of imports) {
      assert.ok(spec === 'openapi-fetch' || /^\.\/[a-z-]+\.ts$/.test(spec), `${name} imports ${spec}`)
    }
    // Globals an edge runtime does not have (schema.ts is types and their descriptions only).
    if (name !== 'schema.ts') assert.doesNotMatch(source, /\b(require|process|Buffer|__dirname)\b/, name)
  }
})

test('the package type-checks with web APIs only (no Node types), as edge runtimes run it', async () => {
  const tsc = new URL('../node_modules/typescript/bin/tsc', import.meta.url)
  const project = new URL('tsconfig.json', PACKAGE)
  const run = promisify(execFile)(process.execPath, [tsc.pathname, '-p', project.pathname, '--noEmit'])
  const { stdout } = await run.catch((err: { stdout?: string }) => assert.fail(err.stdout ?? String(err)))
  assert.equal(stdout, '')
  const config = JSON.parse(await readFile(project, 'utf8'))
  assert.deepEqual(config.compilerOptions.types, [])
})

test('ErrorCode lists every code the service can answer with, and no other', () => {
  const service = Object.keys(Errors).sort()
  assert.deepEqual([...ERROR_CODES].sort(), service)
  // And the types agree, for `npm run typecheck`.
  const fromService: ServiceErrorCode = 'SESSION_NOT_FOUND' as ServiceCode
  const toService: ServiceCode = 'SESSION_NOT_FOUND' as ServiceErrorCode
  assert.equal(fromService, toService)
})

// ---------------------------------------------------------------------------
// Against the service
// ---------------------------------------------------------------------------

test('open an opaque session, introspect it, revoke it: then it is inactive, with the reason', async (t) => {
  const { client } = await service(t)
  const opened = await client.openSession({ user_id: 'alice', ...CLIENT, metadata: { plan: 'pro' } })
  assert.equal(opened.token_type, 'opaque')
  assert.match(opened.token, /^sat_/)
  assert.equal(opened.session.user_id, 'alice')
  assert.equal(opened.session.device.browser, 'Chrome')

  const active = await client.introspect(opened.token, CLIENT)
  assert.equal(active.active, true)
  assert.equal(active.session_id, opened.session.id)
  assert.equal(active.user_id, 'alice')
  assert.deepEqual(active.metadata, { plan: 'pro' })

  const revoked = await client.revoke(opened.session.id, { reason: 'logout' })
  assert.equal(revoked.status, 'revoked')
  assert.equal(revoked.end_reason, 'logout')
  // Idempotent: again is the same answer, not an error.
  assert.equal((await client.revoke(opened.session.id)).status, 'revoked')

  const inactive = await client.introspect(opened.token, CLIENT)
  assert.equal(inactive.active, false)
  assert.equal(inactive.reason, 'revoked')
  assert.equal((await client.getSession(opened.session.id)).status, 'revoked')
})

test('revokeByToken ends the session of an opaque token, an access JWT or a refresh token; scope user ends all', async (t) => {
  const { client } = await service(t)
  const opaque = await client.openSession({ user_id: 'alice', ...CLIENT })
  const ended = await client.revokeByToken(opaque.token, { reason: 'logout' })
  assert.equal(ended.id, opaque.session.id)
  assert.equal(ended.end_reason, 'logout')
  assert.equal((await client.revokeByToken(opaque.token)).status, 'revoked')

  const jwt = await client.openSession({ user_id: 'alice', token_type: 'jwt', ...CLIENT })
  assert.equal((await client.revokeByToken(jwt.refresh_token)).id, jwt.session.id)
  const seen = await client.introspect(jwt.access_token, CLIENT)
  assert.equal(seen.active, false)
  assert.equal(seen.reason, 'revoked')

  const phone = await client.openSession({ user_id: 'bob', user_agent: SAFARI_IPHONE })
  const laptop = await client.openSession({ user_id: 'bob', token_type: 'jwt', ...CLIENT })
  await client.revokeByToken(laptop.access_token, { scope: 'user' })
  assert.equal((await client.getSession(phone.session.id)).status, 'revoked')

  const unknown = await rejection(client.revokeByToken('sat_never-issued'))
  assert.ok(unknown instanceof SessionAuthorityError)
  assert.equal(unknown.code, 'SESSION_NOT_FOUND')
  const never = await client.introspect('sat_never-issued')
  assert.equal(never.active, false)
  assert.equal(never.reason, 'unknown')
})

test('a gateway key (introspect only) learns "inactive" but not why', async (t) => {
  const { base, client } = await service(t)
  // An API key made through the raw client (the call has no helper of its own).
  const { data: created, error } = await client.raw.POST('/v1/api-keys', {
    body: { name: 'gateway', scopes: ['introspect'] },
  })
  assert.ok(created, JSON.stringify(error))
  const gateway = createClient({ baseUrl: base, apiKey: created.key })
  const { token, session } = await client.openSession({ user_id: 'alice', ...CLIENT })
  await client.suspend(session.id, { reason: 'fraud check' })
  const answer = await gateway.introspect(token, CLIENT)
  assert.equal(answer.active, false)
  assert.equal(answer.reason, undefined)
  const trusted = await client.introspect(token, CLIENT)
  assert.equal(trusted.active, false)
  assert.equal(trusted.reason, 'suspended')
})

test('a JWT session: open, introspect the access token, refresh (the old refresh token is spent)', async (t) => {
  const { client } = await service(t)
  const opened = await client.openSession({ user_id: 'bob', token_type: 'jwt', ...CLIENT })
  assert.equal(opened.token_type, 'jwt')
  assert.equal(opened.access_token.split('.').length, 3)
  const seen = await client.introspect(opened.access_token, CLIENT)
  assert.equal(seen.active, true)
  assert.equal(seen.token_type, 'jwt')
  assert.ok(seen.jti)

  const next = await client.refresh(opened.refresh_token, CLIENT)
  assert.equal(next.session.id, opened.session.id)
  assert.notEqual(next.refresh_token, opened.refresh_token)
  assert.equal((await client.introspect(next.access_token, CLIENT)).active, true)

  const bogus = await rejection(client.refresh('not-a-refresh-token'))
  assert.ok(bogus instanceof SessionAuthorityError)
  assert.equal(bogus.code, 'REFRESH_TOKEN_INVALID')
  assert.equal(bogus.status, 400)
})

test('suspend and resume', async (t) => {
  const { client } = await service(t)
  const { token, session } = await client.openSession({ user_id: 'alice', ...CLIENT })
  const suspended = await client.suspend(session.id, { reason: 'review' })
  assert.equal(suspended.status, 'suspended')
  assert.equal(suspended.suspension_reason, 'review')
  assert.equal((await client.introspect(token, CLIENT)).active, false)
  assert.equal((await client.resume(session.id, CLIENT)).status, 'active')
  assert.equal((await client.introspect(token, CLIENT)).active, true)
})

test('a refusal is a SessionAuthorityError with the code, status, message and request id', async (t) => {
  const { base, client } = await service(t)
  const missing = randomUUID()
  const err = await rejection(client.getSession(missing))
  assert.ok(err instanceof SessionAuthorityError)
  assert.equal(err.code, 'SESSION_NOT_FOUND')
  assert.equal(err.status, 404)
  assert.match(err.message, new RegExp(missing))
  assert.ok(err.requestId)

  // The request id is the one the service logged and answered with.
  const res = await fetch(`${base}/v1/sessions/${missing}`, {
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'x-request-id': 'sdk-test-1' },
  })
  assert.equal(res.headers.get('x-request-id'), 'sdk-test-1')

  const invalid = await rejection(client.getSession('not-a-uuid'))
  assert.ok(invalid instanceof SessionAuthorityError)
  assert.equal(invalid.code, 'VALIDATION_FAILED')

  const stranger = createClient({ baseUrl: base, apiKey: 'sat_not-a-key-0123456789abcdef0123456789' })
  const refused = await rejection(stranger.introspect('sat_whatever'))
  assert.ok(refused instanceof SessionAuthorityError)
  assert.equal(refused.code, 'UNAUTHORIZED')
  assert.equal(refused.status, 401)

  // An answer without the service's error shape (a proxy's page) still throws, as UNEXPECTED_RESPONSE.
  const html = { status: 500, headers: { 'content-type': 'text/html' }, body: '<h1>oops</h1>' }
  const proxy = await front(t, base, [html])
  const odd = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY, retries: 0 })
  const page = await rejection(odd.getSession(missing))
  assert.ok(page instanceof SessionAuthorityError)
  assert.equal(page.status, 500)
  assert.equal(page.code, 'UNEXPECTED_RESPONSE')
})

test('listSessions iterates every page of a user with more sessions than a page holds', async (t) => {
  const { base, client } = await service(t)
  const opened: string[] = []
  for (let i = 0; i < 7; i++)
    opened.push((await client.openSession({ user_id: 'carol', ...CLIENT })).session.id)
  await client.openSession({ user_id: 'dave', ...CLIENT })
  const current = opened[3] ?? ''

  // Through a forwarding front server, to count the requests.
  const proxy = await front(t, base, [])
  const watched = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY })
  const listed = await all(watched.listSessions('carol', { limit: 3, currentSessionId: current }))
  assert.deepEqual(listed.map((s) => s.id).sort(), [...opened].sort())
  assert.equal(new Set(listed.map((s) => s.id)).size, 7)
  assert.deepEqual(
    listed.filter((s) => s.current).map((s) => s.id),
    [current],
  )
  // Three requests of three: 3 + 3 + 1.
  const pages = proxy.seen.filter((r) => r.url.startsWith('/v1/users/carol/sessions'))
  assert.equal(pages.length, 3)
  assert.match(pages[1]?.url ?? '', /cursor=/)

  assert.deepEqual(await all(client.listSessions('nobody')), [])
})

test('logoutOthers keeps the current session and ends the rest; revokeUserSessions ends all', async (t) => {
  const { client } = await service(t)
  const keep = await client.openSession({ user_id: 'erin', ...CLIENT })
  const other = await client.openSession({ user_id: 'erin', user_agent: SAFARI_IPHONE })
  const third = await client.openSession({ user_id: 'erin', ...CLIENT })
  const bystander = await client.openSession({ user_id: 'frank', ...CLIENT })

  assert.deepEqual(await client.logoutOthers('erin', keep.session.id, { reason: 'logout_others' }), {
    revoked: 2,
  })
  assert.equal((await client.introspect(keep.token, CLIENT)).active, true)
  assert.equal((await client.introspect(other.token)).active, false)
  assert.equal((await client.getSession(third.session.id)).end_reason, 'logout_others')
  assert.deepEqual(
    (await all(client.listSessions('erin'))).map((s) => s.id),
    [keep.session.id],
  )

  assert.deepEqual(await client.revokeUserSessions('erin'), { revoked: 1 })
  assert.equal((await client.introspect(keep.token)).active, false)
  assert.equal((await client.introspect(bystander.token, CLIENT)).active, true)
})

test('events and userEvents page through the whole history, newest first, with filters', async (t) => {
  const { base, client } = await service(t)
  for (let i = 0; i < 4; i++) {
    const { session } = await client.openSession({ user_id: 'gina', ...CLIENT })
    await client.revoke(session.id)
  }
  await client.openSession({ user_id: 'hank', ...CLIENT })

  const gina = await all(client.userEvents('gina', { limit: 3 }))
  assert.equal(gina.length, 8)
  assert.ok(gina.every((e) => e.user_id === 'gina'))
  assert.deepEqual(
    gina.map((e) => e.type).sort(),
    [...Array(4).fill('session.created'), ...Array(4).fill('session.revoked')].sort(),
  )
  assertNewestFirst(gina)

  const everyone = await all(client.events({ limit: 2 }))
  assert.equal(everyone.length, 9)
  assertNewestFirst(everyone)
  const revocations = await all(client.events({ type: 'session.revoked', limit: 3 }))
  assert.equal(revocations.length, 4)
  assert.equal((await all(client.events({ userId: 'hank' }))).length, 1)
  assert.equal((await all(client.events({ since: new Date('2100-01-01T00:00:00Z') }))).length, 0)

  // The next page is asked for by `cursor`, never by the deprecated `before`.
  const proxy = await front(t, base, [])
  const watched = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY })
  assert.equal((await all(watched.userEvents('gina', { limit: 3 }))).length, 8)
  assert.equal((await all(watched.events({ limit: 5 }))).length, 9)
  const urls = proxy.seen.map((r) => new URL(r.url, proxy.url))
  assert.equal(urls.length, 3 + 2)
  assert.deepEqual(
    urls.map((u) => [u.pathname, u.searchParams.has('cursor'), u.searchParams.has('before')]),
    [
      ['/v1/users/gina/events', false, false],
      ['/v1/users/gina/events', true, false],
      ['/v1/users/gina/events', true, false],
      ['/v1/events', false, false],
      ['/v1/events', true, false],
    ],
  )
})

function assertNewestFirst(events: SessionEvent[]) {
  const ids = events.map((e) => BigInt(e.id))
  assert.deepEqual(
    ids,
    [...ids].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)),
  )
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

test('a read that gets 503 twice is retried and succeeds; with retries: 0 the 503 is the answer', async (t) => {
  const { base, client } = await service(t)
  const { session } = await client.openSession({ user_id: 'alice', ...CLIENT })

  const proxy = await front(t, base, [{ status: 503 }, { status: 503 }])
  const retrying = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY, retries: FAST })
  assert.equal((await retrying.getSession(session.id)).id, session.id)
  assert.equal(proxy.seen.length, 3)

  const once = await front(t, base, [{ status: 503 }, { status: 503 }])
  const single = createClient({ baseUrl: once.url, apiKey: ADMIN_KEY, retries: 0 })
  const err = await rejection(single.getSession(session.id))
  assert.ok(err instanceof SessionAuthorityError)
  assert.equal(err.code, 'SERVICE_UNAVAILABLE')
  assert.equal(once.seen.length, 1)

  // Attempts are bounded: three 503s and two retries give up with the third.
  const down = await front(t, base, [{ status: 502 }, { status: 504 }, { status: 503 }])
  const bounded = createClient({ baseUrl: down.url, apiKey: ADMIN_KEY, retries: FAST })
  assert.equal(((await rejection(bounded.getSession(session.id))) as SessionAuthorityError).status, 503)
  assert.equal(down.seen.length, 3)

  // A revocation is safe to repeat, POST though it is: retried, with its body.
  const revoking = await front(t, base, [{ status: 503 }])
  const sdk = createClient({ baseUrl: revoking.url, apiKey: ADMIN_KEY, retries: FAST })
  assert.equal((await sdk.revoke(session.id, { reason: 'retried' })).end_reason, 'retried')
  assert.deepEqual(
    revoking.seen.map((r) => [r.method, JSON.parse(r.body)]),
    [
      ['POST', { reason: 'retried' }],
      ['POST', { reason: 'retried' }],
    ],
  )
})

test('introspection is retried after network errors, with its body intact on every attempt', async (t) => {
  const { base, client } = await service(t)
  const { token } = await client.openSession({ user_id: 'alice', ...CLIENT })
  const flaky = flakyFetch(2)
  const retrying = createClient({ baseUrl: base, apiKey: ADMIN_KEY, retries: FAST, fetch: flaky.fetch })
  assert.equal((await retrying.introspect(token, CLIENT)).active, true)
  assert.equal(flaky.calls.length, 3)
  for (const call of flaky.calls) assert.deepEqual(JSON.parse(call.body), { ...CLIENT, token })
})

test('logins and refreshes are never retried, whatever fails', async (t) => {
  const { base, client } = await service(t)
  const flaky = flakyFetch(1)
  const sdk = createClient({ baseUrl: base, apiKey: ADMIN_KEY, retries: FAST, fetch: flaky.fetch })
  const err = await rejection(sdk.openSession({ user_id: 'alice', ...CLIENT }))
  assert.ok(err instanceof TypeError)
  assert.equal(flaky.calls.length, 1)
  assert.equal((await all(client.listSessions('alice'))).length, 0)

  const proxy = await front(t, base, [{ status: 503 }, { status: 503 }])
  const behind = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY, retries: FAST })
  const unavailable = await rejection(behind.openSession({ user_id: 'alice', ...CLIENT }))
  assert.equal((unavailable as SessionAuthorityError).code, 'SERVICE_UNAVAILABLE')
  const jwt = await client.openSession({ user_id: 'alice', token_type: 'jwt', ...CLIENT })
  const refused = await rejection(behind.refresh(jwt.refresh_token, CLIENT))
  assert.equal((refused as SessionAuthorityError).status, 503)
  assert.equal(proxy.seen.length, 2)
  // The refresh token was never spent: it still works.
  assert.equal((await client.refresh(jwt.refresh_token, CLIENT)).session.id, jwt.session.id)
})

test('429 is retried when Retry-After says when, and not without it', async (t) => {
  const { base, client } = await service(t)
  const { session } = await client.openSession({ user_id: 'alice', ...CLIENT })
  const proxy = await front(t, base, [
    { status: 429, headers: { 'retry-after': '0' } },
    'forward',
    { status: 429 },
  ])
  const sdk = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY, retries: FAST })
  assert.equal((await sdk.getSession(session.id)).id, session.id)
  assert.equal(proxy.seen.length, 2)
  // The next call gets the 429 without Retry-After: an answer, not retried.
  const limited = await rejection(sdk.getSession(session.id))
  assert.equal((limited as SessionAuthorityError).status, 429)
  assert.equal(proxy.seen.length, 3)
  // A Retry-After longer than the longest wait is not waited for.
  const patient = await front(t, base, [{ status: 503, headers: { 'retry-after': '3600' } }])
  const impatient = createClient({ baseUrl: patient.url, apiKey: ADMIN_KEY, retries: FAST })
  assert.equal(((await rejection(impatient.getSession(session.id))) as SessionAuthorityError).status, 503)
  assert.equal(patient.seen.length, 1)
})

test('an attempt with no answer is abandoned at timeoutMs; a read is tried again, a login is not', async (t) => {
  const { base, client } = await service(t)
  const { session } = await client.openSession({ user_id: 'alice', ...CLIENT })
  // One timeout for both clients: long enough for an attempt to reach the proxy, and a forwarded one
  // to be answered, on a busy machine. The bounds below come from it and from FAST, not from a clock.
  const timeoutMs = 1500
  const attempts = FAST.limit + 1
  const proxy = await front(t, base, ['hang'])
  const sdk = createClient({ baseUrl: proxy.url, apiKey: ADMIN_KEY, retries: FAST, timeoutMs })
  assert.equal((await sdk.getSession(session.id)).id, session.id)
  // The hung attempt, then one forwarded (another, should a forwarded one be slower than timeoutMs).
  assert.ok(proxy.seen.length >= 2 && proxy.seen.length <= attempts, `${proxy.seen.length} attempts`)

  // A login hung the same way: abandoned, and not tried again (a retry would be forwarded and succeed).
  const stuck = await front(t, base, ['hang'])
  const login = createClient({ baseUrl: stuck.url, apiKey: ADMIN_KEY, retries: FAST, timeoutMs })
  const err = await rejection(login.openSession({ user_id: 'alice', ...CLIENT }))
  assert.equal((err as Error).name, 'TimeoutError')
  await stuck.arrived(1, timeoutMs)
  assert.equal(stuck.seen.length, 1)
})

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

test('verifyWebhook accepts a delivery signed by the service and refuses a forged, altered or stale one', async (t) => {
  const { client } = await service(t)
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const { data: created, error } = await client.raw.POST('/v1/webhooks', {
    body: { url: receiver.url('/hooks'), event_types: ['session.created'] },
  })
  assert.ok(created, JSON.stringify(error))
  const { secret } = created
  const { session } = await client.openSession({ user_id: 'alice', ...CLIENT })
  await receiver.waitFor((requests) => requests.some((r) => r.status !== null), 10_000, 'a delivery')
  const delivery = receiver.requests[0]
  assert.ok(delivery)

  const event = await verifyWebhook(secret, delivery.headers, delivery.body)
  assert.equal(event.type, 'session.created')
  assert.equal(event.data.session_id, session.id)
  assert.equal(event.data.user_id, 'alice')
  // The same through a web Headers object and the body as bytes.
  const webHeaders = new Headers(delivery.headers as Record<string, string>)
  const bytes = new TextEncoder().encode(delivery.body)
  assert.equal((await verifyWebhook(secret, webHeaders, bytes)).data.session_id, session.id)

  const refused = async (promise: Promise<unknown>, what: string) =>
    assert.ok((await rejection(promise)) instanceof WebhookVerificationError, what)
  await refused(verifyWebhook(secret, delivery.headers, delivery.body.replace('alice', 'mallory')), 'altered')
  await refused(
    verifyWebhook(`whsec_${btoa('another key of 32 bytes, really!')}`, delivery.headers, delivery.body),
    'forged',
  )
  const sentAt = Number(delivery.headers['webhook-timestamp']) * 1000
  await refused(verifyWebhook(secret, delivery.headers, delivery.body, { now: sentAt + 301_000 }), 'stale')
  await refused(verifyWebhook(secret, delivery.headers, delivery.body, { now: sentAt - 301_000 }), 'future')
  assert.ok(await verifyWebhook(secret, delivery.headers, delivery.body, { now: sentAt + 299_000 }))
  const unsigned = { ...delivery.headers, 'webhook-signature': undefined }
  await refused(verifyWebhook(secret, unsigned, delivery.body), 'unsigned')
  // The timestamp is signed too: moving it forward breaks the signature.
  const moved = { ...delivery.headers, 'webhook-timestamp': String(sentAt / 1000 + 60) }
  await refused(verifyWebhook(secret, moved, delivery.body, { now: sentAt }), 'moved timestamp')
  await assert.rejects(verifyWebhook(secret, delivery.headers, JSON.parse(delivery.body)), TypeError)
})

test('verifyWebhook agrees with the standardwebhooks library, including several signatures', async () => {
  const secret = `whsec_${btoa(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => i * 7)))}`
  const body = JSON.stringify({ type: 'session.revoked', timestamp: new Date().toISOString(), data: {} })
  const at = new Date()
  const signature = new Webhook(secret).sign('evt_1', at, body)
  const headers = {
    'webhook-id': 'evt_1',
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': `v1,bm90IGl0 v2,abc ${signature}`,
  }
  assert.equal((await verifyWebhook(secret, headers, body)).type, 'session.revoked')
  // The prefix is optional, as in the library.
  assert.ok(await verifyWebhook(secret.slice('whsec_'.length), headers, body))
})

// ---------------------------------------------------------------------------
// clientInfo
// ---------------------------------------------------------------------------

const nodeRequest = (
  remoteAddress: string | undefined,
  headers: Record<string, string | undefined> = {},
) => ({
  headers: { 'user-agent': CHROME_WINDOWS, ...headers },
  socket: { remoteAddress },
})

test('clientInfo: the peer address unless proxies are trusted; a spoofed X-Forwarded-For is ignored', () => {
  const spoofed = nodeRequest('198.51.100.4', { 'x-forwarded-for': '10.9.9.9' })
  assert.deepEqual(clientInfo(spoofed), { ip: '198.51.100.4', user_agent: CHROME_WINDOWS })
  assert.deepEqual(clientInfo(spoofed, { trustProxy: 0 }).ip, '198.51.100.4')
  // The peer is not a trusted proxy: its header is not believed.
  assert.equal(clientInfo(spoofed, { trustProxy: ['10.0.0.0/8'] }).ip, '198.51.100.4')
})

test('clientInfo: the rightmost hop that is not a trusted proxy', () => {
  // A client sent "1.1.1.1" itself; the load balancer appended who called it.
  const behind = nodeRequest('10.0.0.2', { 'x-forwarded-for': '1.1.1.1, 203.0.113.50, 10.0.0.9' })
  assert.equal(clientInfo(behind, { trustProxy: ['10.0.0.0/8'] }).ip, '203.0.113.50')
  assert.equal(clientInfo(behind, { trustProxy: '10.0.0.2, 10.0.0.9' }).ip, '203.0.113.50')
  assert.equal(clientInfo(behind, { trustProxy: '10.0.0.2' }).ip, '10.0.0.9')
  assert.equal(clientInfo(behind, { trustProxy: 1 }).ip, '10.0.0.9')
  assert.equal(clientInfo(behind, { trustProxy: 2 }).ip, '203.0.113.50')
  // More hops trusted than there are: the leftmost.
  assert.equal(clientInfo(behind, { trustProxy: 9 }).ip, '1.1.1.1')
  // Every hop trusted: the leftmost is all that is left.
  const inside = nodeRequest('10.0.0.2', { 'x-forwarded-for': '10.1.1.1' })
  assert.equal(clientInfo(inside, { trustProxy: ['10.0.0.0/8'] }).ip, '10.1.1.1')
  // IPv6 proxies and CIDRs.
  const v6 = nodeRequest('2001:db8::2', { 'x-forwarded-for': '2001:DB8:0:0:0:0:0:99, 2001:db8::3' })
  assert.equal(clientInfo(v6, { trustProxy: ['2001:db8::/126'] }).ip, '2001:db8::99')
  // A garbage hop where the client should be: no address rather than a wrong one.
  const garbage = nodeRequest('10.0.0.2', { 'x-forwarded-for': 'unknown' })
  assert.deepEqual(clientInfo(garbage, { trustProxy: 1 }), { user_agent: CHROME_WINDOWS })
  assert.throws(() => clientInfo(behind, { trustProxy: ['10.0.0.0/33'] }), TypeError)
  assert.throws(() => clientInfo(behind, { trustProxy: ['proxy.internal'] }), TypeError)
})

test('clientInfo: IPv4-mapped IPv6 is IPv4; ports and zone ids are dropped; a missing User-Agent is absent', () => {
  assert.deepEqual(clientInfo({ headers: {}, socket: { remoteAddress: '::ffff:192.0.2.1' } }), {
    ip: '192.0.2.1',
  })
  const mappedProxy = nodeRequest('::ffff:10.0.0.2', { 'x-forwarded-for': '[2001:db8::7]:443' })
  assert.equal(clientInfo(mappedProxy, { trustProxy: ['10.0.0.0/8'] }).ip, '2001:db8::7')
  assert.equal(clientInfo(mappedProxy, { trustProxy: ['::ffff:10.0.0.0/104'] }).ip, '2001:db8::7')
  assert.equal(
    clientInfo(nodeRequest('10.0.0.2', { 'x-forwarded-for': '192.0.2.9:5678' }), { trustProxy: 1 }).ip,
    '192.0.2.9',
  )
  assert.equal(clientInfo(nodeRequest('fe80::1%eth0')).ip, 'fe80::1')
  assert.equal(clientInfo(nodeRequest('::1')).ip, '::1')
  // Not an address the service takes (it refuses 127.1, octal-looking quads): absent.
  assert.equal(clientInfo(nodeRequest('127.1')).ip, undefined)
  assert.equal(clientInfo(nodeRequest('010.0.0.1')).ip, undefined)
  assert.equal(clientInfo(nodeRequest(undefined)).ip, undefined)
  assert.deepEqual(clientInfo({ headers: {}, socket: { remoteAddress: '192.0.2.1' } }), { ip: '192.0.2.1' })
  // Too long or with control characters: as the service takes it.
  const long = clientInfo({ headers: { 'user-agent': `a\tb${'x'.repeat(2000)}` } })
  assert.equal(long.user_agent?.length, 1024)
  assert.ok(long.user_agent?.startsWith('abx'))
})

test('clientInfo: Fastify and Express requests, and a web Request (peer given by the runtime)', () => {
  // Fastify's and Express's request.ip is used only when there is no socket to read.
  assert.equal(clientInfo({ headers: {}, ip: '192.0.2.5' }).ip, '192.0.2.5')
  assert.equal(
    clientInfo({ headers: {}, ip: '192.0.2.5', socket: { remoteAddress: '192.0.2.6' } }).ip,
    '192.0.2.6',
  )
  const web = new Request('https://app.example/', {
    headers: { 'User-Agent': SAFARI_IPHONE, 'X-Forwarded-For': '198.51.100.1, 203.0.113.8' },
  })
  assert.deepEqual(clientInfo(web), { user_agent: SAFARI_IPHONE })
  assert.equal(clientInfo(web, { trustProxy: 1 }).ip, '203.0.113.8')
  assert.equal(clientInfo(web, { remoteAddress: '10.0.0.1', trustProxy: ['10.0.0.0/8'] }).ip, '203.0.113.8')
  // A list cannot vouch for a peer nobody named.
  assert.equal(clientInfo(web, { trustProxy: ['10.0.0.0/8'] }).ip, undefined)
  // Header names in any case, in a plain object.
  assert.equal(clientInfo({ headers: { 'User-Agent': 'curl/8' } }).user_agent, 'curl/8')
})

test('clientInfo reads real Fastify and Node requests', async (t) => {
  const app = Fastify()
  app.get('/', async (request) => clientInfo(request, { trustProxy: ['127.0.0.1'] }))
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const node = createServer((req, res) => res.end(JSON.stringify(clientInfo(req))))
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise((resolve) => node.close(resolve)))

  const headers = { 'user-agent': SAFARI_IPHONE, 'x-forwarded-for': '198.51.100.1, 203.0.113.9' }
  assert.deepEqual(await (await fetch(base, { headers })).json(), {
    ip: '203.0.113.9',
    user_agent: SAFARI_IPHONE,
  })
  const nodeBase = `http://127.0.0.1:${(node.address() as AddressInfo).port}`
  assert.deepEqual(await (await fetch(nodeBase, { headers })).json(), {
    ip: '127.0.0.1',
    user_agent: SAFARI_IPHONE,
  })
})

test('clientInfo feeds openSession and introspect: a login from behind a proxy is bound to the real client', async (t) => {
  const { client } = await service(t)
  const login = nodeRequest('10.0.0.2', { 'x-forwarded-for': '203.0.113.60' })
  const { token, session } = await client.openSession({
    user_id: 'alice',
    ...clientInfo(login, { trustProxy: ['10.0.0.0/8'] }),
  })
  assert.equal(session.ip, '203.0.113.60')
  assert.equal(session.user_agent, CHROME_WINDOWS)
  const later = nodeRequest('::ffff:10.0.0.3', { 'x-forwarded-for': '203.0.113.60' })
  assert.equal(
    (await client.introspect(token, clientInfo(later, { trustProxy: ['10.0.0.0/8'] }))).active,
    true,
  )
})
