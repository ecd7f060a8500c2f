/**
 * A load at a fixed rate, spread evenly over time (open loop): request i is due at i / rate seconds
 * and is sent then, on a free keep-alive connection or, when all are busy, as soon as one frees up.
 * Its latency counts from when it was due, so a server that falls behind is charged for the wait.
 * This is what "p99 at half the bare route's rate" means; autocannon's fixed rate instead spends
 * each connection's quota for the second as fast as it can, so its requests arrive in bursts.
 */
import http from 'node:http'
import { CONNECTIONS, type Load, type Measurement } from './load.ts'
import { ADMIN_KEY } from './protocol.ts'

const TICK_MS = 1

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

export function measurePaced(load: Load & { rate: number }): Promise<Measurement> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS })
  const latencies = new Float64Array(Math.ceil(load.rate * load.seconds) + 1)
  let answered = 0
  let sent = 0
  let non2xx = 0
  let errors = 0
  let wrongBodies = 0
  const statuses = new Map<number, number>()
  const total = Math.floor(load.rate * load.seconds)
  const started = performance.now()

  return new Promise((resolve) => {
    const finish = () => {
      agent.destroy()
      const sorted = latencies.subarray(0, answered).sort()
      const seconds = (performance.now() - started) / 1000
      resolve({
        rps: (answered + non2xx) / seconds,
        requests: answered + non2xx + wrongBodies,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        non2xx,
        errors,
        wrongBodies,
        failures: [...statuses].map(([code, n]) => `${code}×${n}`).join(', '),
      })
    }
    let settled = 0
    const settle = () => {
      if (++settled === total) finish()
    }

    const send = (due: number, body: string) => {
      const request = http.request(
        {
          agent,
          host: '127.0.0.1',
          port: load.port,
          path: load.path,
          method: load.get ? 'GET' : 'POST',
          headers: load.get ?? {
            authorization: `Bearer ${ADMIN_KEY}`,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
        },
        (response) => {
          const chunks: Buffer[] = []
          response.on('data', (chunk: Buffer) => chunks.push(chunk))
          response.on('end', () => {
            const status = response.statusCode ?? 0
            if (status < 200 || status > 299) {
              non2xx++
              statuses.set(status, (statuses.get(status) ?? 0) + 1)
            } else if (!load.expect(Buffer.concat(chunks).toString())) wrongBodies++
            else latencies[answered++] = performance.now() - due
            settle()
          })
        },
      )
      request.on('error', () => {
        errors++
        settle()
      })
      request.end(load.get ? undefined : body)
    }

    const timer = setInterval(() => {
      const elapsed = (performance.now() - started) / 1000
      const due = Math.min(total, Math.floor(elapsed * load.rate))
      for (; sent < due; sent++) {
        send(started + (sent / load.rate) * 1000, load.bodies[sent % load.bodies.length] as string)
      }
      if (sent === total) clearInterval(timer)
    }, TICK_MS)
  })
}
