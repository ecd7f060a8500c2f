import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createConfig, lint } from '@redocly/openapi-core'
import { parse } from 'yaml'
import { describeConfig } from '../src/config.ts'
import { errorCatalogue } from '../src/errors.ts'
import { openapiYaml } from '../src/openapi.ts'
import { buildDocumentApp } from './helper.ts'

const read = (file: string) => readFile(new URL(`../${file}`, import.meta.url), 'utf8')

test('openapi.yaml is what the routes say (regenerate with `npm run openapi`)', async (t) => {
  const { app, close } = await buildDocumentApp()
  t.after(close)
  const committed = await read('openapi.yaml')
  assert.equal(openapiYaml(app), committed, 'openapi.yaml is out of date: run `npm run openapi`')

  const served = await app.inject({ method: 'GET', url: '/openapi.yaml' })
  assert.equal(served.statusCode, 200)
  assert.equal(served.body, committed)
  const json = await app.inject({ method: 'GET', url: '/openapi.json' })
  assert.deepEqual(json.json(), parse(committed))
})

test('the document covers the HTTP surface, with auth on every /v1 operation', async () => {
  const doc = parse(await read('openapi.yaml'))
  for (const path of [
    '/v1/sessions',
    '/v1/sessions/introspect',
    '/v1/sessions/refresh',
    '/v1/sessions/{id}',
    '/.well-known/jwks.json',
    '/v1/forward-auth',
    '/oauth2/introspect',
    '/oauth2/revoke',
    '/v1/users/{user_id}/sessions',
    '/v1/users/{user_id}/events',
    '/healthz',
    '/readyz',
  ]) {
    assert.ok(doc.paths[path], path)
  }
  for (const [path, ops] of Object.entries(
    doc.paths as Record<string, Record<string, { security?: unknown }>>,
  )) {
    for (const [method, op] of Object.entries(ops)) {
      // The gateway sub-request carries the end user's Authorization; the gateway proves itself otherwise.
      // /v1/me is the end user's: their own session token, never an API key.
      const expected =
        path === '/v1/forward-auth'
          ? [{ gatewaySecret: [] }]
          : path.startsWith('/v1/me/')
            ? [{ sessionToken: [] }]
            : [{ apiKey: [] }]
      if (path.startsWith('/v1/')) assert.deepEqual(op.security, expected, `${method} ${path}`)
      // With no default at the root, an open operation says so (`security: []`) rather than by omission.
      else assert.ok(Array.isArray(op.security), `${method} ${path} declares no security`)
    }
  }
})

test('every operation has an operationId, camelCase and unique (the method names of generated clients)', async () => {
  const doc = parse(await read('openapi.yaml'))
  const seen = new Map<string, string>()
  for (const [path, ops] of Object.entries(
    doc.paths as Record<string, Record<string, { operationId?: string }>>,
  )) {
    for (const [method, op] of Object.entries(ops)) {
      const operation = `${method.toUpperCase()} ${path}`
      const id = op.operationId
      assert.ok(id, `${operation} has no operationId`)
      assert.match(id, /^[a-z][A-Za-z0-9]*$/, `${operation}: ${id} is not camelCase`)
      assert.equal(seen.get(id), undefined, `${operation} and ${seen.get(id)} share the operationId ${id}`)
      seen.set(id, operation)
    }
  }
  assert.ok(seen.size > 0)
})

test('README lists every error code with its status, and every setting', async () => {
  const readme = await read('README.md')
  for (const { code, status } of errorCatalogue()) {
    assert.match(readme, new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`), `${code} (${status})`)
  }
  for (const { env } of describeConfig()) assert.match(readme, new RegExp(`\`${env}\``), env)
})

test("openapi.yaml passes Redocly's recommended rules: no errors, and no warning but the accepted ones", async () => {
  const config = await createConfig({ extends: ['recommended'] })
  const problems = await lint({ ref: fileURLToPath(new URL('../openapi.yaml', import.meta.url)), config })
  const shown = problems.map((p) => `${p.severity} ${p.ruleId} ${p.location[0]?.pointer}: ${p.message}`)
  assert.deepEqual(
    shown.filter((p) => p.startsWith('error')),
    [],
  )
  // Accepted: the open probes, documents and the widget file can only fail as a route can (no 4XX of their own).
  const accepted =
    /^warn operation-4xx-response #\/paths\/~1(healthz|readyz|\.well-known~1jwks\.json|openapi\.json|widget~1session-devices\.js)\/get\/responses:/
  assert.deepEqual(
    shown.filter((p) => !accepted.test(p)),
    [],
  )
})

test('every operation has an example (a body, a response or a parameter), and named types for clients', async () => {
  const doc = parse(await read('openapi.yaml'))
  const hasExample = (node: unknown): boolean =>
    typeof node === 'object' &&
    node !== null &&
    Object.entries(node).some(([key, value]) => key === 'example' || hasExample(value))
  for (const [path, ops] of Object.entries(
    doc.paths as Record<string, Record<string, Record<string, unknown>>>,
  )) {
    for (const [method, op] of Object.entries(ops)) {
      const { requestBody, responses, parameters } = op
      assert.ok(
        hasExample(requestBody) || hasExample(responses) || hasExample(parameters),
        `${method.toUpperCase()} ${path} has no example`,
      )
    }
  }
  for (const name of [
    'Session',
    'Device',
    'Event',
    'ApiKey',
    'Webhook',
    'Error',
    'IntrospectionActive',
    'IntrospectionInactive',
  ]) {
    assert.ok(doc.components.schemas[name], `components.schemas.${name}`)
  }
  assert.deepEqual(
    doc.components.schemas.Error.properties.error.properties.code.enum,
    errorCatalogue().map(({ code }) => code),
  )
})
