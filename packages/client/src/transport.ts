/** How calls that are safe to repeat are retried. */
export interface RetryOptions {
  /** Retries after the first attempt; 0 turns retrying off. Default 2. */
  limit?: number
  /** The first retry waits between half and all of this; each next one twice as long. Default 100. */
  baseDelayMs?: number
  /** No wait is longer; a Retry-After asking for more is not waited for. Default 2000. */
  maxDelayMs?: number
}

type Fetch = (input: Request, init?: RequestInit) => Promise<Response>

// Answers that say "try again": a gateway or the service briefly unable to serve.
const RETRYABLE_STATUS = new Set([502, 503, 504])

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A fetch whose every attempt is abandoned after `timeoutMs` (0 = never), as a TimeoutError. */
export function withTimeout(fetch: Fetch, timeoutMs: number): Fetch {
  if (!timeoutMs) return fetch
  return (request, init) => {
    const timeout = AbortSignal.timeout(timeoutMs)
    // AbortSignal.any arrived in Node 20.3; without it only the timeout can end the attempt.
    const signal =
      typeof AbortSignal.any === 'function' ? AbortSignal.any([request.signal, timeout]) : timeout
    return fetch(request, { ...init, signal })
  }
}

/** The wait a Retry-After header asks for (seconds or an HTTP date), or null without a usable one. */
function retryAfterMs(response: Response, nowMs: number): number | null {
  const value = response.headers.get('retry-after')?.trim()
  if (!value) return null
  if (/^\d+$/.test(value)) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs)
}

/**
 * A fetch for requests that are safe to send twice: it sends again, after a
 * backoff with jitter, when the request did not get through (a network error
 * or a timeout), on 502/503/504, and on 429 when Retry-After says how long to
 * wait. Never use it for logins or refreshes: an answer lost on the way back
 * would be a session opened, or a refresh token spent, twice.
 */
export function withRetries(fetch: Fetch, options: RetryOptions = {}): Fetch {
  const { limit = 2, baseDelayMs = 100, maxDelayMs = 2000 } = options
  if (limit <= 0) return fetch
  return async (request, init) => {
    for (let retry = 1; ; retry++) {
      const last = retry > limit
      const backoff = Math.min(maxDelayMs, baseDelayMs * 2 ** (retry - 1))
      let wait = Math.round(backoff / 2 + (Math.random() * backoff) / 2)
      try {
        // A clone per attempt: a body can be read only once.
        const response = await fetch(last ? request : request.clone(), init)
        if (last) return response
        const asked = retryAfterMs(response, Date.now())
        const again =
          (RETRYABLE_STATUS.has(response.status) || (response.status === 429 && asked !== null)) &&
          (asked === null || asked <= maxDelayMs)
        if (!again) return response
        wait = Math.max(wait, asked ?? 0)
        await response.body?.cancel()
      } catch (err) {
        // The caller's own abort is an answer, not a failure to retry.
        if (last || request.signal.aborted) throw err
      }
      await sleep(wait)
    }
  }
}
