import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { html } from 'ghtml'
import { type ApiKeyStore, SCOPES, type Scope } from '../api-keys/api-keys.ts'
import type { Clock } from '../clock.ts'
import { Errors } from '../errors.ts'
import type { SigningKeys } from '../keys/signing-keys.ts'
import type { TenantStore } from '../tenants/store.ts'
import type { WebhookStore } from '../webhooks/store.ts'
import { actionForm, csrfField, Form, notice, page, query, table, type View, when } from './html.ts'
import type { Operator } from './operator.ts'

// Operating the service: webhooks and their deliveries, API keys, signing keys, tenants. Each action
// is the store call the API makes, with the operator's tenancy.

const NOTICES: Record<string, string> = {
  retried: 'The delivery is queued again and will be sent shortly.',
  'key-revoked': 'The API key is revoked.',
  rotated: 'A new signing key is current; the old one stays published until its tokens expire.',
}

const operatorOf = (view: View) => view.operator as Operator
const NoticeQuery = Type.Object(
  { notice: Type.Optional(Type.String({ maxLength: 32 })) },
  { additionalProperties: false },
)
const noticeOf = (request: FastifyRequest) =>
  NOTICES[(request.query as { notice?: string }).notice ?? ''] ?? null

export function operationsRoutes(
  app: FastifyInstance,
  {
    webhooks,
    apiKeys,
    signingKeys,
    tenants,
    clock,
    viewOf,
  }: {
    webhooks: WebhookStore
    apiKeys: ApiKeyStore
    signingKeys: SigningKeys
    tenants: TenantStore
    clock: Clock
    viewOf: (request: FastifyRequest) => View
  },
) {
  const send = (reply: import('fastify').FastifyReply, body: string) => reply.type('text/html').send(body)

  app.get('/admin/webhooks', { schema: { hide: true } }, async (request, reply) => {
    const view = viewOf(request)
    const subscriptions = await webhooks.list(operatorOf(view).tenancy)
    const rows = subscriptions.map(
      (w) =>
        html`<tr><td><a href="/admin/webhooks/${w.id}">${w.id}</a></td><td>${w.tenant_id}</td><td>${w.url}</td><td>${w.event_types.length ? w.event_types.join(', ') : 'every event'}</td><td>${w.enabled ? 'yes' : 'no'}</td><td>!${when(w.created_at)}</td></tr>`,
    )
    const body = html`!${table('Webhook subscriptions', ['Id', 'Tenant', 'URL', 'Events', 'Enabled', 'Created'], rows, 'No webhook subscriptions. Create them with POST /v1/webhooks.')}`
    return send(reply, page(view, 'Webhooks', body))
  })

  const DeliveryQuery = Type.Object(
    {
      notice: Type.Optional(Type.String({ maxLength: 32 })),
      status: Type.Optional(
        Type.Union([
          Type.Literal(''),
          Type.Literal('pending'),
          Type.Literal('delivered'),
          Type.Literal('dead'),
        ]),
      ),
      cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,18}$' })),
    },
    { additionalProperties: false },
  )

  app.get(
    '/admin/webhooks/:id',
    {
      schema: {
        hide: true,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        querystring: DeliveryQuery,
      },
    },
    async (request, reply) => {
      const view = viewOf(request)
      const { id } = request.params as { id: string }
      const { status = '', cursor } = request.query as {
        status?: '' | 'pending' | 'delivered' | 'dead'
        cursor?: string
      }
      const who = operatorOf(view).tenancy
      const webhook = await webhooks.get(who, id)
      const limit = 50
      const deliveries = await webhooks.listDeliveries(who, id, {
        status: status || null,
        before: cursor ?? null,
        limit,
      })
      const rows = deliveries.map(
        (d) =>
          html`<tr><td>${d.id}</td><td>${d.event_type}</td><td>${d.status}</td><td>${d.attempts}</td><td>${d.last_error ?? d.last_status ?? '—'}</td><td>!${when(d.created_at)}</td><td>!${
            d.status === 'dead'
              ? actionForm(view, `/admin/webhooks/${webhook.id}/deliveries/${d.id}/retry`, 'Retry', {
                  name: `Retry delivery ${d.id}`,
                })
              : d.status === 'pending'
                ? html`next !${when(d.next_attempt_at)}`
                : ''
          }</td></tr>`,
      )
      const statuses = ['', 'pending', 'delivered', 'dead'].map(
        (s) => html`<option value="${s}"!${s === status ? ' selected' : ''}>${s || 'any status'}</option>`,
      )
      const last = deliveries[deliveries.length - 1]
      const next =
        deliveries.length === limit && last
          ? html`<p><a rel="next" href="/admin/webhooks/${webhook.id}${query({ status, cursor: last.id })}">Older deliveries</a></p>`
          : ''
      const body = html`!${notice(noticeOf(request))}
<dl class="facts"><dt>URL</dt><dd>${webhook.url}</dd><dt>Events</dt><dd>${webhook.event_types.length ? webhook.event_types.join(', ') : 'every event'}</dd><dt>Enabled</dt><dd>${webhook.enabled ? 'yes' : 'no'}</dd></dl>
<form method="get" action="/admin/webhooks/${webhook.id}" class="filters"><label for="status">Status</label><select id="status" name="status">!${statuses.join('')}</select><button type="submit">Filter</button></form>
!${table('Deliveries, newest first', ['Id', 'Event', 'Status', 'Attempts', 'Last answer', 'Created', 'Action'], rows, 'No deliveries.')}
!${next}`
      return send(reply, page(view, `Webhook ${webhook.id}`, body))
    },
  )

  app.post(
    '/admin/webhooks/:id/deliveries/:deliveryId/retry',
    {
      schema: {
        hide: true,
        params: Type.Object({
          id: Type.String({ maxLength: 64 }),
          deliveryId: Type.String({ pattern: '^[0-9]{1,18}$' }),
        }),
        body: Form({}),
      },
    },
    async (request, reply) => {
      const { id, deliveryId } = request.params as { id: string; deliveryId: string }
      await webhooks.retry(operatorOf(viewOf(request)).tenancy, deliveryId, new Date(clock.now()))
      return reply.redirect(`/admin/webhooks/${encodeURIComponent(id)}${query({ notice: 'retried' })}`, 303)
    },
  )

  function keysPage(
    view: View,
    keys: Awaited<ReturnType<ApiKeyStore['list']>>,
    message: string | null,
    created?: { key: string; id: string },
  ) {
    const operator = operatorOf(view)
    const rows = keys.map(
      (k) =>
        html`<tr><td>${k.id}</td><td>${k.name}</td><td>${k.tenant_id}</td><td>${k.scopes.join(', ')}</td><td>!${when(k.created_at)}</td><td>!${
          k.revoked_at
            ? html`revoked !${when(k.revoked_at)}`
            : k.id === operator.keyId
              ? 'your key'
              : actionForm(view, `/admin/api-keys/${k.id}/revoke`, 'Revoke', {
                  danger: true,
                  name: `Revoke key ${k.name} (${k.id})`,
                })
        }</td></tr>`,
    )
    const scopes = SCOPES.filter((s) => s !== 'platform' || operator.platform).map(
      (s) =>
        html`<label><input type="checkbox" name="scopes" value="${s}"!${s === 'introspect' ? ' checked' : ''}> ${s}</label>`,
    )
    const shown = created
      ? html`<div class="secret" role="status"><p>Key <strong>${created.id}</strong> is created. Copy it now: it is shown only once, and only its hash is kept.</p>
<label for="new-key">The new API key</label><input id="new-key" readonly value="${created.key}" size="60"></div>`
      : ''
    const body = html`!${notice(message)}!${shown}
!${table('API keys', ['Id', 'Name', 'Tenant', 'Scopes', 'Created', 'Action'], rows, 'No API keys.')}
<h2>Create a key</h2>
<form method="post" action="/admin/api-keys" class="stack">
!${csrfField(view)}
<label for="key-name">Name (what calls with it: a gateway, a backend)</label>
<input id="key-name" name="name" required maxlength="100" autocomplete="off">
<fieldset><legend>Scopes</legend>!${scopes.join('')}</fieldset>
<button type="submit">Create key</button>
</form>`
    return page(view, 'API keys', body)
  }

  app.get('/admin/api-keys', { schema: { hide: true, querystring: NoticeQuery } }, async (request, reply) => {
    const view = viewOf(request)
    return send(reply, keysPage(view, await apiKeys.list(operatorOf(view).tenancy), noticeOf(request)))
  })

  app.post(
    '/admin/api-keys',
    {
      schema: {
        hide: true,
        body: Form({
          name: Type.String({ minLength: 1, maxLength: 100 }),
          scopes: Type.Optional(
            Type.Union([
              Type.String({ maxLength: 20 }),
              Type.Array(Type.String({ maxLength: 20 }), { maxItems: 5 }),
            ]),
          ),
        }),
      },
    },
    async (request, reply) => {
      const view = viewOf(request)
      const operator = operatorOf(view)
      const body = request.body as { name: string; scopes?: string | string[] }
      const scopes = [...new Set([body.scopes ?? []].flat())] as Scope[]
      if (scopes.length === 0 || scopes.some((s) => !SCOPES.includes(s))) {
        throw new Errors.VALIDATION_FAILED('choose at least one scope')
      }
      if (scopes.includes('platform') && !operator.platform) throw new Errors.FORBIDDEN('platform')
      const { key, apiKey } = await apiKeys.create(operator.tenant, body.name, scopes)
      // Shown in this answer only (no-store, like every answer): a reload does not bring it back.
      return send(
        reply.code(201),
        keysPage(view, await apiKeys.list(operator.tenancy), null, { key, id: apiKey.id }),
      )
    },
  )

  app.post(
    '/admin/api-keys/:id/revoke',
    { schema: { hide: true, params: Type.Object({ id: Type.String({ maxLength: 100 }) }), body: Form({}) } },
    async (request, reply) => {
      const { id } = request.params as { id: string }
      const operator = operatorOf(viewOf(request))
      // The page offers no button for it; a hand-made post must not saw off the branch either.
      if (id === operator.keyId) {
        throw new Errors.VALIDATION_FAILED(
          'you are signed in with this key: revoke it from another key, or with the API',
        )
      }
      await apiKeys.revoke(operator.tenancy, id)
      return reply.redirect(`/admin/api-keys${query({ notice: 'key-revoked' })}`, 303)
    },
  )

  app.get(
    '/admin/signing-keys',
    { schema: { hide: true, querystring: NoticeQuery } },
    async (request, reply) => {
      const view = viewOf(request)
      const keys = await signingKeys.list()
      const rows = keys.map(
        (k) =>
          html`<tr><td><code>${k.kid}</code></td><td>${k.alg}</td><td>${k.current ? 'current' : k.retired_at ? 'retired' : ''}</td><td>!${when(k.created_at)}</td><td>!${when(k.publish_until)}</td></tr>`,
      )
      const rotate = operatorOf(view).platform
        ? actionForm(view, '/admin/signing-keys/rotate', 'Rotate now')
        : html`<p class="hint">Rotating needs a platform key.</p>`
      const body = html`!${notice(noticeOf(request))}
!${table('JWT signing keys, newest first', ['Key id', 'Algorithm', 'State', 'Created', 'Published until'], rows, 'No signing keys yet.')}
!${rotate}`
      return send(reply, page(view, 'Signing keys', body))
    },
  )

  app.post(
    '/admin/signing-keys/rotate',
    { schema: { hide: true, body: Form({}) } },
    async (request, reply) => {
      if (!operatorOf(viewOf(request)).platform) throw new Errors.FORBIDDEN('platform')
      await signingKeys.rotateNow()
      return reply.redirect(`/admin/signing-keys${query({ notice: 'rotated' })}`, 303)
    },
  )

  app.get('/admin/tenants', { schema: { hide: true } }, async (request, reply) => {
    const view = viewOf(request)
    if (!operatorOf(view).platform) throw new Errors.FORBIDDEN('platform')
    const rows = (await tenants.list()).map(
      (t) =>
        html`<tr><td>${t.id}</td><td>${t.name}</td><td><code>${JSON.stringify(t.settings)}</code></td><td>!${when(t.created_at)}</td><td><a href="/admin/users${query({ tenant: t.id })}">Find a user</a></td></tr>`,
    )
    const body = table('Tenants', ['Id', 'Name', 'Settings', 'Created', 'Users'], rows, 'No tenants.')
    return send(reply, page(view, 'Tenants', body))
  })
}
