import assert from 'node:assert/strict'
import { lookup } from 'node:dns/promises'
import { once } from 'node:events'
import { type TestContext, test } from 'node:test'
import { createServer as createTlsServer } from 'node:tls'
import type { FastifyInstance } from 'fastify'
import { parseAddress } from '../src/addresses.ts'
import { ConfigError } from '../src/config.ts'
import {
  type Connect,
  connectPinned,
  createDestinations,
  DestinationRefused,
  forbiddenCategory,
  type Lookup,
  type Target,
} from '../src/webhooks/destination.ts'
import { startCli } from './fixtures/process.ts'
import { type Receiver, signedByHand, startReceiver } from './fixtures/receiver.ts'
import {
  adminSql,
  auth,
  buildTestApp,
  DATABASE_URL,
  dropSchema,
  eventually,
  openSession,
  TEST_KEK,
  uniqueSchema,
} from './helper.ts'

/**
 * Webhooks go to public addresses only (unless WEBHOOK_ALLOWED_CIDRS allows
 * more): refused when a subscription is written if its URL says so itself,
 * and at every delivery after resolution, with the connection pinned to the
 * address checked.
 *
 * No test here sends a packet beyond 127.0.0.0/8: deliveries go only to names
 * that resolve to 127.0.0.1 (`localhost`, or a fake resolver's answers), and
 * every connect spy refuses any other address before delegating. Apps whose
 * webhooks name other addresses never poll (webhookPollMs 0).
 */

const LOOPBACK_ONLY = '127.0.0.0/8'

async function receiver(t: TestContext): Promise<Receiver> {
  const r = await startReceiver()
  t.after(() => r.close())
  return r
}

const portOf = (r: Receiver) => Number(new URL(r.origin).port)

/** A connect that records its targets, and opens nothing beyond loopback whatever the code under test asks. */
function connectSpy() {
  const targets: Target[] = []
  const connect: Connect = (target) => {
    targets.push(target)
    if (!target.address.startsWith('127.')) throw new Error(`test guard: would connect to ${target.address}`)
    return connectPinned(target)
  }
  return { targets, connect }
}

/** A resolver that answers from a script, one answer list per call (the last one repeats). */
function fakeLookup(...answers: string[][]) {
  const asked: string[] = []
  const resolve: Lookup = async (hostname) => {
    asked.push(hostname)
    const list = answers[Math.min(asked.length - 1, answers.length - 1)] ?? []
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
  }
  return { asked, lookup: resolve }
}

const signal = () => AbortSignal.timeout(2000)
const request = { headers: { 'content-type': 'application/json' }, body: '{}' }

test('forbiddenCategory: every non-public range, also IPv4-mapped, NAT64 and 6to4; public unicast passes', () => {
  const cases: Array<[string, string | null]> = [
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.5.4', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fd00::1', 'private'],
    ['fd00:ec2::254', 'private'],
    ['fc00::1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['192.0.2.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['::7f00:1', 'reserved'],
    // The IPv4 an IPv6 address carries decides.
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:0:10.0.0.1', 'private'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::a9fe:a9fe', 'link-local'],
    ['2002:0a00:0001::1', 'private'],
    ['2002:7f00:1::', 'loopback'],
    // Public, and only compared here: nothing connects to them.
    ['8.8.8.8', null],
    ['172.32.0.1', null],
    ['2606:4700::1111', null],
    ['64:ff9b::8.8.8.8', null],
  ]
  for (const [text, expected] of cases) {
    const address = parseAddress(text)
    assert.ok(address, text)
    assert.equal(forbiddenCategory(address), expected, text)
  }
})

test('a subscription is refused (create and PATCH) for credentials, other schemes and literal non-public addresses, however spelled', async (t) => {
  // Never polls: no webhook here is ever called.
  const { app, logs } = await buildTestApp(t, { webhookPollMs: 0 })
  const post = (url: string) =>
    app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: { url } })

  const refused: Array<[string, RegExp]> = [
    ['http://user:s3cret-pw@example.com/hook', /user name or password/],
    ['https://:s3cret-pw@example.com/hook', /user name or password/],
    ['http://127.0.0.1:8080/hook', /loopback/],
    ['http://10.0.0.1/hook', /private/],
    ['http://169.254.169.254/latest/meta-data/', /link-local/],
    ['http://[::1]:8080/hook', /loopback/],
    ['http://[fd00::1]/hook', /private/],
    ['http://[fd00:ec2::254]/latest/meta-data/', /private/],
    ['http://[::ffff:127.0.0.1]/hook', /loopback/],
    ['http://[::ffff:a9fe:a9fe]/hook', /link-local/],
    ['http://[64:ff9b::7f00:1]/hook', /loopback/],
    // The WHATWG URL parser reads these as 127.0.0.1, and so does the check.
    ['http://2130706433/hook', /loopback/],
    ['http://0177.0.0.1/hook', /loopback/],
    ['http://0x7f.1/hook', /loopback/],
    ['http://127.1/hook', /loopback/],
    ['http://0/hook', /unspecified/],
    ['http://100.64.0.1/hook', /carrier-grade NAT/],
    ['http://224.0.0.1/hook', /multicast/],
    ['http://255.255.255.255/hook', /broadcast/],
    ['http://[fe80::1]/hook', /link-local/],
  ]
  for (const [url, why] of refused) {
    const res = await post(url)
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'WEBHOOK_URL_NOT_ALLOWED', url)
    assert.match(res.json().error.message, why, url)
    assert.match(res.json().error.message, /^url: /)
    assert.ok(!res.body.includes('s3cret-pw'), 'the password is not echoed')
  }
  for (const url of ['file:///etc/passwd', 'gopher://example.com/', 'ftp://example.com/x']) {
    const res = await post(url)
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'VALIDATION_FAILED', url)
  }

  // A name passes: what it resolves to is checked at each delivery.
  const created = await post('https://hooks.example.com/session-events')
  assert.equal(created.statusCode, 201, created.body)
  const id = created.json().webhook.id as string
  for (const [url, why] of refused) {
    const res = await app.inject({
      method: 'PATCH',
      url: `/v1/webhooks/${id}`,
      headers: auth(),
      payload: { url },
    })
    assert.equal(res.statusCode, 400, `PATCH ${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'WEBHOOK_URL_NOT_ALLOWED')
    assert.match(res.json().error.message, why)
  }
  const after = await app.inject({ method: 'GET', url: `/v1/webhooks/${id}`, headers: auth() })
  assert.equal(after.json().url, 'https://hooks.example.com/session-events', 'unchanged')
  const list = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: auth() })
  assert.equal(list.json().webhooks.length, 1, 'nothing refused was stored')
  assert.ok(!logs.text().includes('s3cret-pw'), 'the password is never logged')
})

test('WEBHOOK_ALLOWED_CIDRS admits its ranges (however the URL spells the address), and only those', async (t) => {
  const { app } = await buildTestApp(t, { webhookPollMs: 0, webhookAllowedCidrs: LOOPBACK_ONLY })
  const post = (url: string) =>
    app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: { url } })
  for (const url of ['http://127.0.0.1:9/hook', 'http://2130706433:9/hook', 'http://[::ffff:127.0.0.1]:9/']) {
    const res = await post(url)
    assert.equal(res.statusCode, 201, `${url}: ${res.body}`)
  }
  for (const url of [
    'http://10.0.0.1/',
    'http://169.254.169.254/',
    'http://[::1]/',
    'http://u:p@127.0.0.1/',
  ]) {
    const res = await post(url)
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'WEBHOOK_URL_NOT_ALLOWED')
  }
  // A bad list stops the service at start, before it connects to anything, in one line.
  await assert.rejects(
    buildTestApp(t, { webhookAllowedCidrs: '10.0.0.0/33' }),
    (err: Error) => err instanceof ConfigError && /WEBHOOK_ALLOWED_CIDRS/.test(err.message),
  )
  assert.throws(
    () => createDestinations({ allowedCidrs: '10.0.0.0/8,not-a-range' }),
    (err: Error) =>
      err instanceof ConfigError &&
      /WEBHOOK_ALLOWED_CIDRS: not an address or CIDR: not-a-range/.test(err.message),
  )
})

async function cli(args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  const [code] = await once(run.child, 'exit')
  return { code: code as number, output: run.output() }
}

test('CLI: webhooks create refuses credentials and loopback addresses (never printing the password); a bad WEBHOOK_ALLOWED_CIDRS stops it', async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  const env = { DATABASE_URL, DB_SCHEMA: schema, SIGNING_KEY_ENCRYPTION_KEY: TEST_KEK, LOG_LEVEL: 'warn' }

  const withPassword = await cli(['webhooks', 'create', '--url', 'https://user:s3cret-pw@example.com/x'], env)
  assert.notEqual(withPassword.code, 0, withPassword.output)
  assert.match(withPassword.output, /user name or password/)
  assert.ok(!withPassword.output.includes('s3cret-pw'), withPassword.output)

  const loopback = await cli(['webhooks', 'create', '--url', 'http://127.0.0.1:9/x'], env)
  assert.notEqual(loopback.code, 0, loopback.output)
  assert.match(loopback.output, /loopback addresses are not allowed/)

  const badList = await cli(['webhooks', 'create', '--url', 'http://127.0.0.1:9/x'], {
    ...env,
    WEBHOOK_ALLOWED_CIDRS: '127.0.0.0/33',
  })
  assert.notEqual(badList.code, 0, badList.output)
  assert.match(badList.output, /WEBHOOK_ALLOWED_CIDRS/)

  const listed = await cli(['webhooks', 'list'], env)
  assert.equal(listed.code, 0, listed.output)
  assert.equal(listed.output.trim(), '', 'nothing was created')
})

interface DeliveryView {
  status: string
  attempts: number
  last_status: number | null
  last_error: string | null
}

async function deliveriesOf(app: FastifyInstance, id: string): Promise<DeliveryView[]> {
  const res = await app.inject({ method: 'GET', url: `/v1/webhooks/${id}/deliveries`, headers: auth() })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().deliveries
}

async function createWebhook(app: FastifyInstance, url: string): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: { url } })
  assert.equal(res.statusCode, 201, res.body)
  return res.json().webhook.id
}

const DELIVERING = { webhookPollMs: 20, webhookBackoffMs: 10, webhookTimeoutMs: 1000 }

test('a name resolving to loopback is refused at delivery before any connection: dead at once, a generic last_error', async (t) => {
  const hooks = await receiver(t)
  const { app, logs } = await buildTestApp(t, DELIVERING)
  // A name passes the subscription check; `localhost` resolves to loopback, which nothing allows here.
  const id = await createWebhook(app, `http://localhost:${portOf(hooks)}/hook`)
  await openSession(app)

  await eventually(async () => (await deliveriesOf(app, id))[0]?.status === 'dead', 5000, 'dead')
  const [dead] = await deliveriesOf(app, id)
  assert.equal(dead?.attempts, 1, 'not retried')
  assert.equal(dead?.last_status, null)
  assert.equal(dead?.last_error, 'destination not allowed: loopback', 'the kind only: no name, no address')
  assert.equal(hooks.connections(), 0, 'no connection was opened')
  assert.deepEqual(hooks.requests, [])
  assert.match(logs.text(), /webhook destination not allowed; delivery dead/)

  // Sent again by hand, it is refused again: the rule is asked at every attempt.
  const all = await app.inject({ method: 'GET', url: `/v1/webhooks/${id}/deliveries`, headers: auth() })
  const deliveryId = all.json().deliveries[0].id as string
  const retry = await app.inject({
    method: 'POST',
    url: `/v1/webhooks/deliveries/${deliveryId}/retry`,
    headers: auth(),
  })
  assert.equal(retry.statusCode, 200, retry.body)
  await eventually(
    async () => {
      const [d] = await deliveriesOf(app, id)
      return d?.status === 'dead' && d.attempts === 1 && d.last_error === 'destination not allowed: loopback'
    },
    5000,
    'dead again',
  )
  assert.equal(hooks.connections(), 0)
})

test('allowed by WEBHOOK_ALLOWED_CIDRS, the same name is delivered, to its checked address, with the URL host as Host', async (t) => {
  const answers = await lookup('localhost', { all: true })
  if (!answers.every((a) => a.address.startsWith('127.'))) {
    t.skip(`localhost resolves to ${answers.map((a) => a.address)} here`)
    return
  }
  const hooks = await receiver(t)
  const { app } = await buildTestApp(t, { ...DELIVERING, webhookAllowedCidrs: LOOPBACK_ONLY })
  const url = `http://localhost:${portOf(hooks)}/hook?x=1`
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth(), payload: { url } })
  assert.equal(res.statusCode, 201, res.body)
  const { webhook, secret } = res.json() as { webhook: { id: string }; secret: string }
  await openSession(app)

  await hooks.waitFor((r) => r.length === 1 && r[0]?.status === 200, 5000, 'the delivery')
  const [received] = hooks.requests
  assert.ok(received)
  assert.equal(received.headers.host, `localhost:${portOf(hooks)}`, 'Host is the URL host, not the address')
  assert.equal(received.url, '/hook?x=1')
  assert.equal(signedByHand(secret, received), true)
  await eventually(
    async () => (await deliveriesOf(app, webhook.id))[0]?.status === 'delivered',
    3000,
    'recorded',
  )
})

test('a stored URL with credentials (from before the rule) is dead at once; the password is neither sent nor logged', async (t) => {
  const hooks = await receiver(t)
  const { app, config, logs } = await buildTestApp(t, { ...DELIVERING, webhookAllowedCidrs: LOOPBACK_ONLY })
  const id = await createWebhook(app, hooks.url('/hook'))
  const sql = adminSql()
  try {
    const legacy = `http://user:s3cret-pw@127.0.0.1:${portOf(hooks)}/hook`
    await sql`update ${sql(config.dbSchema)}.webhook_subscriptions set url = ${legacy} where id = ${id}`
  } finally {
    await sql.end()
  }
  await openSession(app)

  await eventually(async () => (await deliveriesOf(app, id))[0]?.status === 'dead', 5000, 'dead')
  const [dead] = await deliveriesOf(app, id)
  assert.equal(dead?.attempts, 1)
  assert.equal(dead?.last_error, 'destination not allowed: credentials in the URL')
  assert.equal(hooks.connections(), 0, 'the password was not sent: nothing was')
  assert.ok(!logs.text().includes('s3cret-pw'), 'the password is never logged')
})

test('pinned: one lookup per delivery, every answer checked, the connection to the checked address with the name as Host', async (t) => {
  const hooks = await receiver(t)
  const port = portOf(hooks)
  // A rebinding name: loopback first (allowed here), then the private network.
  const dns = fakeLookup(['127.0.0.1'], ['10.0.0.1'])
  const spy = connectSpy()
  const destinations = createDestinations({
    allowedCidrs: LOOPBACK_ONLY,
    lookup: dns.lookup,
    connect: spy.connect,
  })

  const url = new URL(`http://rebind.test:${port}/pin?a=b`)
  assert.equal(await destinations.post(url, request, signal()), 200)
  assert.deepEqual(dns.asked, ['rebind.test'], 'resolved once')
  assert.deepEqual(spy.targets, [
    { address: '127.0.0.1', family: 4, port, tls: false, servername: 'rebind.test' },
  ])
  assert.equal(hooks.requests.length, 1)
  assert.equal(hooks.requests[0]?.headers.host, `rebind.test:${port}`)
  assert.equal(hooks.requests[0]?.url, '/pin?a=b')

  // The next delivery asks again, and the new answer is refused before any connection.
  await assert.rejects(
    destinations.post(url, request, signal()),
    (err: Error) => err instanceof DestinationRefused && err.message === 'destination not allowed: private',
  )
  assert.equal(dns.asked.length, 2)
  assert.equal(spy.targets.length, 1, 'no second connection')
  assert.equal(hooks.connections(), 1)
})

test('one forbidden answer among allowed ones refuses the name before any connection; https keeps the name for TLS', async (t) => {
  const hooks = await receiver(t)
  const port = portOf(hooks)
  for (const [answers, category] of [
    [['127.0.0.1', '169.254.169.254'], 'link-local'],
    [['127.0.0.1', '::ffff:10.0.0.1'], 'private'],
    [['fd00:ec2::254'], 'private'],
    [['::1'], 'loopback'],
    [['64:ff9b::a9fe:a9fe'], 'link-local'],
  ] as const) {
    const spy = connectSpy()
    const destinations = createDestinations({
      allowedCidrs: LOOPBACK_ONLY,
      lookup: fakeLookup([...answers]).lookup,
      connect: spy.connect,
    })
    await assert.rejects(
      destinations.post(new URL(`http://mixed.test:${port}/`), request, signal()),
      (err: Error) =>
        err instanceof DestinationRefused && err.message === `destination not allowed: ${category}`,
      String(answers),
    )
    assert.deepEqual(spy.targets, [], `${answers}: no connection`)
  }
  // Without an allow list, loopback itself is refused.
  const strict = connectSpy()
  await assert.rejects(
    createDestinations({ lookup: fakeLookup(['127.0.0.1']).lookup, connect: strict.connect }).post(
      new URL(`http://localhost.test:${port}/`),
      request,
      signal(),
    ),
    /destination not allowed: loopback/,
  )
  assert.deepEqual(strict.targets, [])
  assert.equal(hooks.connections(), 0)

  const destinations = createDestinations({
    allowedCidrs: LOOPBACK_ONLY,
    lookup: fakeLookup(['127.0.0.1']).lookup,
  })
  assert.deepEqual(await destinations.resolve(new URL('https://hooks.test./x'), signal()), {
    address: '127.0.0.1',
    family: 4,
    port: 443,
    tls: true,
    servername: 'hooks.test',
  })
  assert.deepEqual(await destinations.resolve(new URL('https://127.0.0.1:8443/x'), signal()), {
    address: '127.0.0.1',
    family: 4,
    port: 8443,
    tls: true,
    servername: undefined,
  })
})

test('a lookup that never answers is bounded by the delivery timeout', async () => {
  const spy = connectSpy()
  // Answers (loopback) long after the timeout; the timer also keeps the test's event loop alive.
  const late: Lookup = () =>
    new Promise((resolve) => setTimeout(() => resolve([{ address: '127.0.0.1', family: 4 }]), 2000))
  const destinations = createDestinations({ lookup: late, connect: spy.connect })
  const started = Date.now()
  await assert.rejects(
    destinations.post(new URL('http://slow.test/'), request, AbortSignal.timeout(100)),
    (err: Error) => err.name === 'TimeoutError',
  )
  assert.ok(Date.now() - started < 1000)
  assert.deepEqual(spy.targets, [])
})

// A self-signed certificate for hooks.test (valid until 2126): no CA the service trusts signed it.
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGk0GxF9Fack0veff
fgo3AHV4giN2oDJicUeP1pfJxdGhRANCAATkvHj0sdl95ve8XOVFstgye3a5cXpV
9782+ktuR2Xlh2EezB+xohQqHAo63Dot90p+S3QYEF20/PHj4LjsKJeP
-----END PRIVATE KEY-----`
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBmTCCAT6gAwIBAgIUGeieZ8xM+2XKdPDMsNzldTBugGgwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKaG9va3MudGVzdDAgFw0yNjExMjYwOTE3MDdaGA8yMTI2MTEw
MjA5MTcwN1owFTETMBEGA1UEAwwKaG9va3MudGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABOS8ePSx2X3m97xc5UWy2DJ7drlxelX3vzb6S25HZeWHYR7MH7Gi
FCocCjrcOi33Sn5LdBgQXbT88ePguOwol4+jajBoMB0GA1UdDgQWBBTYrgQ65PQ+
A4d+2N6j/zyHVoF7vzAfBgNVHSMEGDAWgBTYrgQ65PQ+A4d+2N6j/zyHVoF7vzAP
BgNVHRMBAf8EBTADAQH/MBUGA1UdEQQOMAyCCmhvb2tzLnRlc3QwCgYIKoZIzj0E
AwIDSQAwRgIhAMlc3LKguMGEZCaoitdZo8FLi7BtbMf6heOZc2CeUAmBAiEAtfvz
E8+IKK92zvsSzHEj1Gz5jhlvY2CuO/AG8liJHoU=
-----END CERTIFICATE-----`

test('https: TLS to the checked address, the URL name as SNI, the certificate verified against it', async (t) => {
  const names: string[] = []
  const server = createTlsServer({
    key: TEST_KEY,
    cert: TEST_CERT,
    SNICallback: (name, done) => {
      names.push(name)
      done(null)
    },
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const spy = connectSpy()
  const destinations = createDestinations({
    allowedCidrs: LOOPBACK_ONLY,
    lookup: fakeLookup(['127.0.0.1']).lookup,
    connect: spy.connect,
  })
  await assert.rejects(
    destinations.post(new URL(`https://hooks.test:${port}/x`), request, signal()),
    (err: Error & { code?: string }) => err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT',
  )
  assert.deepEqual(spy.targets, [
    { address: '127.0.0.1', family: 4, port, tls: true, servername: 'hooks.test' },
  ])
  assert.deepEqual(names, ['hooks.test'], 'the name, not the address, in the TLS hello')
})
