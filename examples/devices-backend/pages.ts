import type { Session } from '../../packages/client/src/index.ts'

/** Markup that is already safe: made only by the `html` tag below. */
class Html {
  constructor(readonly text: string) {}
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
}
const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c)

function render(value: unknown): string {
  if (value instanceof Html) return value.text
  if (Array.isArray(value)) return value.map(render).join('')
  if (value === null || value === undefined || value === false) return ''
  return escapeHtml(String(value))
}

/** A template tag that escapes every value put into it, so no user agent or user id can become markup. */
function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  return new Html(strings.reduce((out, text, i) => out + render(values[i - 1]) + text))
}

/** Why the login page is shown: fixed messages only (the query string picks one, it never supplies text). */
const WHY: Record<string, string> = {
  revoked: 'You were signed out: this session was ended.',
  expired: 'Your session expired. Please sign in again.',
  suspended: 'Your session was suspended: its token was used from another browser or network.',
  unknown: 'The service does not know this session. Please sign in again.',
  logged_out: 'You signed out.',
}

const NOTICES: Record<string, string> = {
  'signed-out': 'That device was signed out.',
  'others-signed-out': 'Every other device was signed out.',
  'not-yours': 'No such session among yours: nothing was signed out.',
}

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #ddd}
form{display:inline}.note{background:#fff6d5;padding:.5rem}.current{font-weight:bold}`

function page(title: string, body: Html): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${title}</title><style>${new Html(STYLE)}</style></head>
<body>${body}</body></html>`.text
}

/** GET /: the login form. */
export function loginPage(options: { reason?: string | undefined; error?: string | undefined } = {}): string {
  const why = options.reason ? WHY[options.reason] : undefined
  return page(
    'Sign in',
    html`<h1>Sign in</h1>
${why ? html`<p class="note" id="reason" data-reason="${options.reason}">${why}</p>` : ''}
${options.error ? html`<p class="note" id="error">${options.error}</p>` : ''}
<p>This is a demo: there is no password. Any user name signs you in as that user.</p>
<form method="post" action="/login">
<label>User name <input name="user_id" required maxlength="256" autofocus></label>
<button>Sign in</button>
</form>`,
  )
}

const time = (iso: string) => html`<time datetime="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time>`

function deviceName(device: Session['device']): string {
  const major = (version: string | null) => version?.split('.')[0]
  const browser = [device.browser ?? 'Unknown browser', major(device.browser_version)].filter(Boolean)
  const os = [device.os ?? 'an unknown system', device.os_version].filter(Boolean)
  return `${browser.join(' ')} on ${os.join(' ')} (${device.type})`
}

function deviceRow(session: Session): Html {
  const action = session.current
    ? html`<span class="current">This device</span>`
    : html`<form method="post" action="/devices/revoke">
<input type="hidden" name="session_id" value="${session.id}"><button>Sign out</button></form>`
  return html`<tr data-session-id="${session.id}"${session.current ? html` class="current"` : ''}>
<td>${deviceName(session.device)}<br><small>${session.user_agent}</small></td>
<td>${session.ip ?? 'unknown'}</td><td>${time(session.created_at)}</td><td>${time(session.last_seen_at)}</td>
<td>${action}</td></tr>
`
}

/** GET /devices: every live session of the user, this one marked, the others each with a Sign out button. */
export function devicesPage(userId: string, sessions: Session[], notice?: string): string {
  const text = notice ? NOTICES[notice] : undefined
  return page(
    'Your devices',
    html`<h1>Your devices</h1>
<div>Signed in as <strong id="user">${userId}</strong>.
<form method="post" action="/logout"><button>Sign out</button></form></div>
${text ? html`<p class="note" id="notice">${text}</p>` : ''}
<table><thead><tr><th>Device</th><th>IP address</th><th>Signed in</th><th>Last seen</th><th></th></tr></thead>
<tbody>
${sessions.map(deviceRow)}</tbody></table>
<div><form method="post" action="/devices/revoke-others"><button>Sign out all other devices</button></form></div>
<p><a href="/me">/me</a> shows what the backend knows about this session (JSON).</p>`,
  )
}

/** A refusal as a page (a cross-site form post). */
export function refusedPage(message: string): string {
  return page('Refused', html`<h1>Refused</h1><p>${message}</p><p><a href="/">Back</a></p>`)
}
