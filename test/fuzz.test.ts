import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { test } from 'node:test'
import type { InjectOptions } from 'fastify'
import {
  type FuzzContext,
  type FuzzRequest,
  fuzzRequest,
  harvestFrom,
  operationsOf,
  Rng,
} from './fixtures/fuzz.ts'
import { buildTestApp, introspect, openSession } from './helper.ts'

/**
 * Seeded fuzzing of every operation in the OpenAPI document (the promise: no
 * input, however malformed or large, produces a 5xx or a stack trace, and
 * every error has the one shape). FUZZ_SEED replays a run; FUZZ_REQUESTS sets
 * its length (`npm run test:fuzz` makes a long one).
 */

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31)
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 3000)
const FORWARD_AUTH_SECRET = 'fuzz-gateway-secret-0123456789'

/** Signs of a stack trace or of the service's files in a reply. */
const LEAKS = ['    at ', '/work/', 'node_modules', '.ts:']

interface Finding {
  index: number
  requestId: string
  request: FuzzRequest
  status: number
  body: string
  problem: string
}

function describe(f: Finding, logs: string[]): string {
  const payload = f.request.payload === undefined ? undefined : String(f.request.payload)
  const shorten = (text: string, max = 300) =>
    text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text
  // The service's own log of the request, stack included, for the one fixing it.
  const logged = logs.filter((line) => line.includes(`"reqId":${JSON.stringify(f.requestId)}`)).slice(0, 3)
  return [
    `#${f.index} ${f.problem}: ${f.status} ${shorten(f.body)}`,
    `  request: ${f.request.method} ${shorten(f.request.url)}`,
    `  headers: ${shorten(JSON.stringify(f.request.headers))}`,
    payload === undefined ? '  no body' : `  body: ${shorten(JSON.stringify(payload))}`,
    ...logged.map((line) => `  log: ${shorten(line, 4000)}`),
  ].join('\n')
}

/** What is wrong with an answer, or null. */
function problemWith(status: number, body: string, headers: Record<string, unknown>): string | null {
  if (status >= 500) return 'a 5xx'
  for (const sign of LEAKS) if (body.includes(sign)) return `the body contains ${JSON.stringify(sign)}`
  if (headers['x-content-type-options'] !== 'nosniff') return 'no X-Content-Type-Options: nosniff'
  if (status >= 400 && body.length > 0) {
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch {
      return 'an error body that is not JSON'
    }
    const error = (parsed as { error?: Record<string, unknown> }).error
    const shaped =
      Object.keys(parsed as object).length === 1 &&
      error !== null &&
      typeof error === 'object' &&
      // `reason` only where the code carries one (SESSION_INACTIVE: why the user's own token is not active).
      Object.keys(error).sort().join() ===
        (error.code === 'SESSION_INACTIVE' ? 'code,message,reason' : 'code,message') &&
      typeof error.code === 'string' &&
      typeof error.message === 'string'
    if (!shaped)
      return 'an error body not of the shape {"error":{"code","message"}} (and reason with SESSION_INACTIVE)'
  }
  return null
}

test(`fuzz: ${REQUESTS} requests over every operation (FUZZ_SEED=${SEED})`, {
  timeout: 30 * 60_000,
}, async (t) => {
  const { app, config, logs } = await buildTestApp(t, {
    logLevel: 'warn',
    // Fuzzed webhooks must not be delivered anywhere; the sweeper must not run beside the fuzz.
    webhookPollMs: 0,
    purgeIntervalMs: 0,
    forwardAuthSecret: FORWARD_AUTH_SECRET,
  })
  await app.ready()
  const doc = app.swagger() as unknown as Parameters<typeof operationsOf>[0]
  const ops = operationsOf(doc)
  assert.ok(ops.length >= 30, `only ${ops.length} operations in the document`)

  const rng = new Rng(SEED)
  const ctx: FuzzContext = {
    bodyLimitBytes: config.bodyLimitBytes,
    forwardAuthSecret: FORWARD_AUTH_SECRET,
    harvest: { ids: [], tokens: [], keys: [], users: [] },
  }
  // A session to find, so handlers reach real rows from the start.
  const first = await openSession(app, { user_id: 'alice' })
  ctx.harvest.ids.push(first.session.id)
  ctx.harvest.tokens.push(first.token)

  const findings: Finding[] = []
  const statuses = new Map<number, number>()
  const started = Date.now()
  for (let index = 0; index < REQUESTS; index++) {
    const request = fuzzRequest(rng, ops, ctx)
    const options: InjectOptions = {
      method: request.method as InjectOptions['method'],
      url: request.url,
      headers: request.headers,
    }
    if (request.payload !== undefined) options.payload = request.payload
    const res = await app.inject(options)
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    const problem = problemWith(res.statusCode, res.body, res.headers)
    if (problem) {
      const requestId = String(res.headers['x-request-id'])
      findings.push({ index, requestId, request, status: res.statusCode, body: res.body, problem })
    } else if (res.statusCode < 300 && request.method !== 'DELETE') harvestFrom(res.body, ctx.harvest)
  }
  const seconds = (Date.now() - started) / 1000
  t.diagnostic(
    `FUZZ_SEED=${SEED}: ${REQUESTS} requests in ${seconds.toFixed(1)} s; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
  )

  assert.deepEqual(
    findings.slice(0, 20).map((f) => describe(f, logs.lines)),
    [],
    `FUZZ_SEED=${SEED}: ${findings.length} of ${REQUESTS} answers break the promise (replay with FUZZ_SEED=${SEED} FUZZ_REQUESTS=${REQUESTS})`,
  )

  // The service still works after all that: a login and its introspection.
  const { token, session } = await openSession(app, { user_id: 'fuzz-survivor' })
  const answer = await introspect(app, token)
  assert.equal(answer.active, true, `FUZZ_SEED=${SEED}: a fresh session is not active after the fuzz`)
  assert.equal(answer.session_id, session.id, `FUZZ_SEED=${SEED}`)
})
