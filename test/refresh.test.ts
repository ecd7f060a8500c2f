import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import {
  adminSql,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  createKey,
  introspect,
  openSession,
  revokeSession,
} from './helper.ts'

// Refresh of JWT sessions: rotation, the grace window for tabs refreshing
// together, reuse (theft) detection, the refusals, and expiry. Every test runs
// on the manual clock: time only moves when a test says so.

const SECOND = 1000

/** What a JWT login or a refresh answers. */
interface JwtIssued {
  token_type: 'jwt'
  access_token: string
  expires_in: number
  refresh_token: string
  session: { id: string; user_id: string; status: string } & Record<string, unknown>
}

interface SessionEvent {
  id: string
  session_id: string
  type: string
  data: Record<string, unknown>
  created_at: string
}

/** Opens a JWT session through the API. */
async function openJwt(app: FastifyInstance, body: Record<string, unknown> = {}): Promise<JwtIssued> {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', token_type: 'jwt', ip: '203.0.113.7', user_agent: CHROME_WINDOWS, ...body },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json()
}

/** Presents a refresh token; the raw reply, for tests that expect a refusal. */
function refresh(app: FastifyInstance, refreshToken: string, extra: Record<string, unknown> = {}) {
  return app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    headers: auth(),
    payload: { refresh_token: refreshToken, ...extra },
  })
}

/** Presents a refresh token that must be accepted. */
async function refreshOk(app: FastifyInstance, refreshToken: string): Promise<JwtIssued> {
  const res = await refresh(app, refreshToken)
  assert.equal(res.statusCode, 200, res.body)
  return res.json()
}

/** The status and error code of a refusal, compared as one value so a failure shows both. */
function refusal(res: { statusCode: number; json: () => unknown }) {
  const body = res.json() as { error?: { code?: string } }
  return { status: res.statusCode, code: body.error?.code }
}

async function getSession(app: FastifyInstance, id: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as {
    status: string
    end_reason: string | null
    last_seen_at: string
    idle_expires_at: string
  }
}

/** A user's whole history (newest first); the tests make far fewer than 100 events. */
async function events(app: FastifyInstance, userId = 'alice'): Promise<SessionEvent[]> {
  const res = await app.inject({
    method: 'GET',
    url: `/v1/users/${userId}/events?limit=100`,
    headers: auth(),
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().events
}

/** The claims of a JWT, read without checking it (the service checks; the test reads exp). */
function jwtPayload(token: string): { exp: number; iat: number; sid: string; jti: string } {
  const [, payload = ''] = token.split('.')
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
}

/** A SQL connection for checks the API does not expose, closed after the test. */
function sqlFor(t: TestContext) {
  const sql = adminSql()
  t.after(() => sql.end())
  return sql
}

/** A well-formed refresh token no session was ever given. */
const unknownRefreshToken = () => `srt_${randomBytes(32).toString('base64url')}`

test('rotation: a refresh hands out a new pair and spends the old refresh token', async (t) => {
  const { app, config, logs } = await buildTestApp(t)
  const login = await openJwt(app)
  assert.match(login.refresh_token, /^srt_[A-Za-z0-9_-]{43}$/)

  const next = await refreshOk(app, login.refresh_token)
  assert.equal(next.token_type, 'jwt')
  assert.match(next.refresh_token, /^srt_[A-Za-z0-9_-]{43}$/)
  assert.notEqual(next.refresh_token, login.refresh_token)
  assert.notEqual(next.access_token, login.access_token)
  assert.equal(next.session.id, login.session.id)

  const fresh = await introspect(app, next.access_token)
  assert.equal(fresh.active, true)
  assert.equal(fresh.token_type, 'jwt')
  assert.equal(fresh.session_id, login.session.id)
  assert.equal(fresh.jti, jwtPayload(next.access_token).jti)

  // Access JWTs are not revoked by a refresh: the old one stays good until its
  // own exp, as a gateway verifying it offline would accept it anyway.
  const old = await introspect(app, login.access_token)
  assert.equal(old.active, true)
  assert.equal(old.session_id, login.session.id)

  // The chain goes on: the new refresh token is good for the next refresh.
  const third = await refreshOk(app, next.refresh_token)
  assert.notEqual(third.refresh_token, next.refresh_token)
  assert.equal((await introspect(app, third.access_token)).active, true)

  // The presented token was spent (marked, with its successor), not deleted.
  const sql = sqlFor(t)
  const rows = await sql`
    select spent_at, successor_hash from ${sql(config.dbSchema)}.refresh_tokens
    where session_id = ${login.session.id}`
  assert.equal(rows.length, 3)
  assert.equal(rows.filter((r) => r.spent_at === null).length, 1, 'only the newest token is unspent')
  assert.equal(
    rows.filter((r) => r.successor_hash !== null).length,
    2,
    'each spent token names its successor',
  )

  // Each refresh is in the user's history.
  const history = await events(app)
  const refreshed = history.filter((e) => e.type === 'session.refreshed')
  assert.equal(refreshed.length, 2)
  for (const e of refreshed) assert.equal(e.session_id, login.session.id)

  // A refresh token is a bearer secret: never in the history, never in the log.
  const dump = JSON.stringify(history)
  const text = logs.text()
  for (const token of [login.refresh_token, next.refresh_token, third.refresh_token]) {
    assert.ok(!dump.includes(token), 'a refresh token is in the event data')
    assert.ok(!dump.includes(token.slice(4)), 'a refresh token (unprefixed) is in the event data')
    assert.ok(!text.includes(token.slice(4)), 'a refresh token is in the log')
  }
  assert.ok(text.length > 0, 'the log capture saw the requests')
})

test('the old access JWT ends at its own exp, not at the refresh', async (t) => {
  const { app, clock, config } = await buildTestApp(t)
  const login = await openJwt(app)
  clock.advance(60 * SECOND)
  const next = await refreshOk(app, login.refresh_token)
  // Past the old token's exp (plus the tolerated skew), but within the new one's.
  clock.advance((config.accessTokenTtlSeconds - 60 + config.jwtClockSkewSeconds) * SECOND + 1)
  assert.equal((await introspect(app, login.access_token)).active, false)
  assert.equal((await introspect(app, next.access_token)).active, true)
})

test('tabs refreshing at once within the grace window all get the same new pair', async (t) => {
  const { app, clock, config } = await buildTestApp(t)
  const login = await openJwt(app)

  // Five tabs present the same token at the same moment.
  const replies = await Promise.all(Array.from({ length: 5 }, () => refresh(app, login.refresh_token)))
  for (const res of replies) assert.equal(res.statusCode, 200, res.body)
  const pairs = replies.map((res) => res.json() as JwtIssued)
  const [first] = pairs
  assert.ok(first)
  for (const pair of pairs) {
    assert.equal(pair.refresh_token, first.refresh_token)
    // EdDSA is deterministic: the same claims signed again are the same string.
    assert.equal(pair.access_token, first.access_token)
  }
  assert.notEqual(first.refresh_token, login.refresh_token)
  assert.equal((await introspect(app, first.access_token)).active, true)

  // Only one of the five spent the token: the chain grew by exactly one.
  const sql = sqlFor(t)
  const [count] = await sql`
    select count(*)::int as n from ${sql(config.dbSchema)}.refresh_tokens where session_id = ${login.session.id}`
  assert.equal(count?.n, 2)
  assert.equal((await events(app)).filter((e) => e.type === 'session.refreshed').length, 1)

  // A tab that comes back a little later, still within the grace, gets the same pair too.
  clock.advance(5 * SECOND)
  const late = await refreshOk(app, login.refresh_token)
  assert.equal(late.refresh_token, first.refresh_token)
  assert.equal(late.access_token, first.access_token)
  const [after] = await sql`
    select count(*)::int as n from ${sql(config.dbSchema)}.refresh_tokens where session_id = ${login.session.id}`
  assert.equal(after?.n, 2)

  // The session is not harmed by the replays: the current token still refreshes.
  const next = await refreshOk(app, first.refresh_token)
  assert.notEqual(next.refresh_token, first.refresh_token)
  assert.equal((await getSession(app, login.session.id)).status, 'active')
})

test('a tab presenting a token spent twice over within the grace gets the current pair', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const login = await openJwt(app)
  // Tab A refreshes twice: token0 → token1 → token2.
  const one = await refreshOk(app, login.refresh_token)
  clock.advance(1 * SECOND)
  const two = await refreshOk(app, one.refresh_token)
  clock.advance(1 * SECOND)

  // Tab B still holds token0: it gets the head of the chain, not the spent token1.
  const tabB = await refreshOk(app, login.refresh_token)
  assert.equal(tabB.refresh_token, two.refresh_token)
  assert.notEqual(tabB.refresh_token, one.refresh_token)
  assert.equal(tabB.access_token, two.access_token)
  assert.equal((await introspect(app, tabB.access_token)).active, true)

  // And what tab B got really is the live token: it refreshes.
  const three = await refreshOk(app, tabB.refresh_token)
  assert.notEqual(three.refresh_token, two.refresh_token)
})

test('a spent refresh token presented after the grace is theft: the session is revoked', async (t) => {
  const { app, clock, config, logs } = await buildTestApp(t)
  const login = await openJwt(app)
  const legit = await refreshOk(app, login.refresh_token)

  clock.advance((config.refreshReuseGraceSeconds + 1) * SECOND)
  const stolen = await refresh(app, login.refresh_token, { ip: '198.51.100.9' })
  assert.deepEqual(refusal(stolen), { status: 400, code: 'REFRESH_TOKEN_REUSED' })

  const session = await getSession(app, login.session.id)
  assert.equal(session.status, 'revoked')
  assert.equal(session.end_reason, 'refresh_token_reused')

  const history = await events(app)
  const reused = history.find((e) => e.type === 'refresh_token.reused')
  assert.ok(reused, 'a refresh_token.reused event')
  assert.equal(reused.session_id, login.session.id)
  assert.equal(reused.data.ip, '198.51.100.9')
  const revoked = history.find((e) => e.type === 'session.revoked')
  assert.ok(revoked, 'a session.revoked event')
  assert.deepEqual(revoked.data, { reason: 'refresh_token_reused' })

  // Which of the two holders is the thief is unknown, so neither keeps the session:
  // the legitimate current refresh token is refused and every access JWT is dead at once.
  assert.deepEqual(refusal(await refresh(app, legit.refresh_token)), { status: 400, code: 'SESSION_REVOKED' })
  assert.deepEqual(await introspect(app, legit.access_token), { active: false, reason: 'revoked' })
  assert.deepEqual(await introspect(app, login.access_token), { active: false, reason: 'revoked' })

  // Presenting the stolen token again changes nothing more.
  assert.deepEqual(refusal(await refresh(app, login.refresh_token)), { status: 400, code: 'SESSION_REVOKED' })
  assert.equal((await events(app)).filter((e) => e.type === 'session.revoked').length, 1)
  assert.ok(!logs.text().includes(login.refresh_token.slice(4)), 'the reused token is not logged')
})

test('with no grace window, a second presentation at once is already reuse', async (t) => {
  const { app } = await buildTestApp(t, { refreshReuseGraceSeconds: 0 })
  const login = await openJwt(app)
  const legit = await refreshOk(app, login.refresh_token)

  // Same instant on the manual clock: with a 0 s grace there is no window at all.
  const again = await refresh(app, login.refresh_token)
  assert.deepEqual(refusal(again), { status: 400, code: 'REFRESH_TOKEN_REUSED' })
  const session = await getSession(app, login.session.id)
  assert.equal(session.status, 'revoked')
  assert.equal(session.end_reason, 'refresh_token_reused')
  assert.deepEqual(await introspect(app, legit.access_token), { active: false, reason: 'revoked' })
})

test('refreshes of ended sessions are refused with the reason', async (t) => {
  const { app, config } = await buildTestApp(t)

  const revoked = await openJwt(app)
  assert.equal((await revokeSession(app, revoked.session.id)).statusCode, 200)
  assert.deepEqual(refusal(await refresh(app, revoked.refresh_token)), {
    status: 400,
    code: 'SESSION_REVOKED',
  })

  // Suspension has no API yet; the store is where an operator would set it.
  const suspended = await openJwt(app)
  const sql = sqlFor(t)
  await sql`update ${sql(config.dbSchema)}.sessions set status = 'suspended' where id = ${suspended.session.id}`
  assert.deepEqual(refusal(await refresh(app, suspended.refresh_token)), {
    status: 400,
    code: 'SESSION_SUSPENDED',
  })
  // A refused refresh spends nothing.
  const [row] = await sql`
    select count(*)::int as n from ${sql(config.dbSchema)}.refresh_tokens
    where session_id = ${suspended.session.id} and spent_at is not null`
  assert.equal(row?.n, 0)
})

test('unknown and malformed refresh tokens are REFRESH_TOKEN_INVALID', async (t) => {
  const { app } = await buildTestApp(t)
  const jwtLogin = await openJwt(app)
  const opaque = await openSession(app)

  const invalid = {
    'unknown but well-formed': unknownRefreshToken(),
    'not a token': 'abc',
    empty: '',
    'one character short': jwtLogin.refresh_token.slice(0, -1),
    'an opaque session token': opaque.token,
    'an access JWT': jwtLogin.access_token,
  }
  for (const [what, token] of Object.entries(invalid)) {
    const res = await refresh(app, token)
    assert.deepEqual(refusal(res), { status: 400, code: 'REFRESH_TOKEN_INVALID' }, `${what}: ${res.body}`)
  }
  // None of those touched the real session.
  assert.equal((await introspect(app, jwtLogin.access_token)).active, true)
  assert.equal((await refreshOk(app, jwtLogin.refresh_token)).token_type, 'jwt')
})

test('refresh requests are validated and need the sessions:write scope', async (t) => {
  const { app } = await buildTestApp(t)
  const login = await openJwt(app)

  const missing = await app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    headers: auth(),
    payload: {},
  })
  assert.deepEqual(refusal(missing), { status: 400, code: 'VALIDATION_FAILED' })

  const anonymous = await app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    payload: { refresh_token: login.refresh_token },
  })
  assert.deepEqual(refusal(anonymous), { status: 401, code: 'UNAUTHORIZED' })

  // A gateway's introspect-only key may check tokens but not mint them.
  const { key } = await createKey(app, ['introspect'])
  const gateway = await app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    headers: auth(key),
    payload: { refresh_token: login.refresh_token },
  })
  assert.deepEqual(refusal(gateway), { status: 403, code: 'FORBIDDEN' })

  // The refused calls spent nothing: the token still works.
  await refreshOk(app, login.refresh_token)
})

test('idle timeout: a refresh after the session idled out is SESSION_EXPIRED', async (t) => {
  // No Redis: a single replica, so no idle grace for other replicas' pending writes.
  const { app, clock } = await buildTestApp(t)
  const login = await openJwt(app, { idle_timeout: 60 })
  clock.advance(61 * SECOND)
  assert.deepEqual(refusal(await refresh(app, login.refresh_token)), { status: 400, code: 'SESSION_EXPIRED' })
  const session = await getSession(app, login.session.id)
  assert.equal(session.status, 'expired')
  assert.equal(session.end_reason, 'idle_timeout')
  assert.deepEqual(await introspect(app, login.access_token), { active: false, reason: 'expired' })
  // It stays expired, and the expiry is recorded once.
  assert.deepEqual(refusal(await refresh(app, login.refresh_token)), { status: 400, code: 'SESSION_EXPIRED' })
  assert.equal((await events(app)).filter((e) => e.type === 'session.expired').length, 1)
})

test('a refresh is a use: it slides the idle expiry', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const login = await openJwt(app, { idle_timeout: 60 })
  clock.advance(50 * SECOND)
  const one = await refreshOk(app, login.refresh_token)
  assert.equal(one.session.last_seen_at, new Date(clock.now()).toISOString())
  assert.equal(one.session.idle_expires_at, new Date(clock.now() + 60 * SECOND).toISOString())
  // +100 s: past the first idle expiry (+60 s), within the slid one (+110 s).
  clock.advance(50 * SECOND)
  const two = await refreshOk(app, one.refresh_token)
  assert.equal((await introspect(app, two.access_token)).active, true)
  assert.equal((await getSession(app, login.session.id)).status, 'active')
})

test('absolute lifetime: access JWTs never outlive the session, and refresh ends with it', async (t) => {
  const { app, clock } = await buildTestApp(t)
  const login = await openJwt(app, { absolute_lifetime: 120 })
  const absoluteExpiry = Date.parse(String(login.session.absolute_expires_at))
  assert.equal(absoluteExpiry, clock.now() + 120 * SECOND)
  assert.ok(jwtPayload(login.access_token).exp * SECOND <= absoluteExpiry)
  assert.ok(login.expires_in <= 120)

  clock.advance(100 * SECOND)
  const late = await refreshOk(app, login.refresh_token)
  // The configured access lifetime (300 s) is cut to the 20 s the session has left.
  assert.ok(jwtPayload(late.access_token).exp * SECOND <= absoluteExpiry)
  assert.ok(late.expires_in <= 20, `expires_in ${late.expires_in}`)
  assert.ok(late.expires_in > 0)

  clock.advance(21 * SECOND)
  assert.deepEqual(refusal(await refresh(app, late.refresh_token)), { status: 400, code: 'SESSION_EXPIRED' })
  const session = await getSession(app, login.session.id)
  assert.equal(session.status, 'expired')
  assert.equal(session.end_reason, 'absolute_lifetime')
  assert.deepEqual(await introspect(app, late.access_token), { active: false, reason: 'expired' })
})

/** Runs `work` after `n` turns of the event loop: staggers two racing requests without a timed sleep. */
async function afterTurns<T>(n: number, work: () => Promise<T>): Promise<T> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r))
  return work()
}

test('a refresh racing a revocation never leaves a usable pair', async (t) => {
  const { app } = await buildTestApp(t)
  // The revocation starts a few more event-loop turns later each round, so the
  // two meet at the session's row lock in both orders (refresh first, revocation first).
  for (let round = 0; round < 12; round++) {
    const login = await openJwt(app, { user_id: `racer-${round}` })
    const [refreshed, revoked] = await Promise.all([
      refresh(app, login.refresh_token),
      afterTurns(round, () => revokeSession(app, login.session.id)),
    ])
    assert.equal(revoked.statusCode, 200, revoked.body)
    assert.equal((await getSession(app, login.session.id)).status, 'revoked', `round ${round}`)

    if (refreshed.statusCode === 200) {
      // The refresh won the lock: what it handed out died with the revocation.
      const pair = refreshed.json() as JwtIssued
      assert.deepEqual(
        await introspect(app, pair.access_token),
        { active: false, reason: 'revoked' },
        `round ${round}`,
      )
      assert.deepEqual(refusal(await refresh(app, pair.refresh_token)), {
        status: 400,
        code: 'SESSION_REVOKED',
      })
    } else {
      assert.deepEqual(refusal(refreshed), { status: 400, code: 'SESSION_REVOKED' }, `round ${round}`)
    }
    assert.deepEqual(
      await introspect(app, login.access_token),
      { active: false, reason: 'revoked' },
      `round ${round}`,
    )
  }
})

// ---------------------------------------------------------------------------
// Client binding: a refresh is judged like an introspection
// ---------------------------------------------------------------------------

const HOME_IP = '203.0.113.7'
const FAR_IP = '198.51.100.1'
const FIREFOX_MACOS = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.2; rv:121.0) Gecko/20100101 Firefox/121.0'
const CHROME_121_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36'

test('a refresh token stolen to another browser and network suspends the session and spends nothing', async (t) => {
  const { app, config } = await buildTestApp(t)
  const sql = sqlFor(t)
  for (const [why, thief] of [
    ['another browser and OS', { ip: HOME_IP, user_agent: FIREFOX_MACOS }],
    ['another network', { ip: FAR_IP, user_agent: CHROME_WINDOWS }],
    ['both', { ip: FAR_IP, user_agent: FIREFOX_MACOS }],
  ] as const) {
    const opened = await openJwt(app)
    const stolen = await refresh(app, opened.refresh_token, thief)
    assert.deepEqual(refusal(stolen), { status: 400, code: 'SESSION_SUSPENDED' }, `${why}: ${stolen.body}`)
    const session = (await getSession(app, opened.session.id)) as Record<string, unknown>
    assert.equal(session.status, 'suspended', why)
    assert.equal(
      session.suspension_reason,
      thief.user_agent === CHROME_WINDOWS ? 'ip_drift' : 'user_agent_drift',
    )
    // Nothing was spent or issued: the token is as it was, and the session's access JWT is inactive.
    const tokens = await sql`
      select spent_at from ${sql(config.dbSchema)}.refresh_tokens where session_id = ${opened.session.id}`
    assert.deepEqual(
      tokens.map((r) => r.spent_at),
      [null],
      why,
    )
    assert.equal((await introspect(app, opened.access_token)).active, false, why)

    // Once the user confirms it was them, the very same token refreshes from their own client.
    const resumed = await app.inject({
      method: 'POST',
      url: `/v1/sessions/${opened.session.id}/resume`,
      headers: auth(),
      payload: {},
    })
    assert.equal(resumed.statusCode, 200, resumed.body)
    const own = await refresh(app, opened.refresh_token, { ip: HOME_IP, user_agent: CHROME_WINDOWS })
    assert.equal(own.statusCode, 200, `${why}: ${own.body}`)
  }
  const types = (await events(app)).map((e) => e.type)
  assert.equal(types.filter((type) => type === 'session.suspended').length, 3)
  assert.ok(!types.includes('refresh_token.reused'), `${types}`)
})

test('refresh from the bound client, a browser update or a move within the /24 is no drift', async (t) => {
  const { app } = await buildTestApp(t)
  const { session, ...first } = await openJwt(app)
  let refresh_token = first.refresh_token
  for (const client of [
    { ip: HOME_IP, user_agent: CHROME_WINDOWS },
    { ip: '203.0.113.99', user_agent: CHROME_121_WINDOWS },
    {},
  ]) {
    const res = await refresh(app, refresh_token, client)
    assert.equal(res.statusCode, 200, `${JSON.stringify(client)}: ${res.body}`)
    refresh_token = res.json().refresh_token
  }
  const stored = (await getSession(app, session.id)) as Record<string, unknown>
  assert.equal(stored.status, 'active')
  assert.equal(stored.user_agent, CHROME_121_WINDOWS, 'the browser update is followed')
  assert.equal(stored.bound_ip, HOME_IP)
})

test('record policy: a refresh from a new client succeeds, rebinds the session and records the change', async (t) => {
  const { app } = await buildTestApp(t)
  const opened = await openJwt(app, { binding: { ip: 'record', user_agent: 'record' } })
  const res = await refresh(app, opened.refresh_token, { ip: FAR_IP, user_agent: FIREFOX_MACOS })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().session.bound_ip, FAR_IP, 'the answer shows the session as rebound')
  const stored = (await getSession(app, opened.session.id)) as Record<string, unknown>
  assert.equal(stored.status, 'active')
  assert.equal(stored.bound_ip, FAR_IP)
  assert.equal(stored.user_agent, FIREFOX_MACOS)
  const changed = (await events(app)).filter((e) => e.type === 'session.client_changed')
  assert.equal(changed.length, 1)
  assert.deepEqual(changed[0]?.data.changed, ['user_agent', 'ip'])
  // The new access JWT is good from the new client, under the same policy.
  const access = await introspect(app, res.json().access_token, { ip: FAR_IP, user_agent: FIREFOX_MACOS })
  assert.equal(access.active, true)
})

test('refresh refuses an address Postgres could not store (a zone id, a short IPv4) with 400', async (t) => {
  const { app } = await buildTestApp(t)
  const opened = await openJwt(app)
  for (const ip of ['fe80::1%eth0', '127.1', '1.2.3', '0x7f.0.0.1', '2130706433']) {
    const res = await refresh(app, opened.refresh_token, { ip })
    assert.deepEqual(refusal(res), { status: 400, code: 'VALIDATION_FAILED' }, `${ip}: ${res.body}`)
  }
  assert.equal((await refresh(app, opened.refresh_token, { ip: HOME_IP })).statusCode, 200)
})
