import assert from 'node:assert/strict'
import {
  createHmac,
  createPublicKey,
  sign as cryptoSign,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
  randomUUID,
} from 'node:crypto'
import { type TestContext, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  generateKeyPair,
  type JSONWebKeySet,
  type JWK,
  jwtVerify,
  SignJWT,
} from 'jose'
import type { Config } from '../src/config.ts'
import { keyEncryptionKey } from '../src/keys/key-encryption.ts'
import {
  adminSql,
  auth,
  buildTestApp,
  eventually,
  introspect,
  openSession,
  redisSettings,
  revokeSession,
  TEST_KEK,
  type TestApp,
  twoReplicas,
} from './helper.ts'

const SECOND = 1000
// Defaults of the config this file relies on.
const TTL_S = 300
const SKEW_S = 30
const RELOAD_MS = 10_000

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

interface JwtReply {
  token_type: 'jwt'
  access_token: string
  expires_in: number
  refresh_token: string
  session: { id: string; user_id: string } & Record<string, unknown>
}

/** Opens a JWT session through the API (as the env admin key). */
async function openJwt(app: FastifyInstance, body: Record<string, unknown> = {}): Promise<JwtReply> {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', token_type: 'jwt', ...body },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as JwtReply
}

/** The JWK Set as an outside verifier fetches it, with the max-age it may be cached for. */
async function fetchJwks(app: FastifyInstance): Promise<{ jwks: JSONWebKeySet; maxAge: number }> {
  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  assert.equal(res.statusCode, 200)
  const cacheControl = String(res.headers['cache-control'])
  const match = /^public, max-age=(\d+)$/.exec(cacheControl)
  assert.ok(match, `unexpected cache-control: ${cacheControl}`)
  return { jwks: res.json() as JSONWebKeySet, maxAge: Number(match[1]) }
}

const kidsOf = (jwks: JSONWebKeySet) => jwks.keys.map((k) => k.kid)

/** Verifies like a resource server would, with jose, at the app's (manual) time. */
async function verifyOutside({ app, config, clock }: TestApp, token: string, jwks?: JSONWebKeySet) {
  const set = jwks ?? (await fetchJwks(app)).jwks
  return jwtVerify(token, createLocalJWKSet(set), {
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    typ: 'at+jwt',
    currentDate: new Date(clock.now()),
  })
}

/**
 * The introspection answer for a refused token must be exactly `{ active: false, reason }` to the admin
 * key (which may read sessions): why its session ended, `expired` past its exp, or `unknown` for a
 * token the service did not issue. Nothing else leaks.
 */
async function assertInactive(
  app: FastifyInstance,
  token: string,
  why: string,
  reason: 'revoked' | 'expired' | 'suspended' | 'unknown' = 'unknown',
) {
  assert.deepEqual(await introspect(app, token), { active: false, reason }, why)
}

async function assertActive(app: FastifyInstance, token: string, why: string) {
  const result = await introspect(app, token)
  assert.equal(result.active, true, `${why}: ${JSON.stringify(result)}`)
  return result
}

const b64json = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

function decodeSegments(token: string) {
  const [header, payload, signature] = token.split('.')
  assert.ok(header && payload && signature !== undefined, 'a compact JWS has three segments')
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>,
    signature,
  }
}

/** A compact JWS HMAC-signed by hand with `secret` (for algorithm-confusion attempts). */
function hs256(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | Buffer) {
  const input = `${b64json({ ...header, alg: 'HS256' })}.${b64json(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

/** A SQL client for an app's schema, closed after the test. */
function schemaSql(t: TestContext, config: Config) {
  const sql = adminSql()
  t.after(() => sql.end())
  return { sql, table: (name: string) => sql`${sql(config.dbSchema)}.${sql(name)}` }
}

/**
 * Makes `app` trust an Ed25519 key this test holds the private half of, the
 * way an operator-inserted key would be trusted: a row in signing_keys
 * (retired, still published), picked up when the app rereads its keys (a
 * rotation through the API makes it reread them at once). With it the test can
 * sign tokens that are genuine in every way except the one being checked, so
 * each refusal below is due to that check alone.
 */
async function trustInsiderKey(t: TestContext, { app, config, clock }: TestApp) {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const kid = `insider-${randomUUID()}`
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' }
  const kek = keyEncryptionKey(TEST_KEK)
  const der = privateKey.export({ format: 'der', type: 'pkcs8' })
  const { sql, table } = schemaSql(t, config)
  const now = new Date(clock.now())
  const dayLater = new Date(clock.now() + 86_400 * SECOND)
  await sql`
    insert into ${table('signing_keys')}
      (kid, alg, public_jwk, private_key, kek_id, created_at, retired_at, publish_until)
    values (${kid}, 'EdDSA', ${sql.json(jwk)}, ${kek.seal(der, kid)}, ${kek.id}, ${now}, ${now}, ${dayLater})`
  const rotated = await app.inject({ method: 'POST', url: '/v1/signing-keys/rotate', headers: auth() })
  assert.equal(rotated.statusCode, 201, rotated.body)
  assert.ok(kidsOf((await fetchJwks(app)).jwks).includes(kid), 'the insider key is published')
  return { kid, privateKey }
}

function signEdDSA(
  key: Parameters<SignJWT['sign']>[0],
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', ...header }).sign(key)
}

function signEd25519ByHand(
  key: KeyObject,
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
) {
  const input = `${b64json(header)}.${b64json(payload)}`
  return `${input}.${cryptoSign(null, Buffer.from(input), key).toString('base64url')}`
}

function without<T extends Record<string, unknown>>(obj: T, key: keyof T): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...obj }
  delete copy[key as string]
  return copy
}

// ---------------------------------------------------------------------------
// 1. Issuing: what an outside verifier sees
// ---------------------------------------------------------------------------

test('an access JWT verifies with jose against the published JWKS and carries the documented claims', async (t) => {
  const testApp = await buildTestApp(t)
  const { app, config, clock } = testApp
  const opened = await openJwt(app, {
    metadata: { tenant: 't1', plan: 'pro' },
    access_token_claims: ['tenant'],
  })
  assert.equal(opened.token_type, 'jwt')
  assert.equal(opened.expires_in, TTL_S)
  assert.match(opened.refresh_token, /^srt_/)

  const { jwks } = await fetchJwks(app)
  const { payload, protectedHeader } = await verifyOutside(testApp, opened.access_token, jwks)

  assert.equal(protectedHeader.alg, 'EdDSA')
  assert.equal(protectedHeader.typ, 'at+jwt')
  assert.ok(protectedHeader.kid && kidsOf(jwks).includes(protectedHeader.kid), 'kid is in the JWKS')
  const jwk = jwks.keys.find((k) => k.kid === protectedHeader.kid) as JWK
  assert.equal(jwk.kty, 'OKP')
  assert.equal(jwk.crv, 'Ed25519')
  assert.equal(jwk.d, undefined, 'no private key material is published')

  assert.equal(payload.iss, config.jwtIssuer)
  assert.equal(payload.aud, config.jwtAudience)
  assert.equal(payload.sub, 'alice')
  assert.equal(payload.sid, opened.session.id)
  assert.equal(payload.client_id, 'env-admin')
  assert.match(String(payload.jti), /^[0-9a-f-]{36}$/)
  assert.equal(payload.iat, Math.floor(clock.now() / SECOND))
  assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), TTL_S)
  assert.equal(payload.tenant, 't1', 'a requested metadata claim is copied')
  assert.equal(payload.plan, undefined, 'unrequested metadata stays out of the token')

  // The service agrees with the outside verifier.
  const result = await assertActive(app, opened.access_token, 'fresh token')
  assert.equal(result.session_id, opened.session.id)
  assert.equal(result.user_id, 'alice')
  assert.equal(result.token_type, 'jwt')
  assert.equal(result.jti, payload.jti)
  assert.equal(result.client_id, 'env-admin')
  assert.equal(result.expires_at, new Date((payload.exp ?? 0) * SECOND).toISOString())
})

test('access_token_claims cannot name a reserved claim, nor be used with an opaque session', async (t) => {
  const { app } = await buildTestApp(t)
  for (const [body, why] of [
    [{ token_type: 'jwt', metadata: { sub: 'mallory' }, access_token_claims: ['sub'] }, 'reserved sub'],
    [{ token_type: 'jwt', metadata: { nbf: 1 }, access_token_claims: ['nbf'] }, 'reserved nbf'],
    [{ token_type: 'jwt', metadata: { aud: 'x' }, access_token_claims: ['tenant', 'aud'] }, 'reserved aud'],
    [{ token_type: 'opaque', metadata: { tenant: 't1' }, access_token_claims: ['tenant'] }, 'opaque session'],
    [{ metadata: { tenant: 't1' }, access_token_claims: ['tenant'] }, 'opaque by default'],
  ] as const) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: auth(),
      payload: { user_id: 'alice', ...body },
    })
    assert.equal(res.statusCode, 400, `${why}: ${res.body}`)
    assert.equal(res.json().error.code, 'VALIDATION_FAILED', why)
  }
})

// ---------------------------------------------------------------------------
// 2. Every supported algorithm
// ---------------------------------------------------------------------------

for (const { alg, kty, crv } of [
  { alg: 'ES256', kty: 'EC', crv: 'P-256' },
  { alg: 'RS256', kty: 'RSA', crv: undefined },
] as const) {
  test(`with JWT_ALGORITHM=${alg} the JWKS key is ${kty} and jose verifies the token`, async (t) => {
    const testApp = await buildTestApp(t, { jwtAlgorithm: alg })
    const opened = await openJwt(testApp.app)
    const { jwks } = await fetchJwks(testApp.app)
    assert.equal(jwks.keys.length, 1)
    const [jwk] = jwks.keys as [JWK]
    assert.equal(jwk.kty, kty)
    assert.equal(jwk.crv, crv)
    assert.equal(jwk.alg, alg)
    assert.equal(jwk.use, 'sig')
    for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(jwk[secret as keyof JWK], undefined)
    if (kty === 'RSA') assert.ok(jwk.n && jwk.e)

    const { payload, protectedHeader } = await verifyOutside(testApp, opened.access_token, jwks)
    assert.equal(protectedHeader.alg, alg)
    assert.equal(protectedHeader.kid, jwk.kid)
    assert.equal(payload.sid, opened.session.id)
    await assertActive(testApp.app, opened.access_token, `${alg} token`)
  })
}

// ---------------------------------------------------------------------------
// 3. Rotation
// ---------------------------------------------------------------------------

test('rotation: old tokens stay valid until they expire, and the old key leaves the JWKS on time', async (t) => {
  const testApp = await buildTestApp(t)
  const { app, clock } = testApp
  const a = await openJwt(app, { user_id: 'alice' })
  const oldKid = decodeProtectedHeader(a.access_token).kid
  assert.ok(oldKid)
  const before = await fetchJwks(app)
  assert.deepEqual(kidsOf(before.jwks), [oldKid])
  assert.equal(before.maxAge, 300, 'with no retired key the configured max-age applies')

  const rotated = await app.inject({ method: 'POST', url: '/v1/signing-keys/rotate', headers: auth() })
  assert.equal(rotated.statusCode, 201, rotated.body)
  const newKey = rotated.json() as { kid: string; alg: string; current: boolean }
  assert.notEqual(newKey.kid, oldKid)
  assert.equal(newKey.alg, 'EdDSA')
  assert.equal(newKey.current, true)

  const b = await openJwt(app, { user_id: 'bob' })
  assert.equal(decodeProtectedHeader(b.access_token).kid, newKey.kid, 'new tokens carry the new kid')

  // Both keys are published; a verifier that refetched the JWKS accepts both tokens.
  const after = await fetchJwks(app)
  assert.deepEqual(new Set(kidsOf(after.jwks)), new Set([oldKid, newKey.kid]))
  assert.equal((await verifyOutside(testApp, a.access_token, after.jwks)).payload.sub, 'alice')
  assert.equal((await verifyOutside(testApp, b.access_token, after.jwks)).payload.sub, 'bob')
  await assertActive(app, a.access_token, 'token signed by the retired key')
  await assertActive(app, b.access_token, 'token signed by the new key')

  const list = await app.inject({ method: 'GET', url: '/v1/signing-keys', headers: auth() })
  assert.equal(list.statusCode, 200)
  const keys = list.json().keys as {
    kid: string
    current: boolean
    retired_at: string | null
    publish_until: string | null
  }[]
  const current = keys.find((k) => k.kid === newKey.kid)
  const old = keys.find((k) => k.kid === oldKid)
  assert.ok(current && old)
  assert.equal(current.current, true)
  assert.equal(current.retired_at, null)
  assert.equal(current.publish_until, null)
  assert.equal(old.current, false)
  assert.equal(old.retired_at, new Date(clock.now()).toISOString())
  const publishUntil = Date.parse(old.publish_until ?? '')
  assert.equal(publishUntil, clock.now() + RELOAD_MS + (TTL_S + SKEW_S) * SECOND)
  // The old key outlives every token it signed, skew included.
  const aExp = (await verifyOutside(testApp, a.access_token, after.jwks)).payload.exp ?? 0
  assert.ok(publishUntil >= aExp * SECOND + SKEW_S * SECOND)

  // A verifier caching the JWKS must never keep the old key past publish_until.
  const rotatedAt = clock.now()
  for (const at of [rotatedAt, rotatedAt + 100 * SECOND, publishUntil - 1500]) {
    clock.advance(at - clock.now())
    const { maxAge, jwks } = await fetchJwks(app)
    assert.ok(kidsOf(jwks).includes(oldKid), 'still published before publish_until')
    assert.ok(
      clock.now() + maxAge * SECOND <= publishUntil,
      `max-age ${maxAge}s outlasts publish_until by ${clock.now() + maxAge * SECOND - publishUntil} ms`,
    )
  }

  // Past publish_until (and past A's exp): the old key is gone, filtered at request time.
  clock.advance(publishUntil - clock.now() + 1)
  const late = await fetchJwks(app)
  assert.deepEqual(kidsOf(late.jwks), [newKey.kid])
  assert.equal(late.maxAge, 300)
  await assertInactive(app, a.access_token, 'A is long expired', 'expired')
  // The surviving key still signs, and outside verification still works.
  const c = await openJwt(app, { user_id: 'carol' })
  assert.equal((await verifyOutside(testApp, c.access_token, late.jwks)).protectedHeader.kid, newKey.kid)
})

// ---------------------------------------------------------------------------
// 4. Attacks and claim checks
// ---------------------------------------------------------------------------

test('forged tokens are refused: alg none, HS256 keyed with the public key, unknown kid, tampering', async (t) => {
  const { app } = await buildTestApp(t)
  const genuine = await openJwt(app, { user_id: 'alice' })
  const other = await openJwt(app, { user_id: 'bob' })
  await assertActive(app, genuine.access_token, 'genuine token')

  const { header, payload, signature } = decodeSegments(genuine.access_token)
  const kid = String(header.kid)
  const { jwks } = await fetchJwks(app)
  const jwk = jwks.keys.find((k) => k.kid === kid) as JWK
  const publicKey = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
  const spkiPem = publicKey.export({ format: 'pem', type: 'spki' }).toString()
  const spkiDer = publicKey.export({ format: 'der', type: 'spki' })

  const unsigned = `${b64json({ ...header, alg: 'none' })}.${b64json(payload)}`
  const freshKey = await generateKeyPair('EdDSA')
  const forged: [string, string][] = [
    ['alg none, empty signature', `${unsigned}.`],
    ['alg none, some signature', `${unsigned}.${signature}`],
    ['alg NONE', `${b64json({ ...header, alg: 'NONE' })}.${b64json(payload)}.${signature}`],
    // Algorithm confusion: a verifier that let the token pick HS256 would key the
    // HMAC with the public key it holds, which anyone can do too.
    ['HS256 keyed with the raw x bytes', hs256(header, payload, Buffer.from(String(jwk.x), 'base64url'))],
    ['HS256 keyed with the x string', hs256(header, payload, String(jwk.x))],
    ['HS256 keyed with the SPKI PEM', hs256(header, payload, spkiPem)],
    ['HS256 keyed with the SPKI DER', hs256(header, payload, spkiDer)],
    ['HS256 keyed with the JWK JSON', hs256(header, payload, JSON.stringify(jwk))],
    [
      'unknown kid, fresh key',
      await signEdDSA(freshKey.privateKey, payload, { typ: 'at+jwt', kid: 'no-such-kid' }),
    ],
    ['real kid, fresh key', await signEdDSA(freshKey.privateKey, payload, { typ: 'at+jwt', kid })],
    ['no kid, fresh key', await signEdDSA(freshKey.privateKey, payload, { typ: 'at+jwt' })],
    // Tampering: the genuine header and signature over a changed payload.
    ['sub changed', `${b64json(header)}.${b64json({ ...payload, sub: 'bob' })}.${signature}`],
    ['sid changed', `${b64json(header)}.${b64json({ ...payload, sid: other.session.id })}.${signature}`],
    [
      'exp extended',
      `${b64json(header)}.${b64json({ ...payload, exp: Number(payload.exp) + 3600 })}.${signature}`,
    ],
    ['header typ changed', `${b64json({ ...header, typ: 'JWT' })}.${b64json(payload)}.${signature}`],
    ['signature truncated', genuine.access_token.slice(0, -4)],
  ]
  for (const [why, token] of forged) await assertInactive(app, token, why)

  // The refusals did not disturb the genuine tokens.
  await assertActive(app, genuine.access_token, 'genuine token after the attacks')
  await assertActive(app, other.access_token, "bob's genuine token after the attacks")
})

/**
 * An app that trusts the insider key, a JWT session and an opaque session of
 * alice, the claims of a well-formed token for the JWT session, and a signer.
 */
async function insiderSetup(t: TestContext) {
  const testApp = await buildTestApp(t)
  const { app, config, clock } = testApp
  const alice = await openJwt(app, { user_id: 'alice' })
  const opaque = await openSession(app, { user_id: 'alice' })
  const insider = await trustInsiderKey(t, testApp)
  const now = Math.floor(clock.now() / SECOND)
  const claims = {
    iss: config.jwtIssuer,
    aud: config.jwtAudience,
    sub: 'alice',
    sid: alice.session.id,
    jti: randomUUID(),
    iat: now,
    exp: now + TTL_S,
  }
  // Each token gets a jti of its own, so no answer comes from another token's cache entry.
  const sign = (c: Record<string, unknown>, header: Record<string, unknown> = { typ: 'at+jwt' }) =>
    signEdDSA(insider.privateKey, { ...c, jti: randomUUID() }, { kid: insider.kid, ...header })
  return { app, config, now, claims, sign, insider, opaque }
}

/** Introspects each token; returns the names of those not answered `{ active: false }` and a reason alone. */
async function acceptedOf(app: FastifyInstance, cases: [string, () => Promise<string> | string][]) {
  const accepted: string[] = []
  for (const [why, token] of cases) {
    const result = await introspect(app, await token())
    // Refused says only that, and why: unknown, or, for a genuine token past its exp, expired.
    const extra = Object.keys(result).filter(
      (k) =>
        k !== 'active' && !(k === 'reason' && (result.reason === 'expired' || result.reason === 'unknown')),
    )
    if (result.active !== false || extra.length > 0) accepted.push(why)
  }
  return accepted
}

test('a token signed by a trusted key is still refused when any checked claim or header is wrong', async (t) => {
  const { app, config, now, claims, sign, insider, opaque } = await insiderSetup(t)

  // Control: a well-formed token under this key is accepted, so every refusal
  // below is caused by the one thing that differs.
  await assertActive(app, await sign(claims), 'well-formed insider token')
  await assertActive(app, await sign(claims, { typ: 'application/at+jwt' }), 'typ with media-type prefix')
  await assertActive(app, await sign({ ...claims, nbf: now + SKEW_S - 5 }), 'nbf within the skew')
  await assertActive(app, await sign({ ...claims, iat: now + SKEW_S - 5 }), 'iat within the skew')
  await assertActive(
    app,
    await sign({ ...claims, aud: ['other-api', config.jwtAudience] }),
    'aud list with us',
  )

  const refused: [string, () => Promise<string> | string][] = [
    ['typ JWT', () => sign(claims, { typ: 'JWT' })],
    ['no typ', () => sign(claims, {})],
    ['wrong aud', () => sign({ ...claims, aud: 'other-api' })],
    ['aud list without us', () => sign({ ...claims, aud: ['other-api', 'third-api'] })],
    ['wrong iss', () => sign({ ...claims, iss: 'https://evil.example' })],
    ['nbf beyond the skew', () => sign({ ...claims, nbf: now + SKEW_S + 5 })],
    ['iat beyond the skew', () => sign({ ...claims, iat: now + SKEW_S + 5 })],
    ['exp already past the skew', () => sign({ ...claims, iat: now - 600, exp: now - SKEW_S })],
    ['sub of another user (session mismatch)', () => sign({ ...claims, sub: 'mallory' })],
    ['sid of an opaque session', () => sign({ ...claims, sid: opaque.session.id })],
    ['sid of no session', () => sign({ ...claims, sid: randomUUID() })],
    ['sid not a UUID', () => sign({ ...claims, sid: 'not-a-uuid' })],
    ['exp a string', () => sign({ ...claims, exp: String(claims.exp) })],
    ['no sid', () => sign(without(claims, 'sid'))],
    ['no sub', () => sign(without(claims, 'sub'))],
    ['no exp', () => sign(without(claims, 'exp'))],
    ['no iat', () => sign(without(claims, 'iat'))],
    [
      'no jti',
      () => signEdDSA(insider.privateKey, without(claims, 'jti'), { kid: insider.kid, typ: 'at+jwt' }),
    ],
    // jose will not sign an unknown crit, so this one is put together by hand.
    [
      'unknown crit header',
      () =>
        signEd25519ByHand(
          insider.privateKey,
          { alg: 'EdDSA', typ: 'at+jwt', kid: insider.kid, crit: ['x-unknown'], 'x-unknown': true },
          { ...claims, jti: randomUUID() },
        ),
    ],
  ]
  const accepted = await acceptedOf(app, refused)
  assert.deepEqual(accepted, [], `accepted although they must be refused: ${accepted.join(', ')}`)
})

test('a token signed by a trusted key but lacking aud or iss is refused (RFC 9068 §4)', async (t) => {
  const { app, claims, sign } = await insiderSetup(t)
  await assertActive(app, await sign(claims), 'well-formed insider token')
  // aud and iss are REQUIRED in an RFC 9068 access token, and a resource server
  // MUST reject one whose aud is not its own: a token with no aud at all was
  // meant for nobody in particular, and one with no iss from nobody known.
  const accepted = await acceptedOf(app, [
    ['no aud', () => sign(without(claims, 'aud'))],
    ['no iss', () => sign(without(claims, 'iss'))],
    ['neither aud nor iss', () => sign(without(without(claims, 'aud'), 'iss'))],
  ])
  assert.deepEqual(accepted, [], `accepted although they must be refused: ${accepted.join(', ')}`)
})

test('expiry: refused once exp plus the clock skew has passed, accepted within the skew', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const { access_token } = await openJwt(app)
  await assertActive(app, access_token, 'fresh') // warms the verified-token cache

  clock.advance((TTL_S + SKEW_S - 10) * SECOND)
  const late = await assertActive(app, access_token, 'past exp but within the skew')
  // Introspection never promises more than the token's own exp.
  assert.equal(Date.parse(String(late.expires_at)), Date.parse('2026-01-01T00:00:00Z') + TTL_S * SECOND)

  clock.advance(10 * SECOND)
  await assertInactive(app, access_token, 'exp + skew reached (from the verified-token cache)', 'expired')

  // The same holds for a token the app has never seen before.
  const second = await openJwt(app)
  clock.advance((TTL_S + SKEW_S) * SECOND)
  await assertInactive(app, second.access_token, 'expired on first sight', 'expired')
})

test('a token issued by a replica with another audience or issuer is refused, and vice versa', async (t) => {
  // Same schema and KEK, so the same trusted signing key: only aud / iss differ.
  const [main, otherAud] = await twoReplicas(t, {}, { jwtAudience: 'other-api' })
  const otherIss = await buildTestApp(t, { dbSchema: main.config.dbSchema, jwtIssuer: 'other-issuer' })

  const mainToken = (await openJwt(main.app)).access_token
  const audToken = (await openJwt(otherAud.app)).access_token
  const issToken = (await openJwt(otherIss.app)).access_token
  assert.equal(decodeProtectedHeader(audToken).kid, decodeProtectedHeader(mainToken).kid, 'one shared key')
  assert.equal(decodeProtectedHeader(issToken).kid, decodeProtectedHeader(mainToken).kid, 'one shared key')

  // Each replica accepts its own token...
  await assertActive(main.app, mainToken, 'main token at main')
  await assertActive(otherAud.app, audToken, 'aud token at its issuer')
  await assertActive(otherIss.app, issToken, 'iss token at its issuer')
  // ...and no other's.
  await assertInactive(main.app, audToken, 'aud other-api at main')
  await assertInactive(main.app, issToken, 'iss other-issuer at main')
  await assertInactive(otherAud.app, mainToken, 'aud api at the other-api replica')
  await assertInactive(otherIss.app, mainToken, 'iss session-authority at the other-issuer replica')
  // jose agrees with the service.
  await assert.rejects(verifyOutside(main, audToken), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
  await assert.rejects(verifyOutside(main, issToken), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
})

test('a token whose iat is in the future (a replica clock ahead) is refused beyond the skew', async (t) => {
  const [main, ahead] = await twoReplicas(t)

  // A replica 20 s ahead: within the skew, accepted at once.
  ahead.clock.advance(20 * SECOND)
  await assertActive(main.app, (await openJwt(ahead.app)).access_token, 'iat 20 s ahead')

  // 60 s ahead: beyond the skew until the main clock catches up to iat - skew.
  ahead.clock.advance(40 * SECOND)
  const future = (await openJwt(ahead.app)).access_token
  await assertInactive(main.app, future, 'iat 60 s ahead')
  main.clock.advance((60 - SKEW_S) * SECOND)
  await assertActive(main.app, future, 'iat now exactly at the skew')
})

// ---------------------------------------------------------------------------
// 5. The session behind the JWT decides
// ---------------------------------------------------------------------------

test('revoking the session ends its JWT at once, before exp, even after it was cached', async (t) => {
  const { app } = await buildTestApp(t)
  const opened = await openJwt(app)
  await assertActive(app, opened.access_token, 'warm the caches')
  await assertActive(app, opened.access_token, 'served from the caches')

  const res = await revokeSession(app, opened.session.id)
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().status, 'revoked')
  await assertInactive(app, opened.access_token, 'revoked session', 'revoked')
})

test('a revocation on one replica ends the JWT on another sharing Redis', async (t) => {
  const redis = redisSettings()
  const [one, two] = await twoReplicas(t, redis, redis)
  const opened = await openJwt(one.app)
  await assertActive(one.app, opened.access_token, 'warm replica one')
  await assertActive(two.app, opened.access_token, 'warm replica two')
  await assertActive(two.app, opened.access_token, 'replica two serves it from its cache')

  const res = await revokeSession(one.app, opened.session.id)
  assert.equal(res.statusCode, 200, res.body)
  await assertInactive(one.app, opened.access_token, 'at the revoking replica', 'revoked')
  await eventually(
    async () => (await introspect(two.app, opened.access_token)).active === false,
    2000,
    'replica two sees the revocation',
  )
  await assertInactive(two.app, opened.access_token, 'at the other replica', 'revoked')
})

test('a JWT of a suspended session is inactive', async (t) => {
  const { app, config } = await buildTestApp(t)
  const opened = await openJwt(app)
  const { sql, table } = schemaSql(t, config)
  await sql`update ${table('sessions')} set status = 'suspended' where id = ${opened.session.id}`
  // The admin key may read sessions, so it is told why.
  assert.deepEqual(await introspect(app, opened.access_token), { active: false, reason: 'suspended' })
})

// ---------------------------------------------------------------------------
// 6. The session must belong to the token's subject
// ---------------------------------------------------------------------------

test("a JWT whose sub is not the session's user is inactive", async (t) => {
  const { app, config } = await buildTestApp(t)
  const opened = await openJwt(app, { user_id: 'alice' })
  const control = await openJwt(app, { user_id: 'alice' })
  const { sql, table } = schemaSql(t, config)
  // Before the first introspection, so nothing is cached with the old user.
  await sql`update ${table('sessions')} set user_id = 'bob' where id = ${opened.session.id}`
  await assertInactive(app, opened.access_token, 'sub alice, session of bob')
  await assertActive(app, control.access_token, 'untouched session of alice')
})
