// The part of autocannon's programmatic API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface Request {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string | Buffer
  }

  export interface Client extends EventEmitter {
    setRequests(requests: Request[]): void
  }

  export interface Options {
    url: string
    method?: string
    headers?: Record<string, string>
    body?: string | Buffer
    requests?: Request[]
    connections?: number
    pipelining?: number
    duration?: number
    overallRate?: number
    timeout?: number
    setupClient?: (client: Client) => void
    verifyBody?: (body: string) => boolean
  }

  export interface Histogram {
    average: number
    mean: number
    total: number
    p50: number
    p99: number
  }

  export interface Result {
    requests: Histogram
    latency: Histogram
    duration: number
    errors: number
    timeouts: number
    mismatches: number
    non2xx: number
    statusCodeStats: Record<string, { count: number }>
  }

  export interface Instance extends EventEmitter, PromiseLike<Result> {
    stop(): void
  }

  function autocannon(options: Options): Instance
  export default autocannon
}
