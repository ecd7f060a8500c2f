import { type HeadersLike, header } from './headers.ts'

/** What the service sends to a webhook (README: Events and webhooks). */
export interface WebhookEvent {
  type: string
  /** When the event happened (ISO 8601). */
  timestamp: string
  data: { event_id: string; session_id: string; user_id: string } & Record<string, unknown>
}

export interface VerifyOptions {
  /** How far webhook-timestamp may be from now, either way. Default 300 (Standard Webhooks' five minutes). */
  toleranceSeconds?: number
  /** Now, as a Date or epoch milliseconds (default: the clock). */
  now?: Date | number
}

/** A webhook request that is not provably from the service, or too old to accept (replay). */
export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError'
}

const SECRET_PREFIX = 'whsec_'

function fromBase64(text: string): Uint8Array<ArrayBuffer> | null {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
  } catch {
    return null
  }
}

/**
 * Checks a webhook request as Standard Webhooks says (an HMAC-SHA256 of
 * `webhook-id.webhook-timestamp.body` under the `whsec_…` secret, in
 * `webhook-signature`, with a timestamp near now) and returns its event.
 * `body` must be the raw body as received, not re-serialised JSON. Throws
 * WebhookVerificationError when the request does not pass. Drop events whose
 * webhook-id you have seen: delivery is at least once.
 */
export async function verifyWebhook(
  secret: string,
  headers: HeadersLike,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): Promise<WebhookEvent> {
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) {
    throw new TypeError('verifyWebhook: pass the raw request body (a string or bytes), not parsed JSON')
  }
  const key = fromBase64(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret)
  if (!key || key.length === 0) throw new TypeError('verifyWebhook: the secret is not whsec_ and base64')
  const id = header(headers, 'webhook-id')
  const timestamp = header(headers, 'webhook-timestamp')
  const signatures = header(headers, 'webhook-signature')
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError('missing webhook headers')

  const { toleranceSeconds = 300, now = Date.now() } = options
  const nowSeconds = Math.floor(Number(now) / 1000)
  if (!/^\d{1,15}$/.test(timestamp) || Math.abs(nowSeconds - Number(timestamp)) > toleranceSeconds) {
    throw new WebhookVerificationError('webhook-timestamp is not within the tolerance of now')
  }

  const encoder = new TextEncoder()
  const prefix = encoder.encode(`${id}.${timestamp}.`)
  const content = typeof body === 'string' ? encoder.encode(body) : body
  const signed = new Uint8Array(prefix.length + content.length)
  signed.set(prefix)
  signed.set(content, prefix.length)
  const hmac = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
  // Several space-separated signatures while a secret is being rotated; one valid v1 is enough.
  for (const entry of signatures.split(' ')) {
    const [version, signature] = entry.split(',')
    const given = version === 'v1' && signature ? fromBase64(signature) : null
    // subtle.verify compares in constant time.
    if (given && (await crypto.subtle.verify('HMAC', hmac, given, signed))) {
      return JSON.parse(typeof body === 'string' ? body : new TextDecoder().decode(body)) as WebhookEvent
    }
  }
  throw new WebhookVerificationError('no valid signature')
}
