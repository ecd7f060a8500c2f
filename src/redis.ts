import { type RedisOptions as ClientOptions, Cluster, type ClusterOptions, Redis } from 'ioredis'
import type { Log } from './logger.ts'
import type { Metrics } from './metrics.ts'

export interface RedisOptions {
  /** `redis://` or `rediss://` for one server; `redis+cluster://` or `rediss+cluster://` for a cluster. */
  url: string
  commandTimeoutMs: number
  log: Log
  metrics: Metrics
}

/** What both kinds of connection answer: a single server's client, or a Redis Cluster's. */
export type RedisClient = Redis | Cluster

/** Where Redis is: one server, or the seed nodes of a Redis Cluster (which tell the client the rest). */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | {
      kind: 'cluster'
      seeds: Array<{ host: string; port: number }>
      username?: string
      password?: string
      tls: boolean
    }

const CLUSTER_URL = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^@/]+?)\/?$/

/**
 * Reads REDIS_URL: `redis+cluster://[user:password@]host:port,host:port` (`rediss+cluster://` with
 * TLS) names seeds of a cluster; anything else is one server's URL, given to ioredis as it is.
 */
export function redisTarget(url: string): RedisTarget {
  const match = CLUSTER_URL.exec(url)
  if (!match) return { kind: 'single', url }
  try {
    return clusterTarget(match)
  } catch {
    // Not the parser's message: it quotes the URL, password and all.
    throw new Error('REDIS_URL: a node or the credentials of the redis+cluster:// URL cannot be read')
  }
}

function clusterTarget(match: RegExpExecArray): RedisTarget {
  const [, scheme, credentials, hosts = ''] = match
  const seeds = hosts.split(',').map((seed) => {
    const parsed = new URL(`redis://${seed}`)
    return { host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(parsed.port || 6379) }
  })
  const user = credentials === undefined ? null : new URL(`redis://${credentials}@localhost`)
  return {
    kind: 'cluster',
    seeds,
    ...(user?.username ? { username: decodeURIComponent(user.username) } : {}),
    ...(user?.password ? { password: decodeURIComponent(user.password) } : {}),
    tls: scheme === 'rediss',
  }
}

/** After this many failures in a row, stop asking Redis for a while. */
const BREAKER_THRESHOLD = 3
const BREAKER_COOLDOWN_MS = 1000
/** How often a cluster client rereads which node serves each slot (also done on MOVED): finds a promoted replica. */
const SLOTS_REFRESH_MS = 2000

const reconnect = (times: number) => Math.min(100 * times, 2000)
/**
 * The writer's command timeout: deletes after a revocation are not on the hot path and should not be
 * lost to a short timeout on a merely slow Redis.
 */
const patient = (commandTimeoutMs: number) => Math.max(1000, 10 * commandTimeoutMs)

/** A promise that rejects after `ms` unless `promise` settles first (the loser's outcome is ignored). */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis command took longer than ${ms} ms`)), ms)
  })
  promise.catch(() => {})
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/**
 * The two clients (hot path, and the patient writer) for a Redis Cluster. As with one server, nothing
 * waits for Redis: no offline queue, and the hot-path client retries nothing itself (a command for a
 * shard that is failing over fails at once, and Postgres answers); the writer retries redirections
 * and a failover for a while, as its deletes should land. Reads go to primaries only: a replica may
 * not have applied a delete yet.
 */
function clusterClients(target: Extract<RedisTarget, { kind: 'cluster' }>, commandTimeoutMs: number) {
  const patientMs = patient(commandTimeoutMs)
  const node: ClusterOptions['redisOptions'] = {
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...(target.tls ? { tls: {} } : {}),
  }
  const common: ClusterOptions = {
    enableOfflineQueue: false,
    scaleReads: 'master',
    clusterRetryStrategy: reconnect,
    slotsRefreshTimeout: patientMs,
    // One write per node for the commands of a tick (GETs on the hot path, a revocation's DELs).
    enableAutoPipelining: true,
  }
  const client = new Cluster(target.seeds, {
    ...common,
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 0,
    redisOptions: { ...node, commandTimeout: commandTimeoutMs },
  })
  const writer = new Cluster(target.seeds, {
    ...common,
    redisOptions: { ...node, commandTimeout: patientMs },
  })
  // Slots are reread on a timer of our own, not ioredis' `slotsRefreshInterval`: a refresh under way
  // when that one is cleared arms it again, and the disconnected client then keeps the process alive.
  const refresh = setInterval(() => {
    for (const cluster of [client, writer]) if (cluster.status === 'ready') cluster.refreshSlotsCache()
  }, SLOTS_REFRESH_MS)
  refresh.unref()
  return { client, writer, stop: () => clearInterval(refresh) }
}

function singleClients(url: string, commandTimeoutMs: number) {
  const common: ClientOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: reconnect,
    lazyConnect: false,
    // Auto-pipelining sends the GETs of concurrent requests (and a revocation's DELs) in one write.
    enableAutoPipelining: true,
  }
  const client = new Redis(url, { ...common, commandTimeout: commandTimeoutMs })
  const writer = new Redis(url, { ...common, commandTimeout: patient(commandTimeoutMs) })
  return { client, writer, stop: () => {} }
}

/**
 * Two Redis connections (hot-path commands, and deletes that should land) with a
 * small circuit breaker: a dead or hung Redis costs each request at most one
 * command timeout until the breaker opens, then nothing until a probe succeeds.
 * Nothing waits for Redis: commands fail fast while it is away (no offline
 * queue) and ioredis reconnects in the background. The same holds for a Redis
 * Cluster (`redis+cluster://`), whose clients route each key to its shard.
 */
export function connectRedis({ url, commandTimeoutMs, log, metrics }: RedisOptions) {
  const target = redisTarget(url)
  const cluster = target.kind === 'cluster'
  const { client, writer, stop }: { client: RedisClient; writer: RedisClient; stop: () => void } = cluster
    ? clusterClients(target, commandTimeoutMs)
    : singleClients(target.url, commandTimeoutMs)
  // A cluster command may be redirected (MOVED, ASK) to another node, each hop with its own timeout:
  // the hot path bounds the whole of it, as it waits on one server's command.
  const bounded = <T>(promise: Promise<T>) => (cluster ? withDeadline(promise, commandTimeoutMs) : promise)

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
  async function run<T>(op: string, command: (redis: RedisClient) => Promise<T>): Promise<T | undefined> {
    if (!available()) {
      metrics.redisErrors.inc({ op })
      return undefined
    }
    try {
      const result = await bounded(command(client))
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
  async function write<T>(op: string, command: (redis: RedisClient) => Promise<T>): Promise<T | undefined> {
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
    /** True for a Redis Cluster: no command may touch keys of two slots. */
    cluster,
    run,
    write,
    /** 'up' when commands go through, 'degraded' while Redis is away or the breaker is open. */
    state: (): 'up' | 'degraded' => (available() ? 'up' : 'degraded'),
    async close() {
      stop()
      client.disconnect()
      writer.disconnect()
    },
  }
}

export type RedisConnection = ReturnType<typeof connectRedis>
