import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isAddress, normalizeAddress, parseAddress } from '../src/addresses.ts'
import { adminSql, auth, buildTestApp, CHROME_WINDOWS, openSession } from './helper.ts'

// One address parser for every route and for storage: what it accepts Postgres `inet` stores,
// and every route that takes an address refuses the same ones.

/** Read as an address by ipaddr.js, inet_aton or Node's isIP, refused by Postgres inet (or no address at all). */
const REFUSED = [
  'fe80::1%eth0',
  'fe80::1%25eth0',
  '::1%1',
  '1.2.3',
  '127.1',
  '0x7f.0.0.1',
  '0177.0.0.1',
  '2130706433',
  '010.0.0.1',
  '::ffff:0x7f.0.0.1',
  '::ffff:127.1',
  ' 203.0.113.7',
  '203.0.113.7 ',
  '256.0.0.1',
  '',
]

/** Accepted, with the one form they are stored and compared in (what Postgres host() prints). */
const ACCEPTED: Array<[string, string]> = [
  ['203.0.113.7', '203.0.113.7'],
  ['0.0.0.0', '0.0.0.0'],
  ['2001:DB8::1', '2001:db8::1'],
  ['2001:0db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['::1', '::1'],
  ['::FFFF:203.0.113.7', '::ffff:203.0.113.7'],
  ['::ffff:cb00:7107', '::ffff:203.0.113.7'],
  ['2001:db8::203.0.113.7', '2001:db8::cb00:7107'],
]

test('the parser: dotted-quad IPv4, IPv6 without a zone id; one canonical form, the one Postgres prints', async (t) => {
  for (const text of REFUSED) {
    assert.equal(isAddress(text), false, JSON.stringify(text))
    assert.equal(normalizeAddress(text), null, JSON.stringify(text))
    assert.equal(parseAddress(text), null, JSON.stringify(text))
  }
  const sql = adminSql()
  t.after(() => sql.end())
  for (const [text, canonical] of ACCEPTED) {
    assert.equal(isAddress(text), true, text)
    assert.equal(normalizeAddress(text), canonical, text)
    const [row] = await sql`select host(${text}::inet) as host`
    assert.equal(row?.host, canonical, `Postgres agrees on ${text}`)
  }
  // IPv4-mapped IPv6 is its IPv4 address for comparisons (drift, allowlists), as before.
  assert.equal(parseAddress('::ffff:203.0.113.7')?.kind(), 'ipv4')
  assert.equal(parseAddress('::ffff:203.0.113.7')?.toString(), '203.0.113.7')
})

test('every route that takes an address refuses the same ones with 400 VALIDATION_FAILED', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app)
  const jwt = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: 'alice', token_type: 'jwt' },
  })
  assert.equal(jwt.statusCode, 201, jwt.body)
  const { refresh_token } = jwt.json()

  for (const ip of REFUSED.filter((text) => text !== '')) {
    const calls = [
      { url: '/v1/sessions', payload: { user_id: 'alice', ip, user_agent: CHROME_WINDOWS } },
      { url: '/v1/sessions/introspect', payload: { token, ip } },
      { url: '/v1/sessions/refresh', payload: { refresh_token, ip } },
      { url: `/v1/sessions/${session.id}/resume`, payload: { ip } },
    ]
    for (const { url, payload } of calls) {
      const res = await app.inject({ method: 'POST', url, headers: auth(), payload })
      assert.equal(res.statusCode, 400, `${url} ${JSON.stringify(ip)}: ${res.body}`)
      assert.equal(res.json().error.code, 'VALIDATION_FAILED', `${url} ${JSON.stringify(ip)}`)
      assert.match(res.json().error.message, /ip/, `${url} ${JSON.stringify(ip)}`)
    }
    const oauth = await app.inject({
      method: 'POST',
      url: '/oauth2/introspect',
      headers: { ...auth(), 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ token, ip }).toString(),
    })
    assert.equal(oauth.statusCode, 400, `/oauth2/introspect ${JSON.stringify(ip)}: ${oauth.body}`)
  }
  // Nothing was opened, spent or changed by the refused calls.
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions/refresh',
    headers: auth(),
    payload: { refresh_token },
  })
  assert.equal(res.statusCode, 200, res.body)
  const stored = await app.inject({ method: 'GET', url: `/v1/sessions/${session.id}`, headers: auth() })
  assert.equal(stored.json().status, 'active')
  assert.equal(stored.json().ip, '203.0.113.7')
})

test('an address is stored and compared in its canonical form, whatever form it came in', async (t) => {
  const { app } = await buildTestApp(t)
  const { token, session } = await openSession(app, { ip: '2001:DB8:0:0:0:0:0:7' })
  assert.equal(session.ip, '2001:db8::7')
  assert.equal(session.bound_ip, '2001:db8::7')
  // The same address in another spelling is the bound one.
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions/introspect',
    headers: auth(),
    payload: { token, ip: '2001:0DB8::0007' },
  })
  assert.equal(res.json().active, true, res.body)
})
