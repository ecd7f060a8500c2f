import { createHmac } from 'node:crypto'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import type { Log } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import { createDestinations, DestinationRefused } from './destination.ts'
import type { ClaimedDelivery, WebhookStore } from './store.ts'

type Settings = Pick<
  Config,
  | 'webhookPollMs'
  | 'webhookTimeoutMs'
  | 'webhookMaxAttempts'
  | 'webhookBackoffMs'
  | 'webhookBackoffMaxMs'
  | 'webhookBatch'
  | 'webhookAllowedCidrs'
>

interface Deps {
  store: WebhookStore
  kek: KeyEncryptionKey
  clock: Clock
  config: Settings
  metrics: Metrics
  log: Log
}

/** What a receiver gets, and the Standard Webhooks headers that let it check where it came from. */
export function signedRequest(delivery: ClaimedDelivery, key: Buffer, unixSeconds: number) {
  const body = JSON.stringify({
    type: delivery.type,
    timestamp: delivery.event_created_at.toISOString(),
    data: {
      ...delivery.data,
      event_id: delivery.event_id,
      session_id: delivery.session_id,
      user_id: delivery.user_id,
    },
  })
  // The same on every attempt and for every subscription: receivers drop duplicates by it.
  const id = `evt_${delivery.event_id}`
  const signature = createHmac('sha256', key).update(`${id}.${unixSeconds}.${body}`).digest('base64')
  return {
    body,
    headers: {
      'content-type': 'application/json',
      'user-agent': 'session-authority-webhooks',
      'webhook-id': id,
      'webhook-timestamp': String(unixSeconds),
      'webhook-signature': `v1,${signature}`,
    },
  }
}

/** Exponential backoff with jitter: attempt n waits between half and all of base × 2^(n-1), capped. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
  const full = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 40))
  return Math.round(full / 2 + (random() * full) / 2)
}

/**
 * Sends the webhook deliveries that are due, in each replica, off the request
 * path. Claims are leased, so replicas share the work and never send one
 * delivery at the same time; a replica that dies mid-delivery leaves it to
 * another once the lease runs out (at least once, never lost).
 */
export function createDispatcher({ store, kek, clock, config, metrics, log }: Deps) {
  const destinations = createDestinations({ allowedCidrs: config.webhookAllowedCidrs })
  const leaseMs = config.webhookTimeoutMs * 2 + 1000
  let timer: NodeJS.Timeout | undefined
  let round: Promise<void> | null = null
  let closing = false

  async function send(delivery: ClaimedDelivery): Promise<void> {
    let lastStatus: number | null = null
    let lastError: string | null = null
    let refused: DestinationRefused | null = null
    const signal = AbortSignal.timeout(config.webhookTimeoutMs)
    try {
      const request = signedRequest(
        delivery,
        kek.open(delivery.secret, delivery.subscription_id),
        // Receivers check freshness against their own clocks: real time.
        Math.floor(Date.now() / 1000),
      )
      lastStatus = await destinations.post(new URL(delivery.url), request, signal)
      if (lastStatus < 200 || lastStatus > 299) lastError = `receiver answered ${lastStatus}`
    } catch (err) {
      if (err instanceof DestinationRefused) refused = err
      // The code where there is one: a socket error's message quotes the address. No error here
      // quotes the URL: it is parsed only for its code, and Node never sees it whole.
      const code = (err as { code?: unknown }).code
      lastError = refused
        ? refused.message
        : signal.aborted
          ? `no answer within ${config.webhookTimeoutMs} ms`
          : typeof code === 'string'
            ? code
            : (err as Error).message
    }
    const now = clock.now()
    if (lastError === null) {
      await store.settle(
        delivery,
        { status: 'delivered', nextAttemptAt: new Date(now), lastStatus, lastError },
        new Date(now),
      )
      // Counted once recorded: an outcome that could not be saved is sent (and counted) again.
      metrics.webhookDeliveries.inc({ outcome: 'delivered' })
      metrics.webhookLatency.observe(Math.max(0, now - delivery.event_created_at.getTime()) / 1000)
      return
    }
    // Refused is dead at once: retrying asks the same rule again (and gives a rebinding name more tries);
    // once the URL or WEBHOOK_ALLOWED_CIDRS changes, the retry endpoint sends it again.
    const dead = refused !== null || delivery.attempts >= config.webhookMaxAttempts
    const next = dead
      ? now
      : now + backoffMs(delivery.attempts, config.webhookBackoffMs, config.webhookBackoffMaxMs)
    await store.settle(
      delivery,
      { status: dead ? 'dead' : 'pending', nextAttemptAt: new Date(next), lastStatus, lastError },
      new Date(now),
    )
    metrics.webhookDeliveries.inc({ outcome: dead ? 'dead' : 'failed' })
    const level = dead ? 'warn' : 'info'
    log[level](
      {
        delivery: delivery.id,
        webhook: delivery.subscription_id,
        attempt: delivery.attempts,
        error: lastError,
        // For the operator, who may allow its range: the address refused, never the URL (it may hold a password).
        ...(refused?.address ? { address: refused.address } : {}),
      },
      refused
        ? 'webhook destination not allowed; delivery dead'
        : dead
          ? 'webhook delivery dead'
          : 'webhook delivery failed; will retry',
    )
  }

  // Sends under way: up to webhookBatch at a time, each on its own, so one slow
  // receiver holds up only its own delivery, not the others.
  const inFlight = new Set<Promise<void>>()

  /** Claims due deliveries while there is room, and starts sending each. */
  async function drain(): Promise<void> {
    while (!closing) {
      const room = config.webhookBatch - inFlight.size
      if (room <= 0) break
      const now = clock.now()
      const batch = await store.claim(new Date(now), new Date(now + leaseMs), room)
      for (const delivery of batch) {
        const sending: Promise<void> = send(delivery)
          // Its outcome could not be recorded (Postgres away): the lease runs out and it is sent again.
          .catch((err: unknown) => log.warn({ err, delivery: delivery.id }, 'webhook delivery not recorded'))
          .finally(() => inFlight.delete(sending))
        inFlight.add(sending)
      }
      if (batch.length < room) break
    }
    const { pending, dead } = await store.backlog()
    metrics.webhooksPending.set(pending)
    metrics.webhooksDead.set(dead)
  }

  function tick() {
    if (round) return
    round = drain()
      .catch((err: unknown) => log.warn({ err }, 'webhook dispatch failed; will retry'))
      .finally(() => {
        round = null
      })
  }

  return {
    start() {
      if (config.webhookPollMs <= 0) return
      timer = setInterval(tick, config.webhookPollMs)
      timer.unref()
    },
    /** Stops claiming; waits for the deliveries in flight (each bounded by the request timeout). */
    async close() {
      closing = true
      clearInterval(timer)
      await round
      await Promise.all(inFlight)
    },
  }
}
