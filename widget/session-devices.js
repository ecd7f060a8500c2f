/**
 * <session-devices>: the signed-in user's devices, from session-authority's self-service API.
 *
 *   <script type="module" src="https://sessions.example.com/widget/session-devices.js"></script>
 *   <session-devices api="/auth/v1/me"></session-devices>
 *
 * Plain JavaScript, no dependency, no build step. Everything the element shows is made with DOM calls
 * (never innerHTML) and styled by a constructable stylesheet, so it runs under a strict Content Security
 * Policy (`script-src 'self'; style-src 'self'`, Trusted Types too) and the host page needs no inline
 * script. See widget/README.md for the element's API.
 */

/**
 * @typedef {{ browser: string | null, browser_version: string | null, os: string | null,
 *   os_version: string | null, type: string }} Device
 * @typedef {{ id: string, current: boolean, device: Device, ip: string | null, created_at: string,
 *   last_seen_at: string, expires_at: string }} MySession
 * @typedef {{ id: string, type: string, session_id: string, current: boolean, created_at: string,
 *   device: Device | null, ip: string | null, reason: string | null }} MyEvent
 * @typedef {string | Partial<Record<Intl.LDMLPluralRule, string>>} Text
 *   A string, or one per plural category of `{count}` (`one`, `other`, …) with `other` as the fallback.
 * @typedef {Record<string, Text>} Strings
 * @typedef {{ status: number, code: string, message: string, reason?: string }} ApiError
 * @typedef {'loading' | 'ready' | 'error' | 'inactive'} Phase
 */

/** The English texts; the `strings` property and a `<script type="application/json" data-strings>` child replace any of them. */
export const DEFAULT_STRINGS = Object.freeze({
  title: 'Your devices',
  loading: 'Loading your devices…',
  loadError: 'Your devices could not be loaded.',
  retry: 'Try again',
  onlyThisDevice: 'You are signed in on this device only.',
  thisDevice: 'This device',
  deviceName: '{browser} on {os}',
  unknownBrowser: 'Unknown browser',
  unknownOs: 'unknown system',
  ip: 'IP address {ip}',
  signedIn: 'Signed in {time}',
  lastActive: 'Last active {time}',
  signOut: 'Sign out',
  signOutLabel: 'Sign out {device}',
  signOutThisDeviceLabel: 'Sign out this device',
  signOutOthers: 'Sign out all other devices',
  confirmTitle: 'Sign out all other devices?',
  confirmText: {
    one: 'The other device signed in to your account will be signed out.',
    other: 'The {count} other devices signed in to your account will be signed out.',
  },
  confirm: 'Sign out other devices',
  cancel: 'Cancel',
  working: 'Signing out…',
  signedOutDevice: 'Signed out {device}.',
  signedOutOthers: {
    one: 'Signed out 1 other device.',
    other: 'Signed out {count} other devices.',
  },
  alreadySignedOut: 'That device was already signed out.',
  actionError: 'That did not work: {message}',
  rateLimited: 'Too many requests. Wait a moment and try again.',
  networkError: 'The service could not be reached.',
  signedOutTitle: 'You are signed out',
  'inactive.signed_out': 'You signed out of this device.',
  'inactive.suspended':
    'Your session was suspended: it was used from another browser or network. Sign in again.',
  'inactive.revoked': 'Your session was ended. Sign in again.',
  'inactive.expired': 'Your session expired. Sign in again.',
  'inactive.unknown': 'You are not signed in.',
  activityTitle: 'Recent activity',
  activityEmpty: 'No recent activity.',
  activityError: 'Recent activity could not be loaded.',
  activityOnThisDevice: '{what} (this device)',
  'event.session.created': 'Signed in',
  'event.session.new_device': 'Signed in from a new device',
  'event.session.suspended': 'Session suspended',
  'event.session.resumed': 'Session resumed',
  'event.session.revoked': 'Signed out',
  'event.session.expired': 'Session expired',
  'event.refresh_token.reused': 'A used sign-in token was presented again; the session was ended',
  'event.other': 'Session changed',
  'type.desktop': 'Computer',
  'type.mobile': 'Phone',
  'type.tablet': 'Tablet',
  'type.smarttv': 'TV',
  'type.wearable': 'Wearable',
  'type.console': 'Game console',
  'type.embedded': 'Device',
  'type.unknown': 'Device',
})

const INACTIVE_REASONS = ['suspended', 'revoked', 'expired', 'unknown']
/** At most this many pages of sessions (of 100) are read: more is no longer a list a person reads. */
const MAX_SESSION_PAGES = 10
const DEFAULT_ACTIVITY_LIMIT = 10

// Each device type's icon: 24×24, drawn with the text colour. Decorative (the text says the device).
/** @type {Record<string, Array<[string, Record<string, string>]>>} */
const ICONS = {
  desktop: [
    ['rect', { x: '2', y: '3', width: '20', height: '14', rx: '2' }],
    ['path', { d: 'M8 21h8M12 17v4' }],
  ],
  mobile: [
    ['rect', { x: '6', y: '2', width: '12', height: '20', rx: '2' }],
    ['path', { d: 'M11 18h2' }],
  ],
  tablet: [
    ['rect', { x: '4', y: '2', width: '16', height: '20', rx: '2' }],
    ['path', { d: 'M11 18h2' }],
  ],
  smarttv: [
    ['rect', { x: '2', y: '7', width: '20', height: '14', rx: '2' }],
    ['path', { d: 'M7 2l5 5 5-5' }],
  ],
  wearable: [
    ['rect', { x: '6', y: '6', width: '12', height: '12', rx: '3' }],
    ['path', { d: 'M9 6l1-4h4l1 4M9 18l1 4h4l1-4M12 9.5V12l1.5 1.5' }],
  ],
  console: [
    ['rect', { x: '2', y: '6', width: '20', height: '12', rx: '6' }],
    ['path', { d: 'M6 12h4M8 10v4M15 11h.01M18 13h.01' }],
  ],
  embedded: [
    ['rect', { x: '5', y: '5', width: '14', height: '14', rx: '2' }],
    ['rect', { x: '9', y: '9', width: '6', height: '6' }],
    ['path', { d: 'M9 2v3M15 2v3M9 19v3M15 19v3M2 9h3M2 15h3M19 9h3M19 15h3' }],
  ],
  unknown: [
    ['circle', { cx: '12', cy: '12', r: '10' }],
    ['path', { d: 'M9.1 9a3 3 0 0 1 5.8 1c0 2-3 2.5-3 4M12 17.5h.01' }],
  ],
}

const STYLE = `
:host {
  display: block;
  font: var(--sd-font, inherit);
  color: var(--sd-fg, #1f2328);
  background: var(--sd-bg, #fff);
  border: 1px solid var(--sd-border, #d0d7de);
  border-radius: var(--sd-radius, 8px);
  padding: var(--sd-padding, 1rem 1.25rem);
  line-height: 1.45;
}
:host([hidden]) { display: none; }
:host { container-type: inline-size; }
* { box-sizing: border-box; }
h2, h3, h4, h5, h6, h1 { font-size: 1.2em; margin: 0 0 .75rem; line-height: 1.25; }
.sub { font-size: 1em; margin: 1.25rem 0 .5rem; }
:focus { outline: none; }
:focus-visible {
  outline: 3px solid var(--sd-focus, var(--sd-accent, #0b57d0));
  outline-offset: 2px;
  border-radius: 4px;
}
ul, ol { list-style: none; margin: 0; padding: 0; }
.item {
  display: grid;
  grid-template-columns: auto minmax(0, 1fr) auto;
  gap: .25rem 1rem;
  align-items: center;
  padding: .75rem 0;
  border-top: 1px solid var(--sd-border, #d0d7de);
}
.item:first-child { border-top: 0; }
.icon { width: 2rem; height: 2rem; color: var(--sd-muted, #57606a); }
.current .icon { color: var(--sd-accent, #0b57d0); }
.device { font-weight: 600; margin: 0; overflow-wrap: anywhere; }
.badge {
  display: inline-block;
  margin-inline-start: .5rem;
  padding: 0 .5rem;
  font-size: .8em;
  font-weight: 600;
  border-radius: 999px;
  color: var(--sd-accent-fg, #fff);
  background: var(--sd-accent, #0b57d0);
  vertical-align: .1em;
}
.meta { margin: 0; color: var(--sd-muted, #57606a); font-size: .9em; }
.meta > span { display: inline-block; }
.meta span + span::before { content: "·"; margin: 0 .4em; }
button {
  font: inherit;
  white-space: nowrap;
  cursor: pointer;
  padding: .35rem .8rem;
  border-radius: var(--sd-button-radius, 6px);
  border: 1px solid var(--sd-border, #d0d7de);
  background: var(--sd-button-bg, #f6f8fa);
  color: var(--sd-fg, #1f2328);
}
button:hover { background: var(--sd-button-hover-bg, #eaeef2); }
button[aria-disabled="true"] { opacity: .6; cursor: progress; }
button.danger {
  border-color: var(--sd-danger, #b42318);
  background: var(--sd-danger, #b42318);
  color: var(--sd-danger-fg, #fff);
}
button.danger:hover { background: var(--sd-danger-hover, #912018); }
.actions { margin-top: .75rem; display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
.message { margin: .5rem 0; }
.message.error { color: var(--sd-danger, #b42318); }
.status:empty { display: none; }
.status {
  margin: 0 0 .75rem;
  padding: .5rem .75rem;
  border-radius: var(--sd-button-radius, 6px);
  background: var(--sd-status-bg, #eef6ff);
}
.activity li { padding: .3rem 0; font-size: .9em; }
.activity .when { color: var(--sd-muted, #57606a); }
dialog {
  max-width: min(28rem, calc(100vw - 2rem));
  border: 1px solid var(--sd-border, #d0d7de);
  border-radius: var(--sd-radius, 8px);
  padding: 1.25rem;
  color: var(--sd-fg, #1f2328);
  background: var(--sd-bg, #fff);
  font: var(--sd-font, inherit);
}
dialog::backdrop { background: var(--sd-backdrop, rgb(0 0 0 / .4)); }
dialog p { margin: 0 0 1rem; }
dialog .actions { justify-content: flex-end; }
/* Narrow: the button goes under the device's details. */
@container (max-width: 30rem) {
  .item { grid-template-columns: auto minmax(0, 1fr); align-items: start; }
  .item > button { grid-column: 2; justify-self: start; }
  .meta > span { display: block; }
  .meta span + span::before { content: none; }
}
.visually-hidden {
  position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; border: 0;
  overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap;
}
`

/** One stylesheet for every instance: constructable, so no `<style>` (which a strict style-src refuses). */
let sheet = /** @type {CSSStyleSheet | null} */ (null)
function styleSheet() {
  if (!sheet) {
    sheet = new CSSStyleSheet()
    sheet.replaceSync(STYLE)
  }
  return sheet
}

/**
 * An element with attributes and children (strings become text nodes, null and false are skipped).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attributes]
 * @param {Array<Node | string | null | false | undefined>} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue
    element.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    element.append(child)
  }
  return element
}

/** @param {string} type */
function icon(type) {
  const ns = 'http://www.w3.org/2000/svg'
  const svg = document.createElementNS(ns, 'svg')
  for (const [name, value] of Object.entries({
    class: 'icon',
    part: 'icon',
    viewBox: '0 0 24 24',
    fill: 'none',
    stroke: 'currentColor',
    'stroke-width': '1.75',
    'stroke-linecap': 'round',
    'stroke-linejoin': 'round',
    'aria-hidden': 'true',
    focusable: 'false',
    'data-type': ICONS[type] ? type : 'unknown',
  })) {
    svg.setAttribute(name, value)
  }
  for (const [tag, attributes] of ICONS[type] ?? ICONS.unknown ?? []) {
    const shape = document.createElementNS(ns, tag)
    for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, value)
    svg.append(shape)
  }
  return svg
}

const UNITS = /** @type {const} */ ([
  ['year', 31_536_000],
  ['month', 2_592_000],
  ['week', 604_800],
  ['day', 86_400],
  ['hour', 3_600],
  ['minute', 60],
])

/**
 * "5 minutes ago", "yesterday", "now", in the given formatter's language. Times the server gives in the
 * past stay in the past when this clock is a little behind.
 * @param {Intl.RelativeTimeFormat} format
 * @param {number} at
 * @param {number} now
 */
function relativeTime(format, at, now) {
  const seconds = Math.min(0, (at - now) / 1000)
  for (const [unit, size] of UNITS) {
    if (-seconds >= size) return format.format(Math.round(seconds / size), unit)
  }
  return format.format(0, 'second')
}

export class SessionDevicesElement extends HTMLElement {
  static observedAttributes = ['api', 'lang', 'heading-level', 'activity-limit']

  /** @type {string | null} */
  #token = null
  /** @type {Strings} */
  #strings = {}
  /** @type {Strings} */
  #childStrings = {}
  /** @type {Phase} */
  #phase = 'loading'
  /** @type {MySession[]} */
  #sessions = []
  /** @type {MyEvent[] | null} null: could not be loaded */
  #events = []
  /** @type {ApiError | null} */
  #error = null
  /** @type {string} */
  #inactiveReason = 'unknown'
  #busy = false
  #connected = false
  #generation = 0
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #clock
  /** What gets the focus after the next render, by `data-focus` key. */
  #focusAfterRender = /** @type {string | null} */ (null)

  #root
  #heading
  #status
  #body
  #dialog
  #dialogTitle
  #dialogText
  #cancelButton
  #confirmButton
  /** @type {HTMLElement | null} */
  #opener = null

  constructor() {
    super()
    this.#root = this.attachShadow({ mode: 'open' })
    this.#root.adoptedStyleSheets = [styleSheet()]
    this.#heading = this.#headingElement('title')
    // Polite: the result of an action is read once the reader is done with what it was saying.
    this.#status = h('p', { class: 'status', part: 'status', role: 'status', 'aria-live': 'polite' })
    this.#body = h('div', { class: 'body', part: 'body' })
    this.#dialogTitle = h('h2', { id: 'confirm-title', part: 'dialog-title' })
    this.#dialogText = h('p', { id: 'confirm-text', part: 'dialog-text' })
    this.#cancelButton = h('button', { type: 'button', part: 'button cancel', 'data-focus': 'cancel' })
    this.#confirmButton = h('button', { type: 'button', class: 'danger', part: 'button confirm danger' })
    this.#dialog = h(
      'dialog',
      { part: 'dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' },
      [
        this.#dialogTitle,
        this.#dialogText,
        h('div', { class: 'actions' }, [this.#cancelButton, this.#confirmButton]),
      ],
    )
    this.#cancelButton.addEventListener('click', () => this.#dialog.close('cancel'))
    this.#confirmButton.addEventListener('click', () => this.#dialog.close('confirm'))
    // Escape (the dialog's cancel) and both buttons end here: the focus goes back where it came from.
    this.#dialog.addEventListener('close', () => {
      const confirmed = this.#dialog.returnValue === 'confirm'
      this.#dialog.returnValue = ''
      if (confirmed) void this.#signOutOthers()
      else this.#opener?.focus()
    })
    const container = h('section', { class: 'container', part: 'container', 'aria-labelledby': 'title' }, [
      this.#heading,
      this.#status,
      this.#body,
      this.#dialog,
    ])
    this.#root.append(container)
  }

  connectedCallback() {
    this.#connected = true
    // The strings child is parsed after the element itself when the script runs first: wait for it.
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', () => this.#start(), { once: true })
    } else {
      this.#start()
    }
    // Keeps "5 minutes ago" true while the page stays open.
    this.#clock = setInterval(() => this.#updateTimes(), 60_000)
  }

  disconnectedCallback() {
    this.#connected = false
    clearInterval(this.#clock)
    this.#generation++
  }

  /**
   * @param {string} name
   * @param {string | null} previous
   * @param {string | null} value
   */
  attributeChangedCallback(name, previous, value) {
    if (previous === value || !this.#connected) return
    if (name === 'api' || name === 'activity-limit') void this.refresh()
    else this.#render()
  }

  /** The self-service API's base URL (`api` attribute; default: /v1/me of the origin that served this script). */
  get api() {
    const given = this.getAttribute('api')
    return given ? new URL(given, document.baseURI).href : new URL('/v1/me', import.meta.url).href
  }

  set api(value) {
    this.setAttribute('api', value)
  }

  /**
   * A session token or access JWT to send as `Authorization: Bearer`; null (the default) sends the
   * browser's cookies instead. Never reflected to an attribute: it would be readable in the DOM.
   */
  get token() {
    return this.#token
  }

  set token(value) {
    this.#token = value || null
    if (this.#connected) void this.refresh()
  }

  /** Replacements for any of the English texts (DEFAULT_STRINGS), by key. */
  get strings() {
    return { ...this.#strings }
  }

  set strings(value) {
    this.#strings = { ...(value ?? {}) }
    this.#render()
  }

  /** Reloads the devices and the recent activity. */
  async refresh() {
    const generation = ++this.#generation
    if (this.#phase !== 'ready') {
      this.#phase = 'loading'
      this.#render()
    }
    const limit = this.#activityLimit()
    const [sessions, events] = await Promise.all([
      this.#allSessions(),
      limit > 0
        ? this.#call('GET', `events?limit=${limit}`)
        : Promise.resolve({ ok: true, body: { events: [] } }),
    ])
    if (generation !== this.#generation) return
    if (!sessions.ok) {
      this.#fail(sessions.error)
      return
    }
    this.#sessions = sessions.body
    this.#events = events.ok ? /** @type {{ events: MyEvent[] }} */ (events.body).events : null
    this.#phase = 'ready'
    this.#error = null
    this.#render()
    this.#emit('loaded', { sessions: this.#sessions, events: this.#events ?? [] })
  }

  // --- data -----------------------------------------------------------------------------------------

  #start() {
    if (!this.#connected) return
    this.#childStrings = this.#readStringsChild()
    void this.refresh()
  }

  /** @returns {Strings} */
  #readStringsChild() {
    const script = this.querySelector(':scope > script[type="application/json"][data-strings]')
    if (!script?.textContent) return {}
    try {
      const parsed = JSON.parse(script.textContent)
      return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {}
    } catch {
      console.warn('<session-devices>: the data-strings child is not JSON; using the default texts')
      return {}
    }
  }

  #activityLimit() {
    const given = Number(this.getAttribute('activity-limit') ?? DEFAULT_ACTIVITY_LIMIT)
    return Number.isInteger(given) && given >= 0 ? Math.min(given, 100) : DEFAULT_ACTIVITY_LIMIT
  }

  /**
   * One call to the self-service API. Cookies go along unless a token is set; a POST is always JSON.
   * @param {'GET' | 'POST'} method
   * @param {string} path relative to the API base
   * @returns {Promise<{ ok: true, body: any } | { ok: false, error: ApiError }>}
   */
  async #call(method, path) {
    const base = this.api.replace(/\/+$/, '')
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' }
    if (this.#token) headers.authorization = `Bearer ${this.#token}`
    if (method === 'POST') headers['content-type'] = 'application/json'
    let response
    try {
      response = await fetch(`${base}/${path}`, {
        method,
        headers,
        body: method === 'POST' ? '{}' : undefined,
        credentials: this.#token ? 'omit' : 'include',
        // Live state: never from the HTTP cache, whatever a proxy in between says.
        cache: 'no-store',
      })
    } catch {
      return { ok: false, error: { status: 0, code: 'NETWORK_ERROR', message: this.#text('networkError') } }
    }
    let body = null
    try {
      body = await response.json()
    } catch {}
    if (response.ok && body) return { ok: true, body }
    const error = body?.error ?? {}
    return {
      ok: false,
      error: {
        status: response.status,
        code: typeof error.code === 'string' ? error.code : 'UNEXPECTED_RESPONSE',
        message: typeof error.message === 'string' ? error.message : `HTTP ${response.status}`,
        reason: typeof error.reason === 'string' ? error.reason : undefined,
      },
    }
  }

  /** @returns {Promise<{ ok: true, body: MySession[] } | { ok: false, error: ApiError }>} */
  async #allSessions() {
    /** @type {MySession[]} */
    const sessions = []
    let cursor = null
    for (let page = 0; page < MAX_SESSION_PAGES; page++) {
      const query = cursor ? `limit=100&cursor=${encodeURIComponent(cursor)}` : 'limit=100'
      const answer = await this.#call('GET', `sessions?${query}`)
      if (!answer.ok) return answer
      sessions.push(...(answer.body.sessions ?? []))
      cursor = answer.body.next_cursor
      if (!cursor) break
    }
    return { ok: true, body: sessions }
  }

  /** @param {ApiError} error */
  #fail(error) {
    if (error.status === 401) {
      this.#phase = 'inactive'
      this.#inactiveReason = INACTIVE_REASONS.includes(error.reason ?? '')
        ? /** @type {string} */ (error.reason)
        : 'unknown'
      this.#render()
      this.#emit('inactive', { reason: this.#inactiveReason })
      return
    }
    this.#phase = 'error'
    this.#error = error
    this.#render()
    this.#emit('error', { ...error })
  }

  /** @param {MySession} session */
  async #signOut(session) {
    if (this.#busy) return
    this.#busy = true
    this.#markBusy()
    this.#announce(this.#text('working'))
    const answer = await this.#call('POST', `sessions/${encodeURIComponent(session.id)}/revoke`)
    this.#busy = false
    let message
    if (answer.ok) {
      this.#emit('signed-out', { session_id: session.id, current: session.current })
      if (session.current) {
        this.#phase = 'inactive'
        this.#inactiveReason = 'signed_out'
        this.#focusAfterRender = 'title'
        this.#render()
        this.#announce(this.#text('inactive.signed_out'))
        return
      }
      message = this.#text('signedOutDevice', { device: this.#deviceName(session.device) })
    } else if (answer.error.code === 'SESSION_NOT_FOUND') {
      message = this.#text('alreadySignedOut')
    } else {
      this.#actionFailed(answer.error)
      this.#markBusy()
      return
    }
    // The focus was on the button of a row that is now gone: the next row's, else the heading.
    const others = this.#ordered()
    const at = others.findIndex((s) => s.id === session.id)
    const next = others[at + 1] ?? others[at - 1]
    this.#focusAfterRender = next && next.id !== session.id ? `sign-out:${next.id}` : 'title'
    // Announced once the list shows it, with the focus already in its new place.
    await this.refresh()
    this.#announce(message)
  }

  async #signOutOthers() {
    if (this.#busy) return
    this.#busy = true
    this.#markBusy()
    this.#announce(this.#text('working'))
    const answer = await this.#call('POST', 'sessions/revoke-others')
    this.#busy = false
    if (!answer.ok) {
      this.#actionFailed(answer.error)
      this.#markBusy()
      this.#opener?.focus()
      return
    }
    const count = Number(answer.body.revoked) || 0
    this.#emit('signed-out-others', { revoked: count })
    this.#focusAfterRender = 'title'
    await this.refresh()
    this.#announce(this.#text('signedOutOthers', { count }))
  }

  /** @param {ApiError} error */
  #actionFailed(error) {
    if (error.status === 401) return this.#fail(error)
    const message =
      error.status === 429 ? this.#text('rateLimited') : this.#text('actionError', { message: error.message })
    this.#announce(message)
    this.#emit('error', { ...error })
  }

  // --- view -----------------------------------------------------------------------------------------

  /**
   * A text by key: the `strings` property, else the data-strings child, else English; `{name}` filled
   * in, and the plural form of `{count}` picked in the element's language.
   * @param {string} key
   * @param {Record<string, string | number>} [values]
   */
  #text(key, values = {}) {
    const defaults = /** @type {Strings} */ (DEFAULT_STRINGS)
    const given = this.#strings[key] ?? this.#childStrings[key] ?? defaults[key] ?? key
    let template = given
    if (typeof given === 'object' && given !== null) {
      const rule = new Intl.PluralRules(this.#lang()).select(Number(values.count ?? 0))
      template = given[rule] ?? given.other ?? Object.values(given)[0] ?? key
    }
    return String(template).replace(/\{(\w+)\}/g, (whole, name) =>
      name in values ? String(values[name]) : whole,
    )
  }

  /**
   * A text whose `{time}` is a <time> element (its full date in the tooltip), as a list of nodes.
   * @param {string} key
   * @param {string} iso
   */
  #textWithTime(key, iso) {
    const [before = '', after = ''] = this.#text(key).split('{time}')
    const time = h('time', { datetime: iso, title: this.#dateTime(iso) })
    time.textContent = relativeTime(this.#relativeFormat(), Date.parse(iso), Date.now())
    return h('span', {}, [before, time, after])
  }

  #lang() {
    const lang =
      this.closest('[lang]')?.getAttribute('lang') || document.documentElement.lang || navigator.language
    try {
      return Intl.getCanonicalLocales(lang)[0] ?? 'en'
    } catch {
      return 'en'
    }
  }

  #relativeFormat() {
    return new Intl.RelativeTimeFormat(this.#lang(), { numeric: 'auto' })
  }

  /** @param {string} iso */
  #dateTime(iso) {
    return new Intl.DateTimeFormat(this.#lang(), { dateStyle: 'medium', timeStyle: 'short' }).format(
      new Date(iso),
    )
  }

  #updateTimes() {
    const format = this.#relativeFormat()
    const now = Date.now()
    for (const time of this.#root.querySelectorAll('time[datetime]')) {
      time.textContent = relativeTime(format, Date.parse(time.getAttribute('datetime') ?? ''), now)
    }
  }

  /** @param {Device | null} device */
  #deviceName(device) {
    const major = (/** @type {string | null | undefined} */ version) => version?.split('.')[0]
    const browser = device?.browser
      ? [device.browser, major(device.browser_version)].filter(Boolean).join(' ')
      : this.#text('unknownBrowser')
    const os = device?.os ? [device.os, device.os_version].filter(Boolean).join(' ') : this.#text('unknownOs')
    return this.#text('deviceName', { browser, os })
  }

  /** This device first, then the others, most recently active first. */
  #ordered() {
    return [...this.#sessions].sort(
      (a, b) =>
        Number(b.current) - Number(a.current) || Date.parse(b.last_seen_at) - Date.parse(a.last_seen_at),
    )
  }

  /** @param {string} key */
  #headingElement(key) {
    const level = Math.min(6, Math.max(1, Number(this.getAttribute('heading-level')) || 2))
    return h(/** @type {'h2'} */ (`h${level}`), { id: key, part: key, tabindex: '-1', 'data-focus': key })
  }

  #render() {
    if (!this.#connected) return
    const level = Math.min(6, Math.max(1, Number(this.getAttribute('heading-level')) || 2))
    if (this.#heading.tagName !== `H${level}`) {
      const heading = this.#headingElement('title')
      this.#heading.replaceWith(heading)
      this.#heading = heading
    }
    this.#heading.textContent =
      this.#phase === 'inactive' ? this.#text('signedOutTitle') : this.#text('title')
    this.#body.replaceChildren(...this.#content())
    this.#body.setAttribute('aria-busy', String(this.#phase === 'loading'))
    if (this.#focusAfterRender) {
      const key = this.#focusAfterRender
      this.#focusAfterRender = null
      const target = /** @type {HTMLElement} */ (
        this.#root.querySelector(`[data-focus="${CSS.escape(key)}"]`) ?? this.#heading
      )
      target.focus()
    }
  }

  /** @returns {Node[]} */
  #content() {
    switch (this.#phase) {
      case 'loading':
        return [h('p', { class: 'message', part: 'message loading' }, [this.#text('loading')])]
      case 'error': {
        const retry = h('button', { type: 'button', part: 'button retry', 'data-focus': 'retry' }, [
          this.#text('retry'),
        ])
        retry.addEventListener('click', () => {
          this.#focusAfterRender = 'title'
          void this.refresh()
        })
        return [
          h('p', { class: 'message error', part: 'message error', role: 'alert' }, [
            this.#text('loadError'),
            this.#error?.status === 429 ? ` ${this.#text('rateLimited')}` : '',
          ]),
          h('div', { class: 'actions' }, [retry]),
        ]
      }
      case 'inactive':
        // Signed out here: the live region says so already (once is enough for a screen reader).
        if (this.#inactiveReason === 'signed_out') return []
        return [
          h('p', { class: 'message', part: 'message signed-out' }, [
            this.#text(`inactive.${this.#inactiveReason}`),
          ]),
        ]
      default:
        return this.#devices()
    }
  }

  #devices() {
    const sessions = this.#ordered()
    const list = h(
      'ul',
      { class: 'list', part: 'list', role: 'list', 'aria-labelledby': 'title' },
      sessions.map((session) => this.#item(session)),
    )
    const others = sessions.filter((s) => !s.current).length
    /** @type {Node[]} */
    const nodes = [list]
    if (others > 0) {
      const button = h(
        'button',
        {
          type: 'button',
          class: 'danger',
          part: 'button sign-out-others danger',
          'data-focus': 'sign-out-others',
        },
        [this.#text('signOutOthers')],
      )
      button.addEventListener('click', () => this.#confirmSignOutOthers(button, others))
      nodes.push(h('div', { class: 'actions' }, [button]))
    } else {
      nodes.push(h('p', { class: 'message', part: 'message empty' }, [this.#text('onlyThisDevice')]))
    }
    if (this.#activityLimit() > 0) nodes.push(...this.#activity())
    return nodes
  }

  /** @param {MySession} session */
  #item(session) {
    const name = this.#deviceName(session.device)
    const type = session.device?.type ?? 'unknown'
    const button = h(
      'button',
      {
        type: 'button',
        part: 'button sign-out',
        'aria-label': session.current
          ? this.#text('signOutThisDeviceLabel')
          : this.#text('signOutLabel', { device: name }),
        'aria-disabled': this.#busy ? 'true' : null,
        'data-focus': `sign-out:${session.id}`,
      },
      [this.#text('signOut')],
    )
    button.addEventListener('click', () => void this.#signOut(session))
    return h(
      'li',
      {
        class: session.current ? 'item current' : 'item',
        part: session.current ? 'item current-item' : 'item',
        'aria-current': session.current ? 'true' : null,
        'data-session-id': session.id,
      },
      [
        icon(type),
        h('div', { class: 'details' }, [
          h('p', { class: 'device', part: 'device' }, [
            h('span', { class: 'visually-hidden' }, [`${this.#text(`type.${type}`)}: `]),
            name,
            session.current ? h('span', { class: 'badge', part: 'badge' }, [this.#text('thisDevice')]) : null,
          ]),
          h('p', { class: 'meta', part: 'meta' }, [
            session.ip ? h('span', {}, [this.#text('ip', { ip: session.ip })]) : null,
            this.#textWithTime('signedIn', session.created_at),
            this.#textWithTime('lastActive', session.last_seen_at),
          ]),
        ]),
        button,
      ],
    )
  }

  #activity() {
    const level = Math.min(6, Math.max(1, Number(this.getAttribute('heading-level')) || 2) + 1)
    const heading = h(
      /** @type {'h3'} */ (`h${level}`),
      { id: 'activity-title', class: 'sub', part: 'activity-title' },
      [this.#text('activityTitle')],
    )
    if (this.#events === null) {
      return [
        heading,
        h('p', { class: 'message', part: 'message activity-error' }, [this.#text('activityError')]),
      ]
    }
    if (this.#events.length === 0) {
      return [
        heading,
        h('p', { class: 'message', part: 'message activity-empty' }, [this.#text('activityEmpty')]),
      ]
    }
    // A sign-out's event names no device: the session's own (listed, or from its sign-in event) stands in.
    const known = (/** @type {Device | null | undefined} */ device) =>
      Boolean(device && (device.browser || device.os))
    /** @type {Map<string, Device>} */
    const devices = new Map()
    for (const session of this.#sessions) if (known(session.device)) devices.set(session.id, session.device)
    for (const event of this.#events) {
      if (event.device && known(event.device) && !devices.has(event.session_id)) {
        devices.set(event.session_id, event.device)
      }
    }
    const items = this.#events.map((event) => {
      const device = known(event.device) ? event.device : devices.get(event.session_id)
      const key = `event.${event.type}`
      const described =
        Object.hasOwn(DEFAULT_STRINGS, key) || key in this.#strings || key in this.#childStrings
      const what = this.#text(described ? key : 'event.other')
      return h('li', { part: 'activity-item', 'data-type': event.type }, [
        h('span', { class: 'what' }, [event.current ? this.#text('activityOnThisDevice', { what }) : what]),
        h('span', { class: 'when' }, [
          ' · ',
          device ? `${this.#deviceName(device)} · ` : '',
          event.ip ? `${event.ip} · ` : '',
          (() => {
            const time = h('time', { datetime: event.created_at, title: this.#dateTime(event.created_at) })
            time.textContent = relativeTime(this.#relativeFormat(), Date.parse(event.created_at), Date.now())
            return time
          })(),
        ]),
      ])
    })
    return [
      heading,
      h(
        'ol',
        { class: 'activity', part: 'activity', role: 'list', 'aria-labelledby': 'activity-title' },
        items,
      ),
    ]
  }

  /**
   * @param {HTMLElement} opener
   * @param {number} count
   */
  #confirmSignOutOthers(opener, count) {
    if (this.#busy) return
    this.#opener = opener
    this.#dialogTitle.textContent = this.#text('confirmTitle')
    this.#dialogText.textContent = this.#text('confirmText', { count })
    this.#cancelButton.textContent = this.#text('cancel')
    this.#confirmButton.textContent = this.#text('confirm')
    this.#dialog.showModal()
    // The safe choice has the focus: Enter on a dialog that opened unexpectedly signs nobody out.
    this.#cancelButton.focus()
  }

  #markBusy() {
    for (const button of this.#body.querySelectorAll('button')) {
      if (this.#busy) button.setAttribute('aria-disabled', 'true')
      else button.removeAttribute('aria-disabled')
    }
  }

  /** @param {string} message */
  #announce(message) {
    // Emptied first, so that the same message twice is announced twice.
    this.#status.textContent = ''
    requestAnimationFrame(() => {
      this.#status.textContent = message
    })
  }

  /**
   * @param {string} name
   * @param {Record<string, unknown>} detail
   */
  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(`session-devices:${name}`, { detail, bubbles: true, composed: true }))
  }
}

if (!customElements.get('session-devices')) customElements.define('session-devices', SessionDevicesElement)
