import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import * as client from 'openid-client'
import { auth, buildTestApp, CHROME_WINDOWS } from './helper.ts'

// RFC 7662 introspection and RFC 7009 revocation through a mainstream OAuth
// client library, with two clients of different tenants: a client is its
// tenant (RFC 7009 §2.1: only a token issued to the client), so the other
// tenant's tokens are inactive to it and its revocations of them change
// nothing, while each client does both to its own.

const INACTIVE = { active: false }
const HOME_IP = '203.0.113.7'
/** The two ways a client authenticates that the service accepts from openid-client. */
const CLIENT_AUTH = { basic: client.ClientSecretBasic, post: client.ClientSecretPost } as const

interface Key {
  key: string
  api_key: { id: string; tenant_id: string }
}

async function created<T>(app: FastifyInstance, url: string, payload: Record<string, unknown>, key?: string) {
  const res = await app.inject({ method: 'POST', url, headers: auth(key), payload })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as T
}

/** A client's tokens: an opaque session and a JWT session (access token and refresh token). */
async function login(app: FastifyInstance, key: string, userId: string) {
  const body = { user_id: userId, ip: HOME_IP, user_agent: CHROME_WINDOWS }
  const opaque = await created<{ token: string; session: { id: string } }>(app, '/v1/sessions', body, key)
  const jwt = await created<{ access_token: string; refresh_token: string; session: { id: string } }>(
    app,
    '/v1/sessions',
    { ...body, token_type: 'jwt' },
    key,
  )
  return {
    sessions: [opaque.session.id, jwt.session.id],
    tokens: {
      opaque: opaque.token,
      access: jwt.access_token,
      refresh: jwt.refresh_token,
    },
  }
}

/** The service listening, tenant `b`, one OAuth client (an API key) of each tenant, and their users' tokens. */
async function setUp(t: TestContext) {
  const { app } = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  await created(app, '/v1/tenants', { id: 'b', name: 'B' })
  const scopes = ['introspect', 'sessions:write']
  const keyA = await created<Key>(app, '/v1/api-keys', { name: 'client a', scopes })
  const keyB = await created<Key>(app, '/v1/api-keys', { name: 'client b', scopes, tenant_id: 'b' })
  assert.deepEqual([keyA.api_key.tenant_id, keyB.api_key.tenant_id], ['default', 'b'])

  const server: client.ServerMetadata = {
    issuer: base,
    introspection_endpoint: `${base}/oauth2/introspect`,
    revocation_endpoint: `${base}/oauth2/revoke`,
  }
  const clientOf = (key: Key, how: keyof typeof CLIENT_AUTH) => {
    const config = new client.Configuration(server, key.api_key.id, key.key, CLIENT_AUTH[how]())
    client.allowInsecureRequests(config)
    return config
  }
  const ofA = await login(app, keyA.key, 'alice')
  const ofB = await login(app, keyB.key, 'bob')

  /** The status of A's sessions (read with the platform admin key). */
  const statusesOfA = async () => {
    const statuses: string[] = []
    for (const id of ofA.sessions) {
      const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
      assert.equal(res.statusCode, 200, res.body)
      statuses.push(res.json().status)
    }
    return statuses
  }
  return { clientOf, keyA, keyB, ofA, ofB, statusesOfA }
}

/** The introspection answer as a plain object (openid-client returns a null-prototype one). */
const introspected = async (config: client.Configuration, token: string, hint?: string) => ({
  ...(await client.tokenIntrospection(config, token, hint ? { token_type_hint: hint } : undefined)),
})

test("client B introspects tenant A's tokens: inactive, and so are B's to A", async (t) => {
  const { clientOf, keyA, keyB, ofA, ofB } = await setUp(t)
  for (const how of ['basic', 'post'] as const) {
    const clientB = clientOf(keyB, how)
    const clientA = clientOf(keyA, how)
    for (const [kind, token] of Object.entries(ofA.tokens)) {
      assert.deepEqual(await introspected(clientB, token), INACTIVE, `${how}: A's ${kind} token to B`)
      const hint = kind === 'refresh' ? 'refresh_token' : 'access_token'
      assert.deepEqual(await introspected(clientB, token, hint), INACTIVE, `${how}: A's ${kind}, hinted`)
    }
    for (const [kind, token] of Object.entries(ofB.tokens)) {
      assert.deepEqual(await introspected(clientA, token), INACTIVE, `${how}: B's ${kind} token to A`)
    }
  }
  // Each client sees its own tokens active, with its own user and key.
  for (const [config, of, key, user] of [
    [clientOf(keyA, 'basic'), ofA, keyA, 'alice'],
    [clientOf(keyB, 'post'), ofB, keyB, 'bob'],
  ] as const) {
    for (const [kind, token] of Object.entries(of.tokens)) {
      const answer = await introspected(config, token)
      assert.equal(answer.active, true, `${user}'s ${kind} token`)
      assert.equal(answer.sub, user)
      assert.equal(answer.client_id, key.api_key.id)
      assert.equal(answer.token_type, kind === 'refresh' ? 'refresh_token' : 'Bearer')
    }
  }
})

test("client B revokes tenant A's tokens: 200, and they stay active; client A revokes its own", async (t) => {
  const { clientOf, keyA, keyB, ofA, statusesOfA } = await setUp(t)
  const clientA = clientOf(keyA, 'basic')
  for (const how of ['basic', 'post'] as const) {
    const clientB = clientOf(keyB, how)
    for (const [kind, token] of Object.entries(ofA.tokens)) {
      // openid-client rejects anything but a 200.
      await client.tokenRevocation(clientB, token)
      await client.tokenRevocation(clientB, token, {
        token_type_hint: kind === 'refresh' ? 'refresh_token' : 'access_token',
      })
      assert.equal((await introspected(clientA, token)).active, true, `${how}: A's ${kind} token after B`)
    }
  }
  assert.deepEqual(await statusesOfA(), ['active', 'active'])

  // A's client revokes its own: the opaque session, then the JWT session by its refresh token.
  await client.tokenRevocation(clientA, ofA.tokens.opaque)
  assert.deepEqual(await introspected(clientA, ofA.tokens.opaque), INACTIVE)
  assert.deepEqual(await statusesOfA(), ['revoked', 'active'])
  await client.tokenRevocation(clientA, ofA.tokens.refresh, { token_type_hint: 'refresh_token' })
  assert.deepEqual(await introspected(clientA, ofA.tokens.access), INACTIVE)
  assert.deepEqual(await introspected(clientA, ofA.tokens.refresh), INACTIVE)
  assert.deepEqual(await statusesOfA(), ['revoked', 'revoked'])
})
