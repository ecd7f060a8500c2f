/**
 * The admin console (/admin) in a real browser: Debian's chromium, driven by playwright-core, against a
 * service listening on 127.0.0.1, under the console's own Content-Security-Policy (no script at all).
 * Every action is checked through the service as well as on the page. test/console.test.ts covers the
 * same pages through inject. Needs /usr/bin/chromium (Debian: apt-get install chromium); without it the
 * test is skipped locally and fails on CI (CI=true), where .ci/run installs it.
 * Screenshots go to test-artifacts/ (ignored by git). With DOCS_SCREENSHOTS=1 the overview and a user's
 * page are also written to docs/ for the README: a plain run leaves the tracked images alone.
 */
import assert from 'node:assert/strict'
import { copyFile, mkdir } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { type TestContext, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core'
import type { Config } from '../src/config.ts'
import { sharedBrowser, skipWithoutChromium } from './fixtures/chromium.ts'
import { OPERATOR_UA, signIn as signInByInject } from './fixtures/console.ts'
import { freePort } from './fixtures/process.ts'
import {
  ADMIN_KEY,
  auth,
  buildTestApp,
  CHROME_WINDOWS,
  eventually,
  introspect,
  openSession,
  SAFARI_IPHONE,
} from './helper.ts'

const skip = skipWithoutChromium

const FIREFOX_MAC = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0'
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url)
const DOCS = new URL('../docs/', import.meta.url)
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')
/** The width the README's screenshots are taken at. */
const WIDE = { width: 1280, height: 800 }

interface World {
  app: Awaited<ReturnType<typeof buildTestApp>>['app']
  clock: Awaited<ReturnType<typeof buildTestApp>>['clock']
  /** http://127.0.0.1:<port>, where the service (and so the console) listens. */
  base: string
  browser: Browser
  /** Closed after the test, before the service. */
  contexts: BrowserContext[]
}

const browser = sharedBrowser

/** A service with the console on, listening on a port of 127.0.0.1, and the browser. */
async function setUp(t: TestContext, overrides: Partial<Config> = {}): Promise<World> {
  // After hooks run in the order they are added: the browser's contexts close before the service
  // (whose hook buildTestApp adds), so that no page is still talking to what closes.
  const contexts: BrowserContext[] = []
  t.after(() => Promise.all(contexts.map((context) => context.close())))
  const { app, clock } = await buildTestApp(t, { consoleEnabled: true, ...overrides })
  // The service's clock a while before the browser's time: sessions opened "earlier today", at real dates.
  clock.advance(Date.now() - 3 * 3600_000 - clock.now())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, clock, base, browser: await browser(), contexts }
}

/**
 * A browser context of the operator's browser. Only 127.0.0.1 is reachable; what the page reports of
 * the CSP (a refused style, say) and any script error are collected in `problems`.
 */
async function newContext(world: World, options: { axe?: boolean } = {}) {
  const context = await world.browser.newContext({
    userAgent: OPERATOR_UA,
    viewport: WIDE,
    // axe runs as a script of the page, which the console's policy forbids: only this context lets it.
    bypassCSP: options.axe ?? false,
  })
  world.contexts.push(context)
  await context.route(/^(?!https?:\/\/127\.0\.0\.1[:/])/, (route) => route.abort())
  if (options.axe) await context.addInitScript({ path: AXE })
  const problems: string[] = []
  context.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) problems.push(`console: ${message.text()}`)
  })
  context.on('weberror', (error) => problems.push(`page error: ${error.error().message}`))
  return { context, problems }
}

/** Signs in through the form with the platform admin key; the page is then on the overview. */
async function signIn(context: BrowserContext, base: string, name = 'Ada Operator'): Promise<Page> {
  const page = await context.newPage()
  await page.goto(`${base}/admin`)
  await page.waitForURL(`${base}/admin/sign-in`)
  await page.getByLabel('Your name').fill(name)
  await page.getByLabel('An admin API key').fill(ADMIN_KEY)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(`${base}/admin`)
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor()
  return page
}

/** The operator's console token: the HttpOnly cookie, read through the browser's cookie store. */
async function consoleToken(context: BrowserContext): Promise<string> {
  const cookie = (await context.cookies()).find((c) => c.name === 'sa_console')
  assert.ok(cookie, 'the console set its cookie')
  return cookie.value
}

/** Opens a session for `userId` from a client of its own, some minutes after the previous one. */
async function device(world: World, userId: string, ip: string, userAgent = CHROME_WINDOWS) {
  world.clock.advance(7 * 60_000)
  return openSession(world.app, { user_id: userId, ip, user_agent: userAgent })
}

const isActive = async (world: World, token: string) => (await introspect(world.app, token)).active

/** A call to the API from outside the browser, as a backend would make it. */
function api(world: World, path: string, bearer: string) {
  return fetch(`${world.base}${path}`, { headers: { authorization: `Bearer ${bearer}` } })
}

/** A locator's text as rendered (table cells apart), spaces collapsed. */
// biome-ignore lint/performance/useDomNodeTextContent: the rendered text is the point: textContent runs cells together
const text = async (locator: Locator) => (await locator.innerText()).replace(/\s+/g, ' ').trim()
const banner = (page: Page) => page.getByRole('banner')
const nav = (page: Page, name: string) =>
  page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name, exact: true })
const notice = (page: Page, role: 'status' | 'alert', hasText: string | RegExp) =>
  page.getByRole(role).filter({ hasText })
const liveSessions = (page: Page, userId: string) =>
  page.getByRole('table', { name: `Live sessions of ${userId}` }).locator('tbody tr')

interface Focus {
  tag: string
  id: string
  /** aria-label, else the label of a field, else the text. */
  name: string
  outline: string
  outlineWidth: number
  /** The whole element is inside the viewport (a skip link parked off-screen is not). */
  inView: boolean
}

/** The element that has the focus: what it is, its outline, and whether it can be seen. */
function focused(page: Page) {
  return page.evaluate<Focus | null>(`(() => {
    const el = document.activeElement
    if (!el || el === document.body) return null
    const style = getComputedStyle(el)
    const box = el.getBoundingClientRect()
    const label = el.labels && el.labels[0] ? el.labels[0].textContent : null
    return {
      tag: el.tagName.toLowerCase(),
      id: el.id,
      name: (el.getAttribute('aria-label') || label || el.textContent).replace(/\\s+/g, ' ').trim(),
      outline: style.outlineStyle,
      outlineWidth: parseFloat(style.outlineWidth),
      inView: box.width > 0 && box.height > 0 && box.left >= 0 && box.top >= 0 &&
        box.right <= innerWidth && box.bottom <= innerHeight,
    }
  })()`)
}

/** The focus is on something, on screen, with an outline of at least 2px: a keyboard user sees where they are. */
function assertVisibleFocus(focus: Focus | null, where: string): asserts focus is Focus {
  assert.ok(focus, `${where}: something has the focus`)
  assert.ok(focus.inView, `${where}: ${focus.tag} "${focus.name}" is on screen`)
  assert.notEqual(focus.outline, 'none', `${where}: ${focus.tag} "${focus.name}" shows its focus`)
  assert.ok(focus.outlineWidth >= 2, `${where}: ${focus.tag} "${focus.name}" outline ${focus.outlineWidth}px`)
}

/** Presses Tab until `wanted` has the focus, checking on the way that each stop shows its focus. */
async function tabTo(page: Page, wanted: (focus: Focus) => boolean, what: string, most = 30) {
  const path: string[] = []
  for (let i = 0; i < most; i++) {
    await page.keyboard.press('Tab')
    const focus = await focused(page)
    assertVisibleFocus(focus, `Tab to ${what}, stop ${i + 1}`)
    path.push(`${focus.tag} "${focus.name}"`)
    if (wanted(focus)) return focus
  }
  assert.fail(`${what} not reached in ${most} Tabs: ${path.join(' → ')}`)
}

async function screenshot(page: Page, name: string, docs?: string) {
  await mkdir(ARTIFACTS, { recursive: true })
  const path = fileURLToPath(new URL(name, ARTIFACTS))
  await page.screenshot({ path, fullPage: true })
  if (docs && process.env.DOCS_SCREENSHOTS === '1') await copyFile(path, fileURLToPath(new URL(docs, DOCS)))
}

/** An HTTP server on 127.0.0.1 that the test closes: another origin, or a webhook receiver. */
async function listen(t: TestContext, server: Server, port = 0): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  t.after(() => {
    server.closeAllConnections()
    return new Promise((resolve) => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

test('an operator finds a user with three sessions, revokes one, suspends and resumes another; the events say who', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const windows = await device(world, 'alice', '203.0.113.7', CHROME_WINDOWS)
  const phone = await device(world, 'alice', '198.51.100.4', SAFARI_IPHONE)
  const mac = await device(world, 'alice', '192.0.2.55', FIREFOX_MAC)
  const bob = await device(world, 'bob', '203.0.113.9') // someone else's: not on alice's page
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base, 'Ada Lovelace')
  assert.match(
    await text(banner(page)),
    /Signed in as Ada Lovelace \(key env-admin, tenant default, platform\)/,
  )
  assert.equal(await nav(page, 'Overview').getAttribute('aria-current'), 'page')
  await screenshot(page, 'console-overview.png', 'console-overview.png')

  // Find a user from the overview.
  await page.getByRole('search', { name: 'Find a user' }).getByLabel('User id').fill('alice')
  await page.getByRole('button', { name: 'Find' }).click()
  await page.waitForURL(`${world.base}/admin/users/alice`)
  await page.getByRole('heading', { level: 1, name: 'User alice' }).waitFor()
  await page.getByRole('heading', { level: 2, name: 'Live sessions (3)' }).waitFor()
  const rows = liveSessions(page, 'alice')
  assert.equal(await rows.count(), 3)
  const listed = await text(page.getByRole('table', { name: 'Live sessions of alice' }))
  for (const expected of [
    /Chrome on Windows \(desktop\)/,
    /Mobile Safari on iOS \(mobile\)/,
    /Firefox on Mac OS \(desktop\)/,
    /203\.0\.113\.7/,
    /198\.51\.100\.4/,
    /192\.0\.2\.55/,
  ]) {
    assert.match(listed, expected)
  }
  assert.doesNotMatch(listed, /203\.0\.113\.9/, "bob's session is not on alice's page")
  assert.equal(await nav(page, 'Users').getAttribute('aria-current'), 'page')
  await screenshot(page, 'console-user.png', 'console-user.png')

  // Revoke the Windows session from its row: every button says which session it acts on.
  await page.getByRole('button', { name: 'Revoke Chrome on Windows (desktop), 203.0.113.7' }).click()
  await page.waitForURL(`${world.base}/admin/users/alice?notice=revoked`)
  await notice(page, 'status', 'The session is revoked').waitFor()
  await page.getByRole('heading', { level: 2, name: 'Live sessions (2)' }).waitFor()
  assert.equal(await rows.count(), 2)
  assert.equal(await isActive(world, windows.token), false)
  assert.equal(await isActive(world, phone.token), true)
  assert.equal(await isActive(world, mac.token), true)

  // Suspend the phone: inactive, its row says why and offers to resume.
  await page.getByRole('button', { name: 'Suspend Mobile Safari on iOS (mobile), 198.51.100.4' }).click()
  await page.waitForURL(`${world.base}/admin/users/alice?notice=suspended`)
  await notice(page, 'status', 'The session is suspended').waitFor()
  assert.equal(await isActive(world, phone.token), false)
  const phoneRow = rows.filter({ hasText: '198.51.100.4' })
  assert.match(await text(phoneRow), /suspended: suspended by an operator/)
  await screenshot(page, 'console-user-suspended.png')

  // Resume it from the session's page, bound to the client it is bound to.
  await phoneRow.getByRole('link', { name: 'Resume Mobile Safari on iOS (mobile), 198.51.100.4' }).click()
  await page.waitForURL(`${world.base}/admin/sessions/${phone.session.id}`)
  await page.getByRole('heading', { level: 1, name: `Session ${phone.session.id}` }).waitFor()
  const rebind = page.getByRole('group', { name: 'Resume, bound to' })
  assert.equal(
    await rebind
      .getByRole('radio', { name: /the client it is bound to now \(198\.51\.100\.4\)/ })
      .isChecked(),
    true,
  )
  await screenshot(page, 'console-session.png')
  await page.getByRole('button', { name: 'Resume', exact: true }).click()
  await page.waitForURL(`${world.base}/admin/sessions/${phone.session.id}?notice=resumed`)
  await notice(page, 'status', 'The session is resumed.').waitFor()
  assert.equal(await isActive(world, phone.token), true)
  const facts = await text(page.locator('dl.facts'))
  assert.match(facts, /Status active/)
  const history = page.getByRole('table', { name: 'Events of this session, newest first' })
  assert.match(await text(history), /session\.resumed.*by Ada Lovelace \(env-admin\) in the console/)

  // The events page, filtered to revocations: the operator is the actor.
  await nav(page, 'Events').click()
  await page.getByLabel('Type').selectOption('session.revoked')
  await page.getByLabel('User id').fill('alice')
  await page.getByRole('button', { name: 'Filter' }).click()
  await page.waitForURL(/\/admin\/events\?type=session\.revoked&user_id=alice/)
  const events = page.getByRole('table', { name: 'Events, newest first' }).locator('tbody tr')
  assert.equal(await events.count(), 1)
  assert.match(
    await text(events.first()),
    /session\.revoked alice .*reason: revoked by an operator; by Ada Lovelace \(env-admin\) in the console/,
  )
  await screenshot(page, 'console-events.png')
  assert.equal(await isActive(world, bob.token), true)

  // Everything above ran under the console's CSP without a refusal; the listener does hear one.
  assert.deepEqual(problems, [])
  await page.evaluate(
    `document.head.append(Object.assign(document.createElement('style'), { textContent: 'p{}' }))`,
  )
  await eventually(() => problems.length > 0, 5000, 'the refused inline style reported')
  assert.match(problems.join(), /style-src/)
})

test('sign out everyone but a list: a mistyped confirmation does nothing and keeps the list; then only the listed stay', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const sessions = {
    alice: await device(world, 'alice', '203.0.113.7'),
    bob: await device(world, 'bob', '203.0.113.8'),
    carol: await device(world, 'carol', '203.0.113.9', SAFARI_IPHONE),
    dave: await device(world, 'dave', '203.0.113.10'),
  }
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base)
  const operator = await consoleToken(context)

  await nav(page, 'Sign out everyone').click()
  await page.getByRole('heading', { level: 1, name: 'Sign out everyone' }).waitFor()
  const except = page.getByLabel('Except these users')
  await except.fill('alice\ncarol\n')
  await page.getByLabel('Reason').fill('incident 42')
  await page.getByLabel('to confirm').fill('sign out everybody')
  await page.getByRole('main').getByRole('button', { name: 'Sign out everyone' }).click()
  await notice(page, 'alert', 'Nothing was done: type "sign out everyone" to confirm.').waitFor()
  for (const session of Object.values(sessions)) assert.equal(await isActive(world, session.token), true)
  // What the operator typed is still there: submitting again must not sign out the listed users.
  assert.equal(await except.inputValue(), 'alice\ncarol\n')
  assert.equal(await page.getByLabel('Reason').inputValue(), 'incident 42')
  assert.equal(await page.getByLabel('to confirm').inputValue(), '', 'the confirmation is typed again')
  await screenshot(page, 'console-bulk-refused.png')

  await page.getByLabel('to confirm').fill('sign out everyone')
  await page.getByRole('main').getByRole('button', { name: 'Sign out everyone' }).click()
  await notice(page, 'status', 'Revoked 2 sessions, sparing 2 listed users.').waitFor()
  await screenshot(page, 'console-bulk.png')
  assert.equal(await isActive(world, sessions.alice.token), true)
  assert.equal(await isActive(world, sessions.carol.token), true)
  assert.equal(await isActive(world, sessions.bob.token), false)
  assert.equal(await isActive(world, sessions.dave.token), false)
  const revoked = await world.app.inject({ url: `/v1/sessions/${sessions.bob.session.id}`, headers: auth() })
  assert.equal(revoked.json().end_reason, 'incident 42')
  // The operator is still signed in, with the same console session.
  assert.equal(await isActive(world, operator), true)
  await nav(page, 'Overview').click()
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor()
  assert.equal(await consoleToken(context), operator)
  assert.deepEqual(problems, [])
})

test('a dead webhook delivery is sent again by Retry once its receiver is back', { skip }, async (t) => {
  const world = await setUp(t, {
    webhookPollMs: 20,
    webhookBackoffMs: 10,
    webhookTimeoutMs: 1000,
    webhookMaxAttempts: 1,
    // The receiver is on loopback, which webhooks may reach only when allowed (test/webhook-ssrf.test.ts).
    webhookAllowedCidrs: '127.0.0.0/8',
  })
  // A receiver that is down: nothing listens on its port yet.
  const port = await freePort()
  const created = await world.app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: auth(),
    payload: { url: `http://127.0.0.1:${port}/hooks`, event_types: ['session.revoked'] },
  })
  assert.equal(created.statusCode, 201, created.body)
  const webhookId = created.json().webhook.id as string
  const alice = await device(world, 'alice', '203.0.113.7')
  const revoked = await world.app.inject({
    method: 'DELETE',
    url: `/v1/sessions/${alice.session.id}`,
    headers: auth(),
  })
  assert.equal(revoked.statusCode, 200, revoked.body)
  type Delivery = { id: string; status: string; attempts: number; last_error: string | null }
  const deliveries = async () => {
    const res = await api(world, `/v1/webhooks/${webhookId}/deliveries`, ADMIN_KEY)
    assert.equal(res.status, 200)
    return ((await res.json()) as { deliveries: Delivery[] }).deliveries
  }
  await eventually(async () => (await deliveries())[0]?.status === 'dead', 15_000, 'the delivery dead')
  const [dead] = await deliveries()
  assert.ok(dead)
  assert.equal(dead.attempts, 1)

  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base)
  await nav(page, 'Webhooks').click()
  await page
    .getByRole('table', { name: 'Webhook subscriptions' })
    .getByRole('link', { name: webhookId })
    .click()
  await page.getByRole('heading', { level: 1, name: `Webhook ${webhookId}` }).waitFor()
  const row = page.getByRole('table', { name: 'Deliveries, newest first' }).locator('tbody tr')
  assert.equal(await row.count(), 1)
  assert.match(await text(row), /session\.revoked dead 1 ECONNREFUSED/)
  await screenshot(page, 'console-webhook-dead.png')

  // The receiver is back; the operator retries the delivery.
  const received: string[] = []
  await listen(
    t,
    createServer((request, response) => {
      request.resume()
      request.on('end', () => {
        received.push(`${request.method} ${request.url} ${request.headers['webhook-id']}`)
        response.writeHead(204).end()
      })
    }),
    port,
  )
  await row.getByRole('button', { name: `Retry delivery ${dead.id}` }).click()
  await page.waitForURL(`${world.base}/admin/webhooks/${webhookId}?notice=retried`)
  await notice(page, 'status', 'The delivery is queued again').waitFor()
  await eventually(async () => (await deliveries())[0]?.status === 'delivered', 15_000, 'the retry delivered')
  const [delivered] = await deliveries()
  assert.equal(delivered?.id, dead.id)
  assert.equal(delivered?.attempts, 1, 'sent once more, counted from the start')
  assert.equal(received.length, 1)
  assert.match(received[0] ?? '', /^POST \/hooks evt_\d+$/)
  await page.reload()
  assert.match(await text(row), /session\.revoked delivered 1 204/)
  await screenshot(page, 'console-webhook-retried.png')
  assert.deepEqual(problems, [])
})

test('an API key created in the console is shown once and works; revoked there, it is refused', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base)
  await nav(page, 'API keys').click()
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
  await page.getByLabel('Name').fill('support dashboard')
  await page.getByRole('checkbox', { name: 'sessions:read' }).check()
  await page.getByRole('checkbox', { name: 'introspect' }).uncheck()
  await page.getByRole('button', { name: 'Create key' }).click()
  const shown = page.getByLabel('The new API key')
  const key = await shown.inputValue()
  assert.match(key, /^sak_/)
  const createdText = await text(notice(page, 'status', 'is created'))
  const id = /Key (\S+) is created/.exec(createdText)?.[1]
  assert.ok(id, createdText)
  await screenshot(page, 'console-api-key-created.png')

  const works = await api(world, '/v1/users/x/sessions', key)
  assert.equal(works.status, 200, await works.text())
  const keys = page.getByRole('table', { name: 'API keys' })
  assert.match(
    await text(keys.locator('tbody tr').filter({ hasText: id })),
    /support dashboard .* sessions:read/,
  )

  await keys.getByRole('button', { name: `Revoke key support dashboard (${id})` }).click()
  await page.waitForURL(`${world.base}/admin/api-keys?notice=key-revoked`)
  await notice(page, 'status', 'The API key is revoked.').waitFor()
  assert.match(await text(keys.locator('tbody tr').filter({ hasText: id })), /revoked/)
  assert.equal((await page.content()).includes(key), false, 'the key is never shown again')
  const refused = await api(world, '/v1/users/x/sessions', key)
  assert.equal(refused.status, 401)
  assert.deepEqual(problems, [])
})

test('signing out ends the console session: /admin asks to sign in, the old cookie is dead; /v1 never took it', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base)
  const token = await consoleToken(context)
  // The console's cookie is not an API credential, even while it is live.
  assert.equal((await api(world, '/v1/users/alice/sessions', token)).status, 401)
  assert.equal(await isActive(world, token), true)

  await banner(page).getByRole('button', { name: 'Sign out', exact: true }).click()
  await page.waitForURL(`${world.base}/admin/sign-in`)
  await page.getByRole('heading', { level: 1, name: 'Sign in to the console' }).waitFor()
  assert.equal(await isActive(world, token), false)
  await page.goto(`${world.base}/admin/users`)
  await page.waitForURL(`${world.base}/admin/sign-in`)

  // The old cookie, put back by hand (as someone who copied it would): still signed out.
  const other = (await newContext(world)).context
  await other.addCookies([{ name: 'sa_console', value: token, url: `${world.base}/admin` }])
  const again = await other.newPage()
  await again.goto(`${world.base}/admin`)
  await again.waitForURL(`${world.base}/admin/sign-in`)
  assert.deepEqual(problems, [])
})

test('a form posted to the console from another origin does nothing, even with a valid form token', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const alice = await device(world, 'alice', '203.0.113.7')
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base)
  // The worst case: the attacker somehow has the operator's form token too.
  await page.goto(`${world.base}/admin/users/alice`)
  const csrf = await page.locator('input[name="_csrf"]').first().inputValue()
  const action = `${world.base}/admin/sessions/${alice.session.id}/revoke?back=user`
  const evil = await listen(
    t,
    createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      response.end(`<!doctype html><html lang="en"><title>You won</title>
<form method="post" action="${action}"><input type="hidden" name="_csrf" value="${csrf}">
<button type="submit">Claim your prize</button></form></html>`)
    }),
  )
  assert.notEqual(new URL(evil).origin, new URL(world.base).origin)
  const attack = await context.newPage()
  await attack.goto(evil)
  const answered = attack.waitForResponse((response) => response.url() === action)
  await attack.getByRole('button', { name: 'Claim your prize' }).click()
  assert.equal((await answered).status(), 403)
  await notice(attack, 'alert', 'This form was sent from another site: nothing was done.').waitFor()
  assert.equal(await isActive(world, alice.token), true)
  // The operator's own page still works.
  await page.reload()
  assert.equal(await liveSessions(page, 'alice').count(), 1)
  assert.deepEqual(problems, [])

  // Where a browser sends Sec-Fetch-Site it decides, whatever Origin says: under Referrer-Policy
  // no-referrer Chromium says Origin: null for the console's own forms. Without it, null is refused.
  const response = await page.goto(`${world.base}/admin`)
  assert.equal(response?.headers()['referrer-policy'], 'same-origin')
  const other = await device(world, 'alice', '203.0.113.8')
  const operator = await signInByInject(world.app, ADMIN_KEY)
  await operator.get('/admin/users/alice')
  const nullOrigin = await operator.post(`/admin/sessions/${other.session.id}/revoke`, {}, { origin: 'null' })
  assert.equal(nullOrigin.statusCode, 403)
  assert.equal(await isActive(world, other.token), true)
  await operator.get('/admin/users/alice')
  const ownForm = await operator.post(
    `/admin/sessions/${other.session.id}/revoke`,
    {},
    { origin: 'null', 'sec-fetch-site': 'same-origin' },
  )
  assert.equal(ownForm.statusCode, 303, ownForm.body)
  assert.equal(await isActive(world, other.token), false)
})

test('keyboard only: Tab to the fields, Enter signs in, the skip link, Enter on a row revokes; the focus is always visible', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const windows = await device(world, 'alice', '203.0.113.7', CHROME_WINDOWS)
  const phone = await device(world, 'alice', '198.51.100.4', SAFARI_IPHONE)
  const mac = await device(world, 'alice', '192.0.2.55', FIREFOX_MAC)
  const { context, problems } = await newContext(world)
  const page = await context.newPage()
  await page.goto(`${world.base}/admin/sign-in`)
  const keys = page.keyboard

  // The skip link first, shown when it has the focus; then the fields and the button, in order.
  await keys.press('Tab')
  const skipLink = await focused(page)
  assertVisibleFocus(skipLink, 'the skip link')
  assert.equal(skipLink.name, 'Skip to content')
  await keys.press('Tab')
  const name = await focused(page)
  assertVisibleFocus(name, 'the name field')
  assert.match(name.name, /^Your name/)
  await keys.type('Kim Keys')
  await keys.press('Tab')
  const keyField = await focused(page)
  assertVisibleFocus(keyField, 'the key field')
  assert.match(keyField.name, /^An admin API key/)
  await keys.type(ADMIN_KEY)
  await keys.press('Tab')
  const button = await focused(page)
  assertVisibleFocus(button, 'the sign-in button')
  assert.equal(button.name, 'Sign in')
  await screenshot(page, 'console-keyboard-sign-in.png')
  // Back to the key, Enter submits the form.
  await keys.press('Shift+Tab')
  await keys.press('Enter')
  await page.waitForURL(`${world.base}/admin`)
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor()

  // The skip link passes the header: Enter on it, and the next Tab is in the page's content.
  await keys.press('Tab')
  assert.equal((await focused(page))?.name, 'Skip to content')
  await keys.press('Enter')
  assert.equal((await focused(page))?.tag, 'main', 'the skip link moves the focus to the content')
  await keys.press('Tab')
  const search = await focused(page)
  assertVisibleFocus(search, 'the search field')
  assert.equal(search.name, 'User id')
  await keys.type('alice')
  await keys.press('Enter')
  await page.waitForURL(`${world.base}/admin/users/alice`)
  await page.getByRole('heading', { level: 2, name: 'Live sessions (3)' }).waitFor()

  // To the phone's Revoke button, through the search form and the rows before it; Enter revokes.
  await keys.press('Tab')
  await keys.press('Enter')
  assert.equal((await focused(page))?.tag, 'main')
  const revoke = await tabTo(
    page,
    (f) => f.name === 'Revoke Mobile Safari on iOS (mobile), 198.51.100.4',
    "the phone's Revoke",
  )
  assert.equal(revoke.tag, 'button')
  await screenshot(page, 'console-keyboard-revoke.png')
  await keys.press('Enter')
  await page.waitForURL(`${world.base}/admin/users/alice?notice=revoked`)
  await notice(page, 'status', 'The session is revoked').waitFor()
  assert.equal(await isActive(world, phone.token), false)
  assert.equal(await isActive(world, windows.token), true)
  assert.equal(await isActive(world, mac.token), true)
  assert.equal(await liveSessions(page, 'alice').count(), 2)

  // The header's Sign out is reachable too, and shows its focus on the dark header.
  await page.goto(`${world.base}/admin`)
  await tabTo(page, (f) => f.tag === 'button' && f.name === 'Sign out', 'Sign out')
  await keys.press('Enter')
  await page.waitForURL(`${world.base}/admin/sign-in`)
  assert.deepEqual(problems, [])
})

test('axe-core finds no serious or critical violation on any console page', { skip }, async (t) => {
  const world = await setUp(t)
  await device(world, 'alice', '203.0.113.7', CHROME_WINDOWS)
  const phone = await device(world, 'alice', '198.51.100.4', SAFARI_IPHONE)
  await device(world, 'alice', '192.0.2.55', FIREFOX_MAC)
  // A suspended session: its row offers Resume, its page the rebind choice.
  const suspended = await world.app.inject({
    method: 'POST',
    url: `/v1/sessions/${phone.session.id}/suspend`,
    headers: auth(),
    payload: { reason: 'support ticket 7' },
  })
  assert.equal(suspended.statusCode, 200, suspended.body)
  const { context } = await newContext(world, { axe: true })
  const page = await context.newPage()

  const checked: string[] = []
  async function check(state: string) {
    await page.waitForFunction('typeof axe === "object"')
    const result = await page.evaluate<Array<{ id: string; impact: string; help: string; nodes: unknown[] }>>(
      `axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target) })))`,
    )
    const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    assert.deepEqual(serious, [], `${state}: ${JSON.stringify(result, null, 2)}`)
    checked.push(state)
  }

  await page.goto(`${world.base}/admin/sign-in`)
  await check('sign-in')
  await page.getByLabel('Your name').fill('Axe')
  await page.getByLabel('An admin API key').fill('sak_not-a-key')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await notice(page, 'alert', 'Unknown or revoked API key.').waitFor()
  assert.equal(await page.getByLabel('Your name').inputValue(), 'Axe', 'the name is kept, the key is not')
  assert.equal(await page.getByLabel('An admin API key').inputValue(), '')
  await check('sign-in refused')
  await page.getByLabel('An admin API key').fill(ADMIN_KEY)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(`${world.base}/admin`)
  await check('overview')
  await page.goto(`${world.base}/admin/users`)
  await check('users')
  await page.goto(`${world.base}/admin/users/alice`)
  await liveSessions(page, 'alice').nth(2).waitFor()
  await check('user page')
  await page.goto(`${world.base}/admin/sessions/${phone.session.id}`)
  await page.getByRole('group', { name: 'Resume, bound to' }).waitFor()
  await check('session page')
  await page.goto(`${world.base}/admin/events`)
  await check('events')
  await page.goto(`${world.base}/admin/sign-out-everyone`)
  await check('sign out everyone')
  await page.getByLabel('to confirm').fill('no')
  await page.getByRole('main').getByRole('button', { name: 'Sign out everyone' }).click()
  await check('sign out everyone, refused')
  await page.goto(`${world.base}/admin/api-keys`)
  await page.getByLabel('Name').fill('axe')
  await page.getByRole('button', { name: 'Create key' }).click()
  await page.getByLabel('The new API key').waitFor()
  await check('API keys, a key created')
  for (const path of ['webhooks', 'signing-keys', 'tenants']) {
    await page.goto(`${world.base}/admin/${path}`)
    await check(path)
  }
  await page.goto(`${world.base}/admin/sessions/00000000-0000-4000-8000-000000000000`)
  await check('not found')
  assert.equal(checked.length, 14)
})
