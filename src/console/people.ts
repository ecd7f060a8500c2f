import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { html } from 'ghtml'
import { Errors } from '../errors.ts'
import { CONSOLE_CLIENT, type SessionRow } from '../sessions/model.ts'
import { EVENT_TYPES, type EventRow } from '../sessions/repository.ts'
import type { SessionService } from '../sessions/service.ts'
import { onlyTenant, type Tenancy, userTenancy } from '../tenants/tenancy.ts'
import { actionForm, csrfField, Form, notice, page, query, table, type View, when } from './html.ts'
import type { Operator } from './operator.ts'

// Users, their sessions and history, and signing people out: one at a time or everyone at once.

const NOTICES: Record<string, string> = {
  revoked: 'The session is revoked: every replica now answers inactive for its tokens.',
  suspended: 'The session is suspended: its tokens are inactive until it is resumed.',
  resumed: 'The session is resumed.',
  'signed-out': 'Signed out: the sessions are revoked.',
}

/** Where an operator acts for one user: user ids are per tenant (a platform operator picks the tenant). */
function userScope(operator: Operator, tenant: string | undefined): Tenancy {
  if (tenant && operator.platform) return { ...onlyTenant(tenant), ...actor(operator) }
  return { ...userTenancy(operator.tenancy), ...actor(operator) }
}

const actor = (operator: Operator) => (operator.tenancy.actor ? { actor: operator.tenancy.actor } : {})

function describeDevice(session: Pick<SessionRow, 'device'>): string {
  const { browser, os, type } = session.device
  const name = [browser, os].filter(Boolean).join(' on ') || 'Unknown client'
  return `${name} (${type})`
}

function statusText(session: SessionRow): string {
  if (session.status === 'suspended') return `suspended: ${session.suspension_reason ?? 'no reason given'}`
  if (session.status === 'active') return 'active'
  return `${session.status}${session.end_reason ? `: ${session.end_reason}` : ''}`
}

function describeEvent(event: EventRow): string {
  const data = event.data
  const parts: string[] = []
  if (typeof data.reason === 'string') parts.push(`reason: ${data.reason}`)
  const actor = data.actor as { operator?: string; key_id?: string } | undefined
  if (actor?.operator) parts.push(`by ${actor.operator} (${actor.key_id}) in the console`)
  if (typeof data.ip === 'string') parts.push(`from ${data.ip}`)
  const current = data.current as { ip?: string; user_agent?: string } | undefined
  if (current?.ip) parts.push(`now ${current.ip}`)
  if (Array.isArray(data.dimensions)) parts.push(`drift: ${data.dimensions.join(', ')}`)
  return parts.join('; ')
}

/** Rows of events; with `userOf`, a column linking each event's user (in the event's tenant, for a platform operator). */
function eventRows(events: EventRow[], userOf?: Operator): string[] {
  return events.map(
    (e) =>
      html`<tr><td>!${when(e.created_at)}</td><td>${e.type}</td>!${
        userOf
          ? html`<td><a href="/admin/users/${encodeURIComponent(e.user_id)}${userOf.platform ? query({ tenant: e.tenant_id }) : ''}">${e.user_id}</a></td>`
          : ''
      }<td><a href="/admin/sessions/${e.session_id}">${e.session_id.slice(0, 8)}…</a></td><td>${describeEvent(e)}</td></tr>`,
  )
}

const EVENT_HEADERS = ['When', 'Event', 'Session', 'Details']

export function userSearchForm(userId = '', tenant = '', operator?: Operator): string {
  const tenantField = operator?.platform
    ? html`<span class="field"><label for="tenant">Tenant</label><input id="tenant" name="tenant" value="${tenant || operator.tenant}" maxlength="63" autocomplete="off"></span>`
    : ''
  return html`<form method="get" action="/admin/users" class="search" role="search" aria-label="Find a user">
<span class="field"><label for="user_id">User id</label>
<input id="user_id" name="user_id" value="${userId}" required maxlength="256" autocomplete="off"></span>
!${tenantField}
<button type="submit">Find</button>
</form>
<form method="get" action="/admin/sessions" class="search" role="search" aria-label="Open a session">
<span class="field"><label for="session_id">Session id</label>
<input id="session_id" name="id" required maxlength="36" autocomplete="off"></span>
<button type="submit">Open</button>
</form>
<p class="hint">A session cannot be found by its token, nor by a prefix of it: the service keeps only a hash of each token.</p>`
}

async function userPage(
  view: View,
  sessions: SessionService,
  operator: Operator,
  userId: string,
  tenant?: string,
) {
  const who = userScope(operator, tenant)
  const [live, count, events] = await Promise.all([
    sessions.listForUser(who, userId, { limit: 200, after: null }),
    sessions.countForUser(who, userId),
    sessions.listEvents(who, { userId, type: null, since: null, until: null, before: null, limit: 20 }),
  ])
  const tenantQuery = tenant && operator.platform ? query({ tenant }) : ''
  const rowAction = (s: SessionRow, what: string) =>
    `/admin/sessions/${s.id}/${what}${query({ back: 'user', tenant: operator.platform ? tenant : undefined })}`
  const rows = live.map((s) => {
    // Which session each button acts on, for whoever cannot see the row it is in.
    const which = `${describeDevice(s)}, ${s.ip ?? 'no address'}`
    const actions = [
      actionForm(view, rowAction(s, 'revoke'), 'Revoke', { danger: true, name: `Revoke ${which}` }),
      s.status === 'active'
        ? actionForm(view, rowAction(s, 'suspend'), 'Suspend', { name: `Suspend ${which}` })
        : html`<a class="button" href="/admin/sessions/${s.id}" aria-label="Resume ${which}">Resume…</a>`,
    ].join(' ')
    return html`<tr><td><a href="/admin/sessions/${s.id}">${describeDevice(s)}</a><br><small>${s.user_agent ?? 'no User-Agent'}</small></td><td>${s.ip ?? '—'}</td><td>!${when(s.created_at)}</td><td>!${when(s.last_seen_at)}</td><td>${statusText(s)}</td><td class="actions">!${actions}</td></tr>`
  })
  const keep = live.map(
    (s) =>
      html`<option value="${s.id}">${describeDevice(s)}, ${s.ip ?? 'no address'}, last seen ${new Date(s.last_seen_at).toISOString().slice(0, 16).replace('T', ' ')}</option>`,
  )
  const bulk =
    live.length === 0
      ? ''
      : html`<h2>Sign this user out</h2>
<div class="row">
!${actionForm(view, `/admin/users/${encodeURIComponent(userId)}/sign-out${tenantQuery}`, `Sign out all ${count} sessions`, { danger: true })}
<form method="post" action="/admin/users/${encodeURIComponent(userId)}/sign-out${tenantQuery}" class="inline">
!${csrfField(view)}
<label for="except">Keep</label>
<select id="except" name="except">!${keep.join('')}</select>
<button type="submit" class="danger">Sign out all but this one</button>
</form></div>`
  const more =
    count > live.length ? html`<p>Showing the newest ${live.length} of ${count} live sessions.</p>` : ''
  const body = html`!${notice(NOTICES[String((view as View & { notice?: string }).notice ?? '')])}
!${userSearchForm(userId, tenant, operator)}
<h2>Live sessions (${count})</h2>
!${more}
!${table(`Live sessions of ${userId}`, ['Device', 'Address', 'Signed in', 'Last seen', 'Status', 'Actions'], rows, 'This user has no live session.')}
!${bulk}
<h2>Recent history</h2>
!${table(`Recent events of ${userId}`, EVENT_HEADERS, eventRows(events), 'No events recorded for this user.')}
<p><a href="/admin/events${query({ user_id: userId, tenant: operator.platform ? (tenant ?? operator.tenant) : undefined })}">All events of this user</a></p>`
  return page(view, `User ${userId}`, body)
}

async function sessionPage(view: View, sessions: SessionService, operator: Operator, id: string) {
  const session = await sessions.get(operator.tenancy, id)
  const who = { ...onlyTenant(session.tenant_id), ...actor(operator) }
  const history = await sessions.listEvents(who, {
    userId: session.user_id,
    sessionId: session.id,
    type: null,
    since: null,
    until: null,
    before: null,
    limit: 100,
  })
  const refused = history.find((e) => e.type === 'session.suspended')?.data.current as
    | { ip?: string | null; user_agent?: string | null }
    | undefined
  const open = session.status === 'active' || session.status === 'suspended'
  // An operator's own console session is never resumed (the service refuses): they sign in again.
  const resume =
    session.status === 'suspended' && session.client_id === CONSOLE_CLIENT
      ? html`<p class="hint">An operator's console session is never resumed: its operator signs in again.</p>`
      : session.status === 'suspended'
        ? html`<form method="post" action="/admin/sessions/${session.id}/resume" class="stack">
!${csrfField(view)}
<fieldset><legend>Resume, bound to</legend>
<label><input type="radio" name="rebind" value="no" checked> the client it is bound to now (${session.bound_ip ?? 'no address'})</label>
!${
            refused?.ip || refused?.user_agent
              ? html`<label><input type="radio" name="rebind" value="yes"> the client that was refused: ${refused.ip ?? 'same address'}, ${refused.user_agent ?? 'same browser'}</label>`
              : ''
          }
</fieldset>
<button type="submit">Resume</button>
</form>`
        : ''
  const actions = open
    ? html`<h2>Actions</h2><div class="row">!${actionForm(view, `/admin/sessions/${session.id}/revoke`, 'Revoke', { danger: true })}
!${session.status === 'active' ? actionForm(view, `/admin/sessions/${session.id}/suspend`, 'Suspend') : ''}</div>!${resume}`
    : ''
  const facts: Array<[string, string]> = [
    [
      'User',
      html`<a href="/admin/users/${encodeURIComponent(session.user_id)}${operator.platform ? query({ tenant: session.tenant_id }) : ''}">${session.user_id}</a>`,
    ],
    ['Tenant', html`${session.tenant_id}`],
    ['Status', html`${statusText(session)}`],
    ['Device', html`${describeDevice(session)}`],
    ['User-Agent', html`${session.user_agent ?? '—'}`],
    ['Last address', html`${session.ip ?? '—'}`],
    ['Bound to address', html`${session.bound_ip ?? '—'}`],
    ['Signed in', when(session.created_at)],
    ['Last seen', when(session.last_seen_at)],
    ['Idle expiry', when(session.idle_expires_at)],
    ['Absolute expiry', when(session.absolute_expires_at)],
    ['Ended', when(session.ended_at)],
    ['Token type', html`${session.token_type}`],
    ['Opened by', html`${session.client_id ?? '—'}`],
  ]
  const body = html`!${notice(NOTICES[String((view as View & { notice?: string }).notice ?? '')])}
<dl class="facts">!${facts.map(([k, v]) => html`<dt>${k}</dt><dd>!${v}</dd>`).join('')}</dl>
!${actions}
<h2>History</h2>
!${table('Events of this session, newest first', ['When', 'Event', 'Session', 'Details'], eventRows(history), 'No events recorded.')}`
  return page(view, `Session ${session.id}`, body)
}

const EventFilters = Type.Object(
  {
    type: Type.Optional(Type.Union([Type.Literal(''), ...EVENT_TYPES.map((t) => Type.Literal(t))])),
    user_id: Type.Optional(Type.String({ maxLength: 256 })),
    since: Type.Optional(Type.String({ maxLength: 32 })),
    until: Type.Optional(Type.String({ maxLength: 32 })),
    cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,18}$' })),
    /** A platform operator's: only this tenant's events (a user id names a user of one tenant). */
    tenant: Type.Optional(Type.String({ maxLength: 63 })),
  },
  { additionalProperties: false },
)

/** A datetime-local value (UTC, as the form says) as an instant; VALIDATION_FAILED when it is not one. */
function instant(value: string | undefined, name: string): Date | null {
  if (!value) return null
  const date = new Date(/Z|[+-]\d\d:\d\d$/.test(value) ? value : `${value}Z`)
  if (Number.isNaN(date.getTime())) throw new Errors.VALIDATION_FAILED(`${name}: not a date and time`)
  return date
}

const PAGE = 50

async function eventsPage(
  view: View,
  sessions: SessionService,
  operator: Operator,
  filters: {
    type?: string
    user_id?: string
    since?: string
    until?: string
    cursor?: string
    tenant?: string
  },
) {
  const who = filters.tenant && operator.platform ? userScope(operator, filters.tenant) : operator.tenancy
  const events = await sessions.listEvents(who, {
    userId: filters.user_id || null,
    type: filters.type || null,
    since: instant(filters.since, 'since'),
    until: instant(filters.until, 'until'),
    before: filters.cursor ?? null,
    limit: PAGE,
  })
  const options = ['', ...EVENT_TYPES].map(
    (t) =>
      html`<option value="${t}"!${t === (filters.type ?? '') ? ' selected' : ''}>${t || 'every type'}</option>`,
  )
  const last = events[events.length - 1]
  const next =
    events.length === PAGE && last
      ? html`<p><a href="/admin/events${query({ ...filters, cursor: last.id })}" rel="next">Older events</a></p>`
      : ''
  const body = html`<form method="get" action="/admin/events" class="filters">
<span class="field"><label for="type">Type</label><select id="type" name="type">!${options.join('')}</select></span>
<span class="field"><label for="user">User id</label><input id="user" name="user_id" value="${filters.user_id ?? ''}" maxlength="256" autocomplete="off"></span>
!${
    operator.platform
      ? html`<span class="field"><label for="tenant">Tenant (empty: all)</label><input id="tenant" name="tenant" value="${filters.tenant ?? ''}" maxlength="63" autocomplete="off"></span>`
      : ''
  }
<span class="field"><label for="since">Since (UTC)</label><input id="since" name="since" type="datetime-local" value="${filters.since ?? ''}"></span>
<span class="field"><label for="until">Until (UTC)</label><input id="until" name="until" type="datetime-local" value="${filters.until ?? ''}"></span>
<button type="submit">Filter</button>
</form>
!${table('Events, newest first', ['When', 'Event', 'User', 'Session', 'Details'], eventRows(events, operator), 'No events match.')}
!${next}`
  return page(view, 'Events', body)
}

/** The words an operator types to sign everyone out: a slip of the mouse cannot do it. */
export const BULK_CONFIRMATION = 'sign out everyone'

/** What the operator typed, given back with a refusal: resubmitting must not drop the users to spare. */
const UNTYPED = { except: '', reason: 'signed out by an operator' }

function bulkPage(
  view: View,
  operator: Operator,
  message = '',
  kind: 'status' | 'alert' = 'status',
  typed: { except: string; reason: string } = UNTYPED,
) {
  const scope = operator.platform ? 'every user of every tenant' : `every user of tenant ${operator.tenant}`
  const body = html`!${notice(message, kind)}
<p>Revokes the sessions of ${scope}, except the users you list. Your own console session is kept.</p>
<form method="post" action="/admin/sign-out-everyone" class="stack">
!${csrfField(view)}
<label for="except">Except these users (one user id per line)</label>
<textarea id="except" name="except" rows="5" maxlength="100000">${typed.except}</textarea>
<label for="reason">Reason (recorded with each revocation)</label>
<input id="reason" name="reason" maxlength="200" value="${typed.reason}">
<label for="confirm">Type <strong>${BULK_CONFIRMATION}</strong> to confirm</label>
<input id="confirm" name="confirm" required autocomplete="off">
<button type="submit" class="danger">Sign out everyone</button>
</form>`
  return page(view, 'Sign out everyone', body)
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) })
const UserParams = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 256 }) })
const TenantQuery = Type.Object(
  { tenant: Type.Optional(Type.String({ maxLength: 63 })), back: Type.Optional(Type.Literal('user')) },
  { additionalProperties: false },
)
const NoticeQuery = Type.Object(
  {
    notice: Type.Optional(Type.String({ maxLength: 32 })),
    tenant: Type.Optional(Type.String({ maxLength: 63 })),
  },
  { additionalProperties: false },
)

/** Registers the pages about people; `guard` runs before every form post (operator and CSRF checks). */
export function peopleRoutes(
  app: FastifyInstance,
  { sessions, viewOf }: { sessions: SessionService; viewOf: (request: FastifyRequest) => View },
) {
  const operatorOf = (view: View) => view.operator as Operator
  const withNotice = (view: View, notice: string | undefined) => Object.assign(view, { notice })

  app.get(
    '/admin/users',
    {
      schema: {
        hide: true,
        querystring: Type.Object(
          {
            user_id: Type.Optional(Type.String({ maxLength: 256 })),
            tenant: Type.Optional(Type.String({ maxLength: 63 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { user_id: userId, tenant } = request.query as { user_id?: string; tenant?: string }
      if (userId) return reply.redirect(`/admin/users/${encodeURIComponent(userId)}${query({ tenant })}`, 303)
      const view = viewOf(request)
      return reply.type('text/html').send(page(view, 'Users', userSearchForm('', tenant, operatorOf(view))))
    },
  )

  app.get(
    '/admin/users/:userId',
    { schema: { hide: true, params: UserParams, querystring: NoticeQuery } },
    async (request, reply) => {
      const { userId } = request.params as { userId: string }
      const { notice: code, tenant } = request.query as { notice?: string; tenant?: string }
      const view = withNotice(viewOf(request), code)
      return reply.type('text/html').send(await userPage(view, sessions, operatorOf(view), userId, tenant))
    },
  )

  app.get(
    '/admin/sessions',
    {
      schema: {
        hide: true,
        querystring: Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const id = (request.query as { id: string }).id.trim().toLowerCase()
      if (!UUID.test(id))
        throw new Errors.VALIDATION_FAILED('a session id is a UUID, as events and the API show it')
      return reply.redirect(`/admin/sessions/${id}`, 303)
    },
  )

  app.get(
    '/admin/sessions/:id',
    { schema: { hide: true, params: IdParams, querystring: NoticeQuery } },
    async (request, reply) => {
      const { id } = request.params as { id: string }
      const view = withNotice(viewOf(request), (request.query as { notice?: string }).notice)
      return reply.type('text/html').send(await sessionPage(view, sessions, operatorOf(view), id))
    },
  )

  /** Back to where the action was taken: the user's page from there, else the session's. */
  function backTo(request: FastifyRequest, session: SessionRow, code: string) {
    const { back, tenant } = request.query as { back?: 'user'; tenant?: string }
    return back === 'user'
      ? `/admin/users/${encodeURIComponent(session.user_id)}${query({ notice: code, tenant })}`
      : `/admin/sessions/${session.id}${query({ notice: code })}`
  }

  app.post(
    '/admin/sessions/:id/revoke',
    { schema: { hide: true, params: IdParams, querystring: TenantQuery, body: Form({}) } },
    async (request, reply) => {
      const operator = operatorOf(viewOf(request))
      const { id } = request.params as { id: string }
      const session = await sessions.revoke(operator.tenancy, id, 'revoked by an operator', 'session')
      return reply.redirect(backTo(request, session, 'revoked'), 303)
    },
  )

  app.post(
    '/admin/sessions/:id/suspend',
    { schema: { hide: true, params: IdParams, querystring: TenantQuery, body: Form({}) } },
    async (request, reply) => {
      const operator = operatorOf(viewOf(request))
      const { id } = request.params as { id: string }
      const session = await sessions.suspend(operator.tenancy, id, 'suspended by an operator')
      return reply.redirect(backTo(request, session, 'suspended'), 303)
    },
  )

  app.post(
    '/admin/sessions/:id/resume',
    {
      schema: {
        hide: true,
        params: IdParams,
        body: Form({ rebind: Type.Optional(Type.Union([Type.Literal('yes'), Type.Literal('no')])) }),
      },
    },
    async (request, reply) => {
      const operator = operatorOf(viewOf(request))
      const { id } = request.params as { id: string }
      const { rebind } = request.body as { rebind?: 'yes' | 'no' }
      let client = {}
      if (rebind === 'yes') {
        // The client that was refused, as the suspension recorded it: never what the form says.
        const session = await sessions.get(operator.tenancy, id)
        const [suspension] = await sessions.listEvents(
          { ...onlyTenant(session.tenant_id) },
          {
            userId: session.user_id,
            sessionId: id,
            type: 'session.suspended',
            since: null,
            until: null,
            before: null,
            limit: 1,
          },
        )
        const refused = suspension?.data.current as
          | { ip?: string | null; user_agent?: string | null }
          | undefined
        client = {
          ...(refused?.ip ? { ip: refused.ip } : {}),
          ...(refused?.user_agent ? { user_agent: refused.user_agent } : {}),
        }
      }
      const session = await sessions.resume(operator.tenancy, id, client)
      return reply.redirect(`/admin/sessions/${session.id}${query({ notice: 'resumed' })}`, 303)
    },
  )

  app.post(
    '/admin/users/:userId/sign-out',
    {
      schema: {
        hide: true,
        params: UserParams,
        querystring: TenantQuery,
        body: Form({ except: Type.Optional(Type.String({ format: 'uuid' })) }),
      },
    },
    async (request, reply) => {
      const operator = operatorOf(viewOf(request))
      const { userId } = request.params as { userId: string }
      const { tenant } = request.query as { tenant?: string }
      const { except = null } = request.body as { except?: string }
      await sessions.revokeAllForUser(
        userScope(operator, tenant),
        userId,
        except,
        'signed out by an operator',
      )
      return reply.redirect(
        `/admin/users/${encodeURIComponent(userId)}${query({ notice: 'signed-out', tenant })}`,
        303,
      )
    },
  )

  app.get('/admin/events', { schema: { hide: true, querystring: EventFilters } }, async (request, reply) => {
    const view = viewOf(request)
    return reply
      .type('text/html')
      .send(await eventsPage(view, sessions, operatorOf(view), request.query as never))
  })

  app.get('/admin/sign-out-everyone', { schema: { hide: true } }, async (request, reply) => {
    const view = viewOf(request)
    return reply.type('text/html').send(bulkPage(view, operatorOf(view)))
  })

  app.post(
    '/admin/sign-out-everyone',
    {
      schema: {
        hide: true,
        body: Form({
          except: Type.Optional(Type.String({ maxLength: 100_000 })),
          reason: Type.Optional(Type.String({ maxLength: 200 })),
          confirm: Type.String({ maxLength: 100 }),
        }),
      },
    },
    async (request, reply) => {
      const view = viewOf(request)
      const operator = operatorOf(view)
      const body = request.body as { except?: string; reason?: string; confirm: string }
      const typed = { except: body.except ?? '', reason: body.reason ?? '' }
      if (body.confirm.trim().toLowerCase() !== BULK_CONFIRMATION) {
        return reply
          .code(400)
          .type('text/html')
          .send(
            bulkPage(
              view,
              operator,
              `Nothing was done: type "${BULK_CONFIRMATION}" to confirm.`,
              'alert',
              typed,
            ),
          )
      }
      const except = (body.except ?? '')
        .split(/\r?\n/)
        .map((line) => line.trim())
        .filter(Boolean)
      if (except.some((id) => id.length > 256) || except.length > 10_000) {
        return reply
          .code(400)
          .type('text/html')
          .send(
            bulkPage(
              view,
              operator,
              'Nothing was done: at most 10,000 user ids of at most 256 characters.',
              'alert',
              typed,
            ),
          )
      }
      const revoked = await sessions.revokeInBulk(
        operator.tenancy,
        { allUsersExcept: [...except, operator.session.user_id] },
        body.reason?.trim() || 'signed out by an operator',
      )
      const spared =
        except.length === 0 ? '' : `, sparing ${except.length} listed user${except.length === 1 ? '' : 's'}`
      return reply
        .type('text/html')
        .send(bulkPage(view, operator, `Revoked ${revoked} session${revoked === 1 ? '' : 's'}${spared}.`))
    },
  )
}
