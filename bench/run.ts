/**
 * `npm run bench`: loads each scenario on a loopback server child for a fixed
 * time after a warm-up, and prints one Markdown table (also written to
 * .bench/last.md). Exits non-zero when the run failed or measured failures.
 *
 * For investigating, not for the published table: BENCH_SECONDS changes the
 * measured time per row, BENCH_ONLY=<regexp> runs only the matching rows (and
 * the bare route, which the ratios need; .bench/last.md is then left alone),
 * BENCH_CPU_PROF=1 writes a CPU profile of each server child to .bench/profiles/.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import { killServers, type Server, startServer } from './child.ts'
import { buildDist } from './compiled.ts'
import { CONNECTIONS, measure } from './load.ts'
import { measurePaced } from './paced.ts'
import { measurePairs, type PairedRow, pairedTable } from './paired.ts'
import type { Answered, ServerArgs, ServerMode } from './protocol.ts'
import { SCENARIOS } from './scenarios.ts'
import { count, markdown, problems, type Row } from './table.ts'
import { measureVerification, verificationTable } from './verify.ts'

// Entries the L1 memory row fills (BENCH_MEMORY_ENTRIES); 0 leaves the row out.
const MEMORY_ENTRIES = Number(process.env.BENCH_MEMORY_ENTRIES ?? 200_000)

/** Bytes per cached session, measured in a child of its own (it needs --expose-gc, and a clean heap). */
function measureL1Memory(): { heapBytesPerEntry: number; rssBytesPerEntry: number; rssMb: number } | null {
  if (MEMORY_ENTRIES <= 0) return null
  const script = new URL('./memory.ts', import.meta.url).pathname
  const out = execFileSync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', script, String(MEMORY_ENTRIES)],
    {
      encoding: 'utf8',
    },
  )
  return JSON.parse(out.trim().split('\n').pop() as string)
}

// The machine's Postgres and Redis, as the tests use them (same overrides).
const DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
// JIT, connection pools and caches settle during the warm-up; only the measured window counts.
const WARMUP_SECONDS = 3
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10)
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : null
const OUTPUT = new URL('../.bench/last.md', import.meta.url)
// The interleaved CPU rounds (see paired.ts): BENCH_ROUNDS rounds of four BENCH_SLICE_SECONDS slices per path.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SLICE_SECONDS = Number(process.env.BENCH_SLICE_SECONDS ?? 3)
// BENCH_PAIRED_ONLY=1: only those rounds (no rows, verification or memory; .bench/last.md is left alone).
const PAIRED_ONLY = process.env.BENCH_PAIRED_ONLY === '1'

const id = randomBytes(6).toString('hex')
// Private to this run, so it never touches another run's or a test's data.
const stores = { schema: `bench_${id}`, redisKeyPrefix: `bench_${id}:` }

/**
 * Kills the server children and drops the run's schema and Redis keys; runs
 * however the run ends. Never throws (that would hide why the run failed):
 * what it could not clean up is reported, and the run then fails.
 */
async function cleanUp(): Promise<boolean> {
  killServers()
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} })
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  let clean = true
  const attempt = async (what: string, work: () => Promise<unknown>) => {
    try {
      await work()
    } catch (err) {
      clean = false
      console.error(`could not ${what}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  await attempt(
    `drop schema ${stores.schema}`,
    () => sql`drop schema if exists ${sql(stores.schema)} cascade`,
  )
  await attempt(`delete Redis keys ${stores.redisKeyPrefix}*`, async () => {
    await redis.connect()
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${stores.redisKeyPrefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await redis.unlink(...keys)
      cursor = next
    } while (cursor !== '0')
  })
  await sql.end({ timeout: 5 }).catch(() => {})
  redis.disconnect()
  return clean
}

/** Which code was measured: the commit, and whether the working tree differed from it. */
function revision(): string {
  try {
    const described = execFileSync('git', ['describe', '--always', '--dirty'], { encoding: 'utf8' }).trim()
    return described.replace(/-dirty$/, ' + uncommitted changes')
  } catch {
    return 'unknown revision'
  }
}

/** How many lookups each level answered between two readings of the service's counters. */
function delta(before: Answered | null, after: Answered | null): Answered | null {
  if (!before || !after) return null
  return {
    l1: after.l1 - before.l1,
    redis: after.redis - before.redis,
    postgres: after.postgres - before.postgres,
    redisErrors: after.redisErrors - before.redisErrors,
  }
}

async function runScenarios(): Promise<{ rows: Row[]; bareRps: number }> {
  const rows: Row[] = []
  let bareRps = 0
  let server: Server | null = null
  let serverMode: ServerMode | null = null
  try {
    for (const scenario of SCENARIOS) {
      if (ONLY && scenario.mode !== 'bare' && !ONLY.test(scenario.name)) continue
      if (!server || !scenario.sameServer || serverMode !== scenario.mode) {
        await server?.stop()
        const args: ServerArgs = {
          mode: scenario.mode,
          databaseUrl: DATABASE_URL,
          redisUrl: REDIS_URL,
          ...stores,
        }
        server = await startServer(args)
        serverMode = scenario.mode
      }
      console.error(`… ${scenario.name}`)
      const rate = scenario.rate?.(bareRps)
      const load = {
        port: server.port,
        path: scenario.path,
        bodies: scenario.bodies(server.tokens),
        get: scenario.get?.(server.tokens),
        expect: scenario.expect,
        rate,
      }
      // A fixed rate is sent evenly paced (paced.ts), as fast as the server answers by autocannon.
      const run = (seconds: number) =>
        load.rate ? measurePaced({ ...load, rate: load.rate, seconds }) : measure({ ...load, seconds })
      await Promise.race([run(WARMUP_SECONDS), server.died])
      const before = await server.stats()
      const measured = await Promise.race([run(SECONDS), server.died])
      const after = await server.stats()
      // Ratios are to the first bare run (the fixed-rate row needs it before the second).
      if (scenario.mode === 'bare' && bareRps === 0) bareRps = measured.rps
      rows.push({
        scenario,
        measured,
        rate,
        rss: after.rss,
        cpuPerRequestUs: (after.cpuMicros - before.cpuMicros) / Math.max(1, measured.requests),
        loopDelayMaxMs: after.loopDelayMaxMs,
        answered: delta(before.answered, after.answered),
      })
    }
  } finally {
    await server?.stop()
  }
  return { rows, bareRps }
}

/** The CPU factors of the hot paths, on a service and a bare route that run side by side. */
async function runPaired(): Promise<PairedRow[]> {
  if (ROUNDS <= 0) return []
  const args = { databaseUrl: DATABASE_URL, redisUrl: REDIS_URL, ...stores }
  const service = await startServer({ ...args, mode: 'cached' })
  try {
    const bare = await startServer({ ...args, mode: 'bare' })
    try {
      return await measurePairs(
        service,
        bare,
        { rounds: ROUNDS, seconds: SLICE_SECONDS, warmupSeconds: WARMUP_SECONDS, only: ONLY },
        (line) => console.error(line),
      )
    } finally {
      await bare.stop()
    }
  } finally {
    await service.stop()
  }
}

async function main(): Promise<number> {
  const started = performance.now()
  const measuredCode = revision()
  // Anything else busy on the machine skews every row: say so next to the numbers.
  const loadBefore = os.loadavg()[0] ?? 0
  let result: Awaited<ReturnType<typeof runScenarios>>
  let verification: ReturnType<typeof measureVerification>
  let memory: ReturnType<typeof measureL1Memory> = null
  let paired: PairedRow[] = []
  let clean = false
  try {
    console.error('… compiling the service into dist/ (the children run what ships)')
    buildDist()
    // First, while nothing else runs: it uses this process's one core.
    console.error('… signature verification on one core')
    verification = PAIRED_ONLY ? [] : measureVerification(ONLY ? 1 : 3)
    result = PAIRED_ONLY ? { rows: [], bareRps: 0 } : await runScenarios()
    paired = await runPaired()
    console.error(`… L1 memory with ${count(MEMORY_ENTRIES)} cached sessions`)
    memory = ONLY || PAIRED_ONLY ? null : measureL1Memory()
  } finally {
    clean = await cleanUp()
  }
  const { rows, bareRps } = result
  const seconds = (performance.now() - started) / 1000
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU'
  // The bare route itself, as first and last measured (not the bare rows sent other requests).
  const baselines = new Set(rows.map((row) => row.scenario.baseline))
  const bares = rows
    .filter((row) => row.scenario.mode === 'bare' && !row.scenario.rate && !baselines.has(row.scenario.name))
    .map((row) => count(row.measured.rps))
  const report = [
    `Loopback, ${CONNECTIONS} connections, pipelining 1, ${WARMUP_SECONDS} s warm-up then ${SECONDS} s per row;`,
    `server in its own process; Node ${process.version}, ${os.cpus().length} × ${cpu}; ${new Date().toISOString()};`,
    `load average ${loadBefore.toFixed(2)} before the run; code ${measuredCode}.`,
    '',
    markdown(rows, bareRps),
    '',
    `- The bare route did ${bares.join(' then ')} req/s: ratios are no steadier than that.`,
    '- ratio to bare: to the first bare row (targets are judged on it). to bare, same request: to a bare row',
    '  sent requests of the same shape and size (a JWT-sized body; a GET with the gateway headers), stricter.',
    "- server CPU µs/req: the server process's user + system time in the measured window over the answers",
    "  in it; steadier than req/s on a busy machine (the load generator's share does not enter it). CPU × bare,",
    '  same request: that over the bare row sent the same request (else the first bare row).',
    '- answered from: where the service answered introspections in the measured window (its own counters).',
    '- loop stall: the longest the server event loop was blocked in the measured window.',
    '- Fixed-rate row: requests evenly spaced in time (open loop, bench/paced.ts), each latency counted from',
    '  when the request was due, so waiting for a free connection counts too.',
    '- p50/p99: 2xx responses only, exact (not rounded to whole ms). RSS includes the TypeScript loader',
    '  the server runs under; compare with the bare row.',
    '',
    ...(paired.length > 0
      ? [
          `CPU per request, interleaved: the service and the bare route side by side, the load alternating between`,
          `them in ${SLICE_SECONDS} s slices (bare, service, service, bare; the next round mirrored), ${ROUNDS} rounds per path:`,
          '',
          pairedTable(paired),
          '',
        ]
      : []),
    'Access JWT signature verification, in process, nothing cached, distinct tokens:',
    '',
    verificationTable(verification),
    '',
    ...(memory
      ? [
          `L1 memory: ${count(MEMORY_ENTRIES)} sessions cached (typical metadata, as a Redis hit delivers them) cost`,
          `${count(memory.heapBytesPerEntry)} bytes of heap each, ${count(memory.rssBytesPerEntry)} of RSS; the process held ${count(memory.rssMb)} MB.`,
          '',
        ]
      : []),
    `Total run time: ${seconds.toFixed(0)} s.`,
  ].join('\n')
  console.log(`\n${report}`)
  if (!ONLY && !PAIRED_ONLY) {
    await mkdir(new URL('.', OUTPUT), { recursive: true })
    await writeFile(OUTPUT, `${report}\n`)
  }

  // Numbers measured over failed requests would flatter (or slander) the service: fail the run.
  const failed = rows.flatMap((row) => problems(row).map((p) => `${row.scenario.name}: ${p}`))
  for (const line of failed) console.error(`measurement problem: ${line}`)
  return failed.length > 0 || !clean ? 1 : 0
}

// Children must not outlive the run, whichever way it ends.
process.on('exit', killServers)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping`)
    cleanUp().finally(() => process.exit(130))
  })
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err)
    process.exit(1)
  },
)
