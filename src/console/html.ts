import { Type } from '@sinclair/typebox'
import { html } from 'ghtml'
import type { Operator } from './operator.ts'

// The console's page shell and the small pieces every page is built from. Pages are plain HTML forms
// rendered on the server: no script runs in the operator's browser, so the Content-Security-Policy
// can forbid every script.

/** What every page knows of its request: who is signed in, the form token, where it is. */
export interface View {
  operator: Operator | null
  csrf: string
  path: string
}

const NAV: Array<{ href: string; label: string; platform?: boolean }> = [
  { href: '/admin', label: 'Overview' },
  { href: '/admin/users', label: 'Users' },
  { href: '/admin/events', label: 'Events' },
  { href: '/admin/sign-out-everyone', label: 'Sign out everyone' },
  { href: '/admin/webhooks', label: 'Webhooks' },
  { href: '/admin/api-keys', label: 'API keys' },
  { href: '/admin/signing-keys', label: 'Signing keys' },
  { href: '/admin/tenants', label: 'Tenants', platform: true },
]

function navigation(view: View): string {
  const operator = view.operator
  if (!operator) return ''
  const current = (href: string) =>
    href === '/admin' ? view.path === '/admin' : view.path === href || view.path.startsWith(`${href}/`)
  const links = NAV.filter((item) => !item.platform || operator.platform).map(
    (item) =>
      html`<li><a href="${item.href}"!${current(item.href) ? ' aria-current="page"' : ''}>${item.label}</a></li>`,
  )
  return html`<nav aria-label="Console"><ul>!${links.join('')}</ul></nav>
<div class="who"><span>Signed in as <strong>${operator.name}</strong>
  (key ${operator.keyId}, tenant ${operator.tenant}${operator.platform ? ', platform' : ''})</span>
  <form method="post" action="/admin/sign-out">!${csrfField(view)}<button type="submit">Sign out</button></form></div>`
}

/** A whole page: the shell, the navigation when someone is signed in, and `body` (already HTML). */
export function page(view: View, title: string, body: string): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${title} · session-authority console</title>
<link rel="stylesheet" href="/admin/console.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><span class="brand">session-authority</span> !${navigation(view)}</header>
<main id="main" tabindex="-1">
<h1>${title}</h1>
!${body}
</main>
</body>
</html>`
}

/** The hidden field every form that changes something carries (CSRF). */
export function csrfField(view: View): string {
  return html`<input type="hidden" name="_csrf" value="${view.csrf}">`
}

/**
 * A form of one button that posts to `action` (an action on one thing). `name` is the button's
 * accessible name where the label alone does not say which thing (a row's "Revoke" among others):
 * it starts with the label, so what is seen is what a screen reader or voice control hears.
 */
export function actionForm(
  view: View,
  action: string,
  label: string,
  { danger = false, name }: { danger?: boolean; name?: string } = {},
): string {
  return html`<form method="post" action="${action}" class="inline">!${csrfField(view)}<button type="submit"!${danger ? ' class="danger"' : ''}!${name ? html` aria-label="${name}"` : ''}>${label}</button></form>`
}

/** A message at the top of a page: what an action did (status) or why it failed (alert). */
export function notice(text: string | null | undefined, kind: 'status' | 'alert' = 'status'): string {
  if (!text) return ''
  return html`<p class="notice ${kind}" role="${kind}">${text}</p>`
}

/** A table with a caption and column headers; `rows` are already HTML rows (<tr>…</tr>). */
export function table(caption: string, headers: string[], rows: string[], empty: string): string {
  if (rows.length === 0) return html`<p class="empty">${empty}</p>`
  const head = headers.map((h) => html`<th scope="col">${h}</th>`).join('')
  return html`<table><caption>${caption}</caption><thead><tr>!${head}</tr></thead><tbody>!${rows.join('')}</tbody></table>`
}

/** An instant as the operator reads it: UTC, to the second. */
export function when(value: Date | string | null | undefined): string {
  if (!value) return '—'
  const date = typeof value === 'string' ? new Date(value) : value
  return html`<time datetime="${date.toISOString()}">${date.toISOString().replace('T', ' ').slice(0, 19)} UTC</time>`
}

/** A query string of the non-empty values given. */
export function query(values: Record<string, string | number | null | undefined>): string {
  const params = new URLSearchParams()
  for (const [name, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== '') params.set(name, String(value))
  }
  const text = params.toString()
  return text ? `?${text}` : ''
}

/** The body schema of a console form: its fields, and the CSRF token every form carries. */
export const Form = (properties: Parameters<typeof Type.Object>[0]) =>
  Type.Object({ _csrf: Type.Optional(Type.String()), ...properties }, { additionalProperties: false })
