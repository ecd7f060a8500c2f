/**
 * CPU per request of the hot paths as a factor of the bare route sent the same request, measured in
 * interleaved slices: the service and the bare route run side by side (two children), and the load
 * alternates between them (bare, service, service, bare, …) a few seconds at a time. Whatever else
 * the machine does then weighs on both alike, which one long row after another cannot promise on a
 * busy machine. Each round gives one factor (the service's slices over the bare route's); the table
 * shows their median and spread.
 */
import type { Server } from './child.ts'
import { measure } from './load.ts'
import { SCENARIOS, type Scenario } from './scenarios.ts'

/** The paths the 1.20× goal is about, each with the bare row sent the same request. */
export const PAIRS = [
  { service: 'introspect, L1 hit', bare: 'bare Fastify route', goal: 1.2 },
  {
    service: 'forward-auth (gateway sub-request), L1 hit',
    bare: 'bare Fastify route, forward-auth request',
    goal: 1.2,
  },
  {
    service: 'introspect JWT, warm (signature verified before, L1 hit)',
    bare: 'bare Fastify route, JWT-sized request',
    goal: 1.3,
  },
] as const

export interface PairedRow {
  name: string
  goal: number
  /** One factor per round, in the order measured. */
  factors: number[]
  /** CPU µs per request of each side, medians over the rounds. */
  serviceUs: number
  bareUs: number
}

const scenario = (name: string): Scenario => {
  const found = SCENARIOS.find((s) => s.name === name)
  if (!found) throw new Error(`no scenario named ${name}`)
  return found
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/** CPU µs per answer of one slice of load on one server. */
async function slice(server: Server, s: Scenario, seconds: number): Promise<number> {
  const before = await server.stats()
  const measured = await Promise.race([
    measure({
      port: server.port,
      path: s.path,
      bodies: s.bodies(server.tokens),
      get: s.get?.(server.tokens),
      expect: s.expect,
      seconds,
    }),
    server.died,
  ])
  const after = await server.stats()
  if (measured.wrongBodies > 0 || measured.non2xx > 0 || measured.errors > 0)
    throw new Error(`${s.name}: ${measured.wrongBodies} wrong answers, ${measured.failures || 'no'} failures`)
  return (after.cpuMicros - before.cpuMicros) / Math.max(1, measured.requests)
}

/**
 * Runs `rounds` rounds per pair on two warm servers; each round is bare, service, service, bare
 * (the next round mirrors it), so a trend in the machine's load cancels within a round.
 */
export async function measurePairs(
  service: Server,
  bare: Server,
  {
    rounds,
    seconds,
    warmupSeconds,
    only,
  }: { rounds: number; seconds: number; warmupSeconds: number; only: RegExp | null },
  progress: (line: string) => void,
): Promise<PairedRow[]> {
  const rows: PairedRow[] = []
  for (const pair of PAIRS) {
    if (only && !only.test(pair.service)) continue
    const s = scenario(pair.service)
    const b = scenario(pair.bare)
    progress(`… paired: ${pair.service}`)
    await slice(bare, b, warmupSeconds)
    await slice(service, s, warmupSeconds)
    const factors: number[] = []
    const serviceUs: number[] = []
    const bareUs: number[] = []
    for (let round = 0; round < rounds; round++) {
      const bareFirst = round % 2 === 0
      const sides = bareFirst ? ([bare, service] as const) : ([service, bare] as const)
      const first = await slice(sides[0], bareFirst ? b : s, seconds)
      const second = await slice(sides[1], bareFirst ? s : b, seconds)
      const third = await slice(sides[1], bareFirst ? s : b, seconds)
      const fourth = await slice(sides[0], bareFirst ? b : s, seconds)
      const [svc, base] = bareFirst
        ? [(second + third) / 2, (first + fourth) / 2]
        : [(first + fourth) / 2, (second + third) / 2]
      serviceUs.push(svc)
      bareUs.push(base)
      factors.push(svc / base)
    }
    rows.push({
      name: pair.service,
      goal: pair.goal,
      factors,
      serviceUs: median(serviceUs),
      bareUs: median(bareUs),
    })
  }
  return rows
}

/** The paired rows as Markdown. */
export function pairedTable(rows: PairedRow[]): string {
  const lines = [
    '| path | service CPU µs/req | bare, same request | CPU × bare (median) | rounds (min–max) | goal | met |',
    '| --- | ---: | ---: | ---: | --- | --- | --- |',
  ]
  for (const row of rows) {
    const factor = median(row.factors)
    const spread = `${Math.min(...row.factors).toFixed(2)}–${Math.max(...row.factors).toFixed(2)}`
    lines.push(
      `| ${row.name} | ${row.serviceUs.toFixed(1)} | ${row.bareUs.toFixed(1)} | ${factor.toFixed(2)} | ${spread} | ≤ ${row.goal.toFixed(2)} | ${factor <= row.goal ? 'yes' : '**no**'} |`,
    )
  }
  return lines.join('\n')
}
