import autocannon, { type Client } from 'autocannon'
import { ADMIN_KEY } from './protocol.ts'

/** Concurrent keep-alive connections, one request in flight on each (no pipelining). */
export const CONNECTIONS = 50

export interface Load {
  port: number
  path: string
  /** Request bodies; each connection cycles through its own share of them. */
  bodies: readonly string[]
  /** GET requests with these headers instead of JSON POSTs with the admin key (the gateway sub-request). */
  get?: Record<string, string>
  /** Is this response body the answer the scenario means to measure? */
  expect: (body: string) => boolean
  seconds: number
  /** Requests per second over all connections; unset = as fast as the server answers. */
  rate?: number
}

export interface Measurement {
  rps: number
  /** Every answer in the window, whatever its status (the server spent CPU on each). */
  requests: number
  p50: number
  p99: number
  non2xx: number
  /** Connection errors and timeouts. */
  errors: number
  /** Answers whose body was not the one the scenario measures (an error, or inactive instead of active). */
  wrongBodies: number
  /** Status codes other than 2xx, e.g. "503×12"; empty when none. */
  failures: string
}

/**
 * The bodies one connection sends. Every connection gets its own pre-encoded
 * slice, so rotating bodies costs the generator no more than a fixed one
 * (a per-request setupRequest would rebuild every request).
 */
function share(load: Load, connection: number): Array<Record<string, unknown>> {
  const { bodies, get } = load
  if (get) return [{ method: 'GET', headers: get }]
  const mine = bodies.filter((_, i) => i % CONNECTIONS === connection)
  return (mine.length > 0 ? mine : [bodies[connection % bodies.length] as string]).map((body) => ({ body }))
}

/** Exact percentiles of the recorded latencies (autocannon's histogram rounds to whole milliseconds). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

/** Runs one autocannon load against the server and returns what it saw. */
export async function measure(load: Load): Promise<Measurement> {
  let connection = 0
  let latencies = new Float64Array(1 << 18)
  let count = 0
  const instance = autocannon({
    url: `http://127.0.0.1:${load.port}${load.path}`,
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    connections: CONNECTIONS,
    pipelining: 1,
    duration: load.seconds,
    ...(load.rate ? { overallRate: load.rate } : {}),
    requests: share(load, 0),
    setupClient: (client: Client) => client.setRequests(share(load, connection++)),
    verifyBody: load.expect,
  })
  // Like autocannon's own latency figures, only successful answers count.
  instance.on('response', (_client: Client, status: number, _bytes: number, ms: number) => {
    if (status < 200 || status > 299) return
    if (count === latencies.length) {
      const grown = new Float64Array(latencies.length * 2)
      grown.set(latencies)
      latencies = grown
    }
    latencies[count++] = ms
  })
  const result = await instance
  const sorted = latencies.subarray(0, count).sort()
  const failures = Object.entries(result.statusCodeStats)
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, { count }]) => `${code}×${count}`)
    .join(', ')
  return {
    rps: result.requests.average,
    requests: result.requests.total,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    non2xx: result.non2xx,
    errors: result.errors,
    wrongBodies: result.mismatches,
    failures,
  }
}
