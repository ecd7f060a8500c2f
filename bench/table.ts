import type { Measurement } from './load.ts'
import type { Answered } from './protocol.ts'
import type { Scenario } from './scenarios.ts'

export interface Row {
  scenario: Scenario
  measured: Measurement
  /** The fixed rate the row asked for, req/s (unset: as fast as the server answers). */
  rate?: number
  /** Server RSS at the end of the row, bytes. */
  rss: number
  /**
   * Server CPU time (user + system) in the measured window over the answers in
   * it, µs: steadier than req/s on a busy machine, since the load generator's
   * share of the CPU does not enter it.
   */
  cpuPerRequestUs: number
  /** The server's longest event-loop stall in the measured window, ms. */
  loopDelayMaxMs: number
  /** Where introspections were answered during the measured window (null: no cache involved). */
  answered: Answered | null
}

/** Why a row's numbers cannot be trusted (failed requests, answers it did not mean to measure); empty if none. */
export function problems(row: Row): string[] {
  const { measured: m, answered } = row
  const found: string[] = []
  if (m.non2xx > 0) found.push(`${m.non2xx} non-2xx answers (${m.failures})`)
  if (m.errors > 0) found.push(`${m.errors} connection errors or timeouts`)
  if (m.wrongBodies > 0) found.push(`${m.wrongBodies} answers with an unexpected body`)
  if (answered && answered.redisErrors > 0) found.push(`${answered.redisErrors} Redis errors (fell back)`)
  return found
}

const fixed = (n: number, digits: number) => (Number.isFinite(n) ? n.toFixed(digits) : '—')
export const count = (n: number) => Math.round(n).toLocaleString('en')

function share(n: number, total: number): string {
  if (n === total) return '100%'
  const percent = (100 * n) / total
  return percent < 0.1 ? '<0.1%' : `${fixed(percent, 1)}%`
}

/** "L1 99.9% · Postgres 0.1%": the share of lookups each level answered. */
function answeredFrom(a: Answered | null): string {
  const total = a ? a.l1 + a.redis + a.postgres : 0
  if (!a || total === 0) return '—'
  const parts: Array<[string, number]> = [
    ['L1', a.l1],
    ['Redis', a.redis],
    ['Postgres', a.postgres],
  ]
  return parts
    .filter(([, n]) => n > 0)
    .map(([level, n]) => `${level} ${share(n, total)}`)
    .join(' · ')
}

function judge(row: Row, ratio: number): { target: string; met: string } {
  const { target } = row.scenario
  if (!target) return { target: '—', met: '—' }
  if ('minRatio' in target) {
    return { target: `≥ ${fixed(target.minRatio, 2)}`, met: ratio >= target.minRatio ? 'yes' : '**no**' }
  }
  return { target: `p99 < ${target.maxP99Ms} ms`, met: row.measured.p99 < target.maxP99Ms ? 'yes' : '**no**' }
}

/** The results as one Markdown table. */
export function markdown(rows: Row[], bareRps: number): string {
  const baselineOf = (row: Row) => rows.find((r) => r.scenario.name === row.scenario.baseline)
  const sameRequestRps = (row: Row) => baselineOf(row)?.measured.rps
  // CPU is compared with the bare route sent the same request, else with the first bare row.
  const bareCpu = rows.find((r) => r.scenario.mode === 'bare')?.cpuPerRequestUs
  const cpuBaseline = (row: Row) => baselineOf(row)?.cpuPerRequestUs ?? bareCpu
  const header = [
    'scenario',
    'req/s',
    'p50 ms',
    'p99 ms',
    'ratio to bare',
    'to bare, same request',
    'server CPU µs/req',
    'CPU × bare, same request',
    'target',
    'met',
    'answered from',
    'server RSS MB',
    'loop stall ms',
    'non-2xx',
    'conn. errors',
    'wrong body',
  ]
  const lines = rows.map((row) => {
    const { measured: m } = row
    const ratio = m.rps / bareRps
    const sameRequest = sameRequestRps(row)
    const { target, met } = judge(row, ratio)
    return [
      row.rate ? `${row.scenario.name} (${count(row.rate)} asked)` : row.scenario.name,
      count(m.rps),
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      fixed(ratio, 2),
      sameRequest ? fixed(m.rps / sameRequest, 2) : '—',
      fixed(row.cpuPerRequestUs, 1),
      row.scenario.mode === 'bare' ? '—' : fixed(row.cpuPerRequestUs / (cpuBaseline(row) ?? Number.NaN), 2),
      target,
      met,
      answeredFrom(row.answered),
      fixed(row.rss / 2 ** 20, 0),
      fixed(row.loopDelayMaxMs, 0),
      String(m.non2xx),
      String(m.errors),
      String(m.wrongBodies),
    ]
  })
  // Text columns left, numbers right.
  const rule = header.map((_, i) => ([0, 8, 9, 10].includes(i) ? '---' : '---:'))
  return [header, rule, ...lines].map((cells) => `| ${cells.join(' | ')} |`).join('\n')
}
