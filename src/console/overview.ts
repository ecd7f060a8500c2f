import { html } from 'ghtml'
import type { Health } from '../health.ts'
import type { Metrics } from '../metrics.ts'
import type { SessionService } from '../sessions/service.ts'
import type { WebhookStore } from '../webhooks/store.ts'
import { page, type View } from './html.ts'

// The overview: the service's state as its own metrics and health check report it.

/** Routes whose requests are introspections (a gateway asking whether a token is good). */
const INTROSPECTION_ROUTES = new Set([
  '/v1/sessions/introspect',
  '/oauth2/introspect',
  '/v1/forward-auth',
  '/v1/forward-auth/*',
])
const LIVE_COUNT_CAP = 100_000
const SAMPLE_EVERY_MS = 5_000
const SAMPLES_KEPT = 13

type MetricJson = Awaited<ReturnType<Metrics['registry']['getMetricsAsJSON']>>[number]
type Sample = { labels: Record<string, string | number>; value: number; metricName?: string }

function samplesOf(metrics: MetricJson[], name: string): Sample[] {
  return ((metrics.find((m) => m.name === name)?.values ?? []) as Sample[]).filter(
    (s) => s.metricName === undefined || s.metricName === name || s.metricName === `${name}_count`,
  )
}

function sum(samples: Sample[], where: (labels: Sample['labels']) => boolean = () => true): number {
  return samples.reduce((total, s) => (where(s.labels) ? total + s.value : total), 0)
}

async function introspectionsSoFar(metrics: Metrics): Promise<number> {
  const json = await metrics.registry.getMetricsAsJSON()
  const counts = (
    (json.find((m) => m.name === 'http_request_duration_seconds')?.values ?? []) as Sample[]
  ).filter((s) => s.metricName === 'http_request_duration_seconds_count')
  return sum(counts, (labels) => INTROSPECTION_ROUTES.has(String(labels.route)))
}

/**
 * Introspections per second over the last minute: the request counter sampled
 * every few seconds while the console is on (the counter alone has no rate).
 */
export function createRateSampler(metrics: Metrics, now: () => number = Date.now) {
  const samples: Array<{ at: number; count: number }> = []
  async function take() {
    samples.push({ at: now(), count: await introspectionsSoFar(metrics) })
    if (samples.length > SAMPLES_KEPT) samples.shift()
  }
  const sample = () => void take().catch(() => {})
  sample()
  const timer = setInterval(sample, SAMPLE_EVERY_MS)
  timer.unref()
  return {
    /** From the oldest sample kept to now; a page load reads the counter but keeps no sample of its own. */
    async perSecond(): Promise<number | null> {
      const first = samples[0]
      const last = { at: now(), count: await introspectionsSoFar(metrics) }
      if (!first || last.at - first.at < 1000) return null
      return (last.count - first.count) / ((last.at - first.at) / 1000)
    },
    stop: () => clearInterval(timer),
  }
}

export type RateSampler = ReturnType<typeof createRateSampler>

function ratio(hits: number, misses: number): string {
  return hits + misses === 0 ? 'no lookups yet' : `${((100 * hits) / (hits + misses)).toFixed(1)} %`
}

function tile(label: string, value: string, state: 'good' | 'bad' | 'plain' = 'plain'): string {
  return html`<div class="tile ${state}"><dt>${label}</dt><dd>${value}</dd></div>`
}

export async function overviewPage(
  view: View,
  deps: {
    sessions: SessionService
    metrics: Metrics
    health: Health
    webhooks: WebhookStore
    rate: RateSampler
  },
): Promise<string> {
  const operator = view.operator
  if (!operator) throw new Error('overview needs an operator')
  const [live, report, perSecond, json] = await Promise.all([
    deps.sessions.countLive(operator.tenancy, LIVE_COUNT_CAP),
    deps.health.check(),
    operator.platform ? deps.rate.perSecond() : null,
    operator.platform ? deps.metrics.registry.getMetricsAsJSON() : [],
  ])
  const hits = samplesOf(json, 'session_cache_hits_total')
  const misses = samplesOf(json, 'session_cache_misses_total')
  const level = (name: string) => (labels: Sample['labels']) => labels.level === name
  const queue = sum(samplesOf(json, 'write_behind_queue_size'))
  const lag = report.invalidation_feed_lag_ms
  const liveTile = tile(
    operator.platform ? 'Live sessions (every tenant)' : `Live sessions (tenant ${operator.tenant})`,
    live >= LIVE_COUNT_CAP ? `${LIVE_COUNT_CAP.toLocaleString('en')}+` : live.toLocaleString('en'),
  )
  const health = [
    tile('Postgres', report.postgres, report.postgres === 'up' ? 'good' : 'bad'),
    tile('Redis', report.redis, report.redis === 'degraded' ? 'bad' : 'good'),
    tile(
      'Invalidation feed',
      `${report.invalidation_feed}${lag === null ? '' : `, lag ${(lag / 1000).toFixed(1)} s`}`,
      report.invalidation_feed === 'live' ? 'good' : 'bad',
    ),
  ]
  // Traffic and cache figures count every tenant's requests: a tenant's operator sees its sessions and
  // the service's health, not the other tenants' traffic.
  const traffic = operator.platform
    ? [
        tile(
          'Introspections per second (this replica, last minute)',
          perSecond === null ? 'measuring…' : perSecond.toFixed(1),
        ),
        tile('L1 cache hit rate', ratio(sum(hits, level('l1')), sum(misses, level('l1')))),
        tile('Redis cache hit rate', ratio(sum(hits, level('l2')), sum(misses, level('l2')))),
        tile('Last-seen writes waiting', String(queue)),
      ]
    : []
  const tiles = [liveTile, ...traffic, ...health]
  // The backlog spans every tenant: only a platform operator sees it (a tenant's are on its webhooks page).
  if (operator.platform) {
    const backlog = await deps.webhooks.backlog()
    tiles.push(tile('Webhook deliveries waiting', String(backlog.pending)))
    tiles.push(tile('Dead webhook deliveries', String(backlog.dead), backlog.dead > 0 ? 'bad' : 'good'))
  }
  const body = html`<p>This replica, as of this page load. Reload for fresh figures; Prometheus has the history at <code>/metrics</code>.</p>
<dl class="tiles">!${tiles.join('')}</dl>
<h2>Find a user</h2>
<form method="get" action="/admin/users" class="search" role="search" aria-label="Find a user">
<label for="user_id">User id</label>
<input id="user_id" name="user_id" required maxlength="256" autocomplete="off">
<button type="submit">Find</button>
</form>`
  return page(view, 'Overview', body)
}
