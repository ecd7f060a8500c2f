import { Redis } from 'ioredis'
import type { Log } from './logger.ts'
import type { Metrics } from './metrics.ts'

export interface RedisOptions {
  url: string
  commandTimeoutMs: number
  log: Log
  metrics: Metrics
}

/** After this many failures in a row, stop asking Redis for a while. */
const BREAKER_THRESHOLD = 3
const BREAKER_COOLDOWN_MS = 1000

/**
 * Two Redis connections (hot-path commands, and deletes that should land) with a
 * small circuit breaker: a dead or hung Redis costs each request at most one
 * command timeout until the breaker opens, then nothing until a probe succeeds.
 * Nothing waits for Redis: commands fail fast while it is away (no offline
 * queue) and ioredis reconnects in the background.
 */
export function connectRedis({ url, commandTimeoutMs, log, metrics }: RedisOptions) {
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
    lazyConnect: false,
  }
  // Auto-pipelining sends the GETs of concurrent requests in one write.
  const client = new Redis(url, { ...common, commandTimeout: commandTimeoutMs, enableAutoPipelining: true })
  // Deletes after a revocation are not on the hot path and should not be lost
  // to a short timeout on a merely slow Redis: they get a connection that waits longer.
  const writer = new Redis(url, { ...common, commandTimeout: Math.max(1000, 10 * commandTimeoutMs) })

  let failures = 0
  let openUntil = 0
  let lastError = ''
  const onError = (err: Error) => {
    if (err.message !== lastError) log.warn({ err: err.message }, 'redis error')
    lastError = err.message
  }
  client.on('error', onError)
  writer.on('error', () => {})
  client.on('ready', () => {
    if (lastError) log.info('redis connection restored')
    lastError = ''
    failures = 0
    openUntil = 0
  })

  const available = () => client.status === 'ready' && Date.now() >= openUntil

  /** Runs a hot-path Redis command through the breaker; undefined when Redis is unavailable. */
  async function run<T>(op: string, command: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    if (!available()) {
      metrics.redisErrors.inc({ op })
      return undefined
    }
    try {
      const result = await command(client)
      failures = 0
      return result
    } catch (err) {
      metrics.redisErrors.inc({ op })
      if (++failures >= BREAKER_THRESHOLD) openUntil = Date.now() + BREAKER_COOLDOWN_MS
      onError(err as Error)
      return undefined
    }
  }

  /** Runs a command that should land (a delete after a revocation) on the patient connection. */
  async function write<T>(op: string, command: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    if (writer.status !== 'ready') {
      metrics.redisErrors.inc({ op })
      return undefined
    }
    try {
      return await command(writer)
    } catch (err) {
      metrics.redisErrors.inc({ op })
      onError(err as Error)
      return undefined
    }
  }

  return {
    client,
    writer,
    run,
    write,
    /** 'up' when commands go through, 'degraded' while Redis is away or the breaker is open. */
    state: (): 'up' | 'degraded' => (available() ? 'up' : 'degraded'),
    async close() {
      client.disconnect()
      writer.disconnect()
    },
  }
}

export type RedisConnection = ReturnType<typeof connectRedis>
