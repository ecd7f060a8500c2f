/**
 * <session-devices> in a real browser (Debian's chromium, driven by playwright-core) against a real
 * service, through examples/devices-page: the page logs the user in, sets the session cookie the
 * service reads (FORWARD_AUTH_COOKIE) and proxies /auth/v1/me/* to it, under a strict
 * Content-Security-Policy. Needs /usr/bin/chromium (Debian: apt-get install chromium); without it the
 * test is skipped locally and fails on CI (CI=true), where .ci/run installs it.
 * Screenshots go to test-artifacts/ (ignored by git).
 */
import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { type TestContext, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core'
import { buildDevicesPage } from '../examples/devices-page/server.ts'
import { sharedBrowser, skipWithoutChromium } from './fixtures/chromium.ts'
import { freePort } from './fixtures/process.ts'
import { auth, buildTestApp, CHROME_WINDOWS, createKey, introspect, SAFARI_IPHONE } from './helper.ts'

const skip = skipWithoutChromium

const COOKIE = 'sa_session'
/** The browser's own User-Agent: what its session is bound to, and what the widget's calls send. */
const CHROME_LINUX =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url)
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')
const TITLE = 'Where you are signed in' // the page's data-strings child renames the element's title

interface World {
  service: Awaited<ReturnType<typeof buildTestApp>>['app']
  serviceUrl: string
  clock: Awaited<ReturnType<typeof buildTestApp>>['clock']
  base: string
  browser: Browser
  /** Closed after the test, before the page and the service. */
  contexts: BrowserContext[]
}

const browser = sharedBrowser

/** A service, the devices page in front of it, and the browser; the test's contexts, page and service closed after it. */
async function setUp(
  t: TestContext,
  options: { selfServiceOrigins?: string; port?: number } = {},
): Promise<World> {
  // After hooks run in the order they are added: the browser's contexts go first, then the page, then
  // the service (added by buildTestApp), so that nothing is still talking to what closes.
  const contexts: BrowserContext[] = []
  t.after(() => Promise.all(contexts.map((context) => context.close())))
  let example: ReturnType<typeof buildDevicesPage> | undefined
  t.after(() => example?.close())
  const { app: service, clock } = await buildTestApp(t, {
    forwardAuthCookie: COOKIE,
    trustProxy: '127.0.0.1',
    ...(options.selfServiceOrigins ? { selfServiceOrigins: options.selfServiceOrigins } : {}),
  })
  // The service's clock at the browser's time, so that "signed in" reads "now" and not months ago.
  clock.advance(Date.now() - clock.now())
  const serviceUrl = await service.listen({ host: '127.0.0.1', port: 0 })
  const { key } = await createKey(service, ['sessions:write', 'introspect'])
  example = buildDevicesPage({ sessionAuthorityUrl: serviceUrl, apiKey: key, cookieName: COOKIE })
  const base = await example.listen({ host: '127.0.0.1', port: options.port ?? 0 })
  return { service, serviceUrl, clock, base, browser: await browser(), contexts }
}

/**
 * A browser context that records what the page reports: CSP violations (the DOM event and the console
 * line), the element's events, and script errors. Only 127.0.0.1 is reachable.
 */
async function newContext(world: World, options: { bypassCSP?: boolean } = {}) {
  const context = await world.browser.newContext({
    userAgent: CHROME_LINUX,
    viewport: { width: 820, height: 760 },
    bypassCSP: options.bypassCSP ?? false,
  })
  world.contexts.push(context)
  await context.route(/^(?!https?:\/\/127\.0\.0\.1[:/])/, (route) => route.abort())
  // Runs before any script of the page, through the browser's debugging protocol (no CSP applies to it).
  await context.addInitScript(`
    window.__violations = []
    window.__events = []
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__violations.push(e.violatedDirective + ' ' + e.blockedURI))
    for (const name of ['loaded', 'signed-out', 'signed-out-others', 'inactive', 'error']) {
      document.addEventListener('session-devices:' + name, (e) =>
        window.__events.push({ name, detail: JSON.parse(JSON.stringify(e.detail)) }))
    }
  `)
  const problems: string[] = []
  context.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) problems.push(`console: ${message.text()}`)
  })
  context.on('weberror', (error) => problems.push(`page error: ${error.error().message}`))
  return { context, problems }
}

/** Signs in through the page's form; the browser then holds the session cookie and shows the devices. */
async function signIn(context: BrowserContext, base: string, userId: string): Promise<Page> {
  const page = await context.newPage()
  await page.goto(`${base}/`)
  await page.getByLabel('User name').fill(userId)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(`${base}/devices`)
  return page
}

/** The browser's session token (the HttpOnly cookie, read through the browser's cookie store). */
async function browserToken(context: BrowserContext): Promise<string> {
  const cookie = (await context.cookies()).find((c) => c.name === COOKIE)
  assert.ok(cookie, 'the page set the session cookie')
  return cookie.value
}

/** Opens a session for `userId` through the API, as another device would, a second after the last one. */
async function otherDevice(world: World, userId: string, userAgent: string, ip: string) {
  world.clock.advance(1000)
  const res = await world.service.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: auth(),
    payload: { user_id: userId, ip, user_agent: userAgent },
  })
  assert.equal(res.statusCode, 201, res.body)
  const { token, session } = res.json() as { token: string; session: { id: string } }
  return { token, session, client: { ip, user_agent: userAgent } }
}

/** Whether the service takes this token now, from the client it was issued to (no drift). */
async function isActive(world: World, token: string, client = { ip: '127.0.0.1', user_agent: CHROME_LINUX }) {
  return (await introspect(world.service, token, client)).active
}

/** A locator's text (textContent: the separators drawn by CSS are not in it). */
const text = async (locator: Locator) => (await locator.textContent()) ?? ''
const devicesList = (page: Page) => page.getByRole('list', { name: TITLE })
const row = (page: Page, sessionId: string) =>
  page.locator(`session-devices li[data-session-id="${sessionId}"]`)

/** The element that has the focus, looking through shadow roots: its tag, accessible label and outline. */
function focused(page: Page) {
  return page.evaluate<{ tag: string; name: string; outline: string; outlineWidth: number } | null>(`(() => {
    let el = document.activeElement
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement
    if (!el || el === document.body) return null
    const style = getComputedStyle(el)
    return {
      tag: el.tagName.toLowerCase(),
      name: el.getAttribute('aria-label') || el.textContent.trim(),
      outline: style.outlineStyle,
      outlineWidth: parseFloat(style.outlineWidth),
    }
  })()`)
}

async function screenshot(page: Page, name: string) {
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: fileURLToPath(new URL(name, ARTIFACTS)), fullPage: true })
}

const recorded = (page: Page) =>
  page.evaluate<{ violations: string[]; events: Array<{ name: string; detail: Record<string, unknown> }> }>(
    '({ violations: window.__violations, events: window.__events })',
  )

test('two devices: this one marked, the other signed out, then all others after a confirmation; strict CSP holds', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const phone = await otherDevice(world, 'alice', SAFARI_IPHONE, '203.0.113.7')
  const laptop = await otherDevice(world, 'alice', CHROME_WINDOWS, '198.51.100.20')
  await otherDevice(world, 'bob', SAFARI_IPHONE, '203.0.113.9') // someone else's: never listed
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base, 'alice')
  const token = await browserToken(context)

  const list = devicesList(page)
  await list.getByRole('listitem').nth(2).waitFor()
  assert.equal(await list.getByRole('listitem').count(), 3)
  // This device first, marked, with its browser; the phone with its own icon and address.
  const first = list.getByRole('listitem').first()
  assert.equal(await first.getAttribute('aria-current'), 'true')
  assert.match(await text(first), /Chrome 124 on Linux\s*This device/)
  assert.equal(await first.getByRole('button').getAttribute('aria-label'), 'Sign out this device')
  assert.equal(await first.locator('svg[data-type="desktop"]').getAttribute('aria-hidden'), 'true')
  const phoneRow = row(page, phone.session.id)
  assert.match(await text(phoneRow), /Mobile Safari 17 on iOS 17\.0/)
  assert.match(await text(phoneRow), /IP address 203\.0\.113\.7/)
  assert.match(await text(phoneRow), /Signed in (now|\d+ seconds? ago)/)
  assert.equal(await phoneRow.getAttribute('aria-current'), null)
  assert.equal(await phoneRow.locator('svg[data-type="mobile"]').count(), 1)
  assert.equal(await row(page, laptop.session.id).locator('svg[data-type="desktop"]').count(), 1)
  // Recent activity: the three sign-ins, this device's marked.
  const activity = page.getByRole('list', { name: 'Recent activity' })
  await activity.getByRole('listitem').first().waitFor()
  assert.match(await text(activity), /Signed in \(this device\) · Chrome 124 on Linux · 127\.0\.0\.1/)
  assert.match(await text(activity), /Mobile Safari 17 on iOS 17\.0 · 203\.0\.113\.7/)
  await screenshot(page, 'widget-devices.png')
  // A phone's width: each button goes under its device's details.
  await page.setViewportSize({ width: 360, height: 760 })
  await screenshot(page, 'widget-narrow.png')
  await page.setViewportSize({ width: 820, height: 760 })

  // Sign out the phone: gone from the list, announced, and over at the service.
  await page.getByRole('button', { name: 'Sign out Mobile Safari 17 on iOS 17.0' }).click()
  await page.getByRole('status').filter({ hasText: 'Signed out Mobile Safari 17 on iOS 17.0.' }).waitFor()
  await phoneRow.waitFor({ state: 'detached' })
  assert.equal(await list.getByRole('listitem').count(), 2)
  assert.equal(await isActive(world, phone.token, phone.client), false)
  const ended = await world.service.inject({ url: `/v1/sessions/${phone.session.id}`, headers: auth() })
  assert.equal(ended.json().end_reason, 'self_service')
  assert.equal(await isActive(world, laptop.token, laptop.client), true)
  // The focus went to the next device's button, not to the page.
  assert.equal((await focused(page))?.name, 'Sign out Chrome 120 on Windows 10')
  // The activity has the sign-out, named by the device (its event names none: the sign-in's does).
  assert.match(
    await text(activity.getByRole('listitem').first()),
    /^Signed out · Mobile Safari 17 on iOS 17\.0 · /,
  )

  // Sign out all others: a confirmation first.
  await page.getByRole('button', { name: 'Sign out all other devices' }).click()
  const dialog = page.getByRole('dialog', { name: 'Sign out all other devices?' })
  await dialog.waitFor()
  assert.match(await text(dialog), /The other device signed in to your account will be signed out\./)
  assert.equal((await focused(page))?.name, 'Cancel')
  await screenshot(page, 'widget-confirm.png')
  await dialog.getByRole('button', { name: 'Sign out other devices' }).click()
  await page.getByRole('status').filter({ hasText: 'Signed out 1 other device.' }).waitFor()
  await row(page, laptop.session.id).waitFor({ state: 'detached' })
  assert.equal(await list.getByRole('listitem').count(), 1)
  assert.equal(await isActive(world, laptop.token, laptop.client), false)
  assert.equal(await isActive(world, token), true, 'this device stays signed in')
  await page.getByText('You are signed in on this device only.').waitFor()
  assert.equal(await page.getByRole('button', { name: 'Sign out all other devices' }).count(), 0)
  await screenshot(page, 'widget-only-this-device.png')

  const { violations, events } = await recorded(page)
  assert.deepEqual(violations, [])
  assert.deepEqual(problems, [])
  assert.deepEqual(
    events.filter((e) => e.name !== 'loaded'),
    [
      { name: 'signed-out', detail: { session_id: phone.session.id, current: false } },
      { name: 'signed-out-others', detail: { revoked: 1 } },
    ],
  )
  // The listener does see violations: an inline style, which the policy refuses, is reported.
  await page.evaluate(
    `document.head.append(Object.assign(document.createElement('style'), { textContent: 'p{}' }))`,
  )
  await page.waitForFunction('window.__violations.length > 0')
  assert.match((await recorded(page)).violations.join(), /style-src/)
})

test('keyboard only: Tab through the devices, Enter signs one out, Escape cancels the confirmation', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const phone = await otherDevice(world, 'carol', SAFARI_IPHONE, '203.0.113.7')
  const laptop = await otherDevice(world, 'carol', CHROME_WINDOWS, '198.51.100.20')
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base, 'carol')
  const list = devicesList(page)
  await list.getByRole('listitem').nth(2).waitFor()

  // Nothing focusable comes before the element on this page: the first Tab reaches this device's button.
  await page.keyboard.press('Tab')
  const first = await focused(page)
  assert.equal(first?.name, 'Sign out this device')
  // Visible focus: a real outline, at least 2px, on keyboard focus.
  assert.notEqual(first?.outline, 'none')
  assert.ok((first?.outlineWidth ?? 0) >= 2, `outline ${first?.outlineWidth}px`)
  await page.keyboard.press('Tab')
  // The laptop's session was opened after the phone's: most recently active after this device.
  assert.equal((await focused(page))?.name, 'Sign out Chrome 120 on Windows 10')
  await page.keyboard.press('Tab')
  assert.equal((await focused(page))?.name, 'Sign out Mobile Safari 17 on iOS 17.0')
  await screenshot(page, 'widget-keyboard-focus.png')
  await page.keyboard.press('Tab')
  assert.equal((await focused(page))?.name, 'Sign out all other devices')

  // Back to the phone, Enter: signed out, and the focus stays on a device button.
  await page.keyboard.press('Shift+Tab')
  await page.keyboard.press('Enter')
  await page.getByRole('status').filter({ hasText: 'Signed out Mobile Safari 17 on iOS 17.0.' }).waitFor()
  await row(page, phone.session.id).waitFor({ state: 'detached' })
  assert.equal(await isActive(world, phone.token, phone.client), false)
  assert.equal((await focused(page))?.name, 'Sign out Chrome 120 on Windows 10')

  // To "Sign out all other devices", Enter opens the confirmation on Cancel; Escape closes it, no harm done.
  await page.keyboard.press('Tab')
  assert.equal((await focused(page))?.name, 'Sign out all other devices')
  await page.keyboard.press('Enter')
  const dialog = page.getByRole('dialog', { name: 'Sign out all other devices?' })
  await dialog.waitFor()
  assert.equal((await focused(page))?.name, 'Cancel')
  await page.keyboard.press('Escape')
  await dialog.waitFor({ state: 'hidden' })
  assert.equal((await focused(page))?.name, 'Sign out all other devices', 'the focus is back on the opener')
  assert.equal(await isActive(world, laptop.token, laptop.client), true)

  // Again, Tab to the confirm button, Enter.
  await page.keyboard.press('Enter')
  await dialog.waitFor()
  await page.keyboard.press('Tab')
  assert.equal((await focused(page))?.name, 'Sign out other devices')
  await page.keyboard.press('Enter')
  await page.getByRole('status').filter({ hasText: 'Signed out 1 other device.' }).waitFor()
  assert.equal(await isActive(world, laptop.token, laptop.client), false)
  // The button is gone: the focus is on the element's heading, not lost to the page.
  assert.equal((await focused(page))?.name, TITLE)
  assert.deepEqual((await recorded(page)).violations, [])
  assert.deepEqual(problems, [])
})

test('axe-core finds no serious or critical violation: the list, the confirmation, signed out', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  await otherDevice(world, 'dave', SAFARI_IPHONE, '203.0.113.7')
  // axe is injected as a script of the page: this context lets it past the page's CSP.
  const { context } = await newContext(world, { bypassCSP: true })
  const page = await signIn(context, world.base, 'dave')
  await devicesList(page).getByRole('listitem').nth(1).waitFor()
  await page.addScriptTag({ path: AXE })

  async function check(state: string) {
    const result = await page.evaluate<Array<{ id: string; impact: string; help: string; nodes: unknown[] }>>(
      `axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target) })))`,
    )
    const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    assert.deepEqual(serious, [], `${state}: ${JSON.stringify(result, null, 2)}`)
  }

  await check('the list')
  await page.getByRole('button', { name: 'Sign out all other devices' }).click()
  await page.getByRole('dialog', { name: 'Sign out all other devices?' }).waitFor()
  await check('the confirmation')
  await page.keyboard.press('Escape')
  await page.getByRole('button', { name: 'Sign out this device' }).click()
  await page.getByRole('heading', { name: 'You are signed out' }).waitFor()
  await check('signed out')
})

test('signed out: this device by its button, or suspended by the service, says so and why', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  const { context, problems } = await newContext(world)
  const page = await signIn(context, world.base, 'erin')
  const token = await browserToken(context)
  await devicesList(page).getByRole('listitem').first().waitFor()

  await page.getByRole('button', { name: 'Sign out this device' }).click()
  await page.getByRole('heading', { name: 'You are signed out' }).waitFor()
  await page.getByRole('status').filter({ hasText: 'You signed out of this device.' }).waitFor()
  assert.equal((await focused(page))?.name, 'You are signed out')
  assert.equal(await isActive(world, token), false)
  // The host page heard it and offers to sign in again.
  await page.getByRole('link', { name: 'Sign in again' }).waitFor()
  const events = (await recorded(page)).events.filter((e) => e.name === 'signed-out')
  assert.equal(events.length, 1)
  assert.equal(events[0]?.detail.current, true)

  // A new session, suspended by an operator: the widget says it is signed out, because it was suspended.
  const again = await signIn(context, world.base, 'erin')
  await devicesList(again).getByRole('listitem').first().waitFor()
  const client = { ip: '127.0.0.1', user_agent: CHROME_LINUX }
  const { session_id: sessionId } = (await introspect(
    world.service,
    await browserToken(context),
    client,
  )) as {
    session_id?: string
  }
  const suspend = await world.service.inject({
    method: 'POST',
    url: `/v1/sessions/${sessionId}/suspend`,
    headers: auth(),
    payload: { reason: 'support_ticket' },
  })
  assert.equal(suspend.statusCode, 200, suspend.body)
  await again.reload()
  await again.getByRole('heading', { name: 'You are signed out' }).waitFor()
  await again.getByText('Your session was suspended').waitFor()
  await again.getByRole('link', { name: 'Sign in again' }).waitFor()
  const inactive = (await recorded(again)).events.filter((e) => e.name === 'inactive')
  assert.deepEqual(inactive, [{ name: 'inactive', detail: { reason: 'suspended' } }])
  await screenshot(again, 'widget-suspended.png')
  assert.deepEqual((await recorded(again)).violations, [])
  assert.deepEqual(problems, [])
})

test('an error while loading offers to try again; strings and lang replace the texts and formats', {
  skip,
}, async (t) => {
  const world = await setUp(t)
  await otherDevice(world, 'frank', SAFARI_IPHONE, '203.0.113.7')
  const { context, problems } = await newContext(world)
  // The first list call fails as an unavailable service would (injected); the retry reaches the service.
  let failed = 0
  await context.route(/\/auth\/v1\/me\/sessions\?/, async (route) => {
    if (failed++ > 0) return route.continue()
    return route.fulfill({
      status: 503,
      contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'SERVICE_UNAVAILABLE', message: 'retry shortly' } }),
    })
  })
  const page = await signIn(context, world.base, 'frank')
  await page.getByRole('alert').filter({ hasText: 'Your devices could not be loaded.' }).waitFor()
  await screenshot(page, 'widget-error.png')
  await page.getByRole('button', { name: 'Try again' }).click()
  await devicesList(page).getByRole('listitem').nth(1).waitFor()
  const errors = (await recorded(page)).events.filter((e) => e.name === 'error')
  assert.deepEqual(errors, [
    { name: 'error', detail: { status: 503, code: 'SERVICE_UNAVAILABLE', message: 'retry shortly' } },
  ])

  // German: the host's strings (a partial override) and the element's lang for the relative times.
  await page.evaluate(`(() => {
    const element = document.querySelector('session-devices')
    element.strings = { title: 'Ihre Geräte', thisDevice: 'Dieses Gerät', signOut: 'Abmelden',
      signedIn: 'Angemeldet {time}', lastActive: 'Zuletzt aktiv {time}' }
    element.setAttribute('lang', 'de')
  })()`)
  const german = page.getByRole('list', { name: 'Ihre Geräte' })
  await german.getByRole('listitem').first().waitFor()
  const listed = await text(german)
  assert.match(listed, /Dieses Gerät/)
  assert.match(listed, /Abmelden/)
  assert.match(listed, /Zuletzt aktiv (jetzt|vor \d+ Sekunden?)/)
  // Keys not given stay English.
  assert.match(await text(page.getByRole('button', { name: 'Sign out all other devices' })), /Sign out/)
  await screenshot(page, 'widget-german.png')
  assert.deepEqual((await recorded(page)).violations, [])
  assert.deepEqual(problems, [])
})

test('Bearer mode from another origin: the element and its API from the service, the token a property', {
  skip,
}, async (t) => {
  // The page's origin is the example's; the service allows it (SELF_SERVICE_ORIGINS) for CORS.
  const port = await freePort()
  const world = await setUp(t, { selfServiceOrigins: `http://127.0.0.1:${port}`, port })
  const phone = await otherDevice(world, 'gina', SAFARI_IPHONE, '203.0.113.7')
  // The token the page holds (an app that keeps its own): issued to this browser's address and agent.
  const mine = await otherDevice(world, 'gina', CHROME_LINUX, '127.0.0.1')
  // No cookie anywhere, and the module from the service's origin: past the example page's CSP.
  const { context, problems } = await newContext(world, { bypassCSP: true })
  const page = await context.newPage()
  await page.goto(`${world.base}/`)
  await page.evaluate(`(async () => {
    await import(${JSON.stringify(`${world.serviceUrl}/widget/session-devices.js`)})
    const element = document.createElement('session-devices')
    element.token = ${JSON.stringify(mine.token)}
    document.querySelector('main').append(element)
  })()`)
  // No api attribute: the element calls /v1/me of the origin it was loaded from, the service.
  const list = page.getByRole('list', { name: 'Your devices' })
  await list.getByRole('listitem').nth(1).waitFor()
  assert.equal(await list.getByRole('listitem').first().getAttribute('data-session-id'), mine.session.id)
  assert.match(await text(list.getByRole('listitem').first()), /Chrome 124 on Linux\s*This device/)

  await page.getByRole('button', { name: 'Sign out Mobile Safari 17 on iOS 17.0' }).click()
  await page.getByRole('status').filter({ hasText: 'Signed out Mobile Safari 17 on iOS 17.0.' }).waitFor()
  assert.equal(await isActive(world, phone.token, phone.client), false)
  assert.equal(await isActive(world, mine.token), true)
  assert.deepEqual(await context.cookies(), [])
  assert.deepEqual(problems, [])
})
