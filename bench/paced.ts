/**
 * A load at a fixed rate, spread evenly over time (open loop): request i is due at i / rate seconds
 * and is sent then, on a free keep-alive connection or, when all are busy, as soon as one frees up.
 * Its latency counts from when it was due, so a server that falls behind is charged for the wait.
 * This is what "p99 at a fixed rate" means; autocannon's fixed rate instead spends each connection's
 * quota for the second as fast as it can, so its requests arrive in bursts.
 *
 * The client is plain sockets with each request's bytes prepared once, and reads only the status,
 * Content-Length and body of each answer: Node's HTTP client would cost the generator more CPU than
 * the server spends, and its own delays would count as the server's.
 */
import net from 'node:net'
import { CONNECTIONS, type Load, type Measurement, percentile } from './load.ts'
import { ADMIN_KEY } from './protocol.ts'

const TICK_MS = 1
const HEAD_END = Buffer.from('\r\n\r\n')

/** The bytes of each request the load sends, in rotation. */
function requestBytes(load: Load): Buffer[] {
  if (load.get) {
    const headers = Object.entries(load.get).map(([name, value]) => `${name}: ${value}\r\n`)
    return [Buffer.from(`GET ${load.path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${headers.join('')}\r\n`)]
  }
  return load.bodies.map((body) =>
    Buffer.from(
      `POST ${load.path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${ADMIN_KEY}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    ),
  )
}

/** A keep-alive connection that sends a request when it is free (one in flight at a time). */
interface Connection {
  send(due: number, bytes: Buffer): void
}

export function measurePaced(load: Load & { rate: number }): Promise<Measurement> {
  const requests = requestBytes(load)
  const total = Math.floor(load.rate * load.seconds)
  const latencies = new Float64Array(total)
  const statuses = new Map<number, number>()
  const result = { answered: 0, non2xx: 0, errors: 0, wrongBodies: 0, settled: 0 }
  /** When each request not yet sent was due (the backlog while every connection is busy). */
  const backlog: number[] = []
  const idle: Connection[] = []
  const sockets: net.Socket[] = []
  let sent = 0
  const started = performance.now()

  return new Promise((resolve) => {
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clearInterval(timer)
      clearTimeout(deadline)
      for (const socket of sockets) socket.destroy()
      const sorted = latencies.subarray(0, result.answered).sort()
      const seconds = (performance.now() - started) / 1000
      resolve({
        rps: (result.answered + result.non2xx + result.wrongBodies) / seconds,
        requests: result.answered + result.non2xx + result.wrongBodies,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        non2xx: result.non2xx,
        errors: result.errors,
        wrongBodies: result.wrongBodies,
        failures: [...statuses].map(([code, n]) => `${code}×${n}`).join(', '),
      })
    }
    const settle = () => {
      if (++result.settled === total) finish()
    }

    const connect = (): Connection => {
      const socket = net.connect({ host: '127.0.0.1', port: load.port, noDelay: true })
      sockets.push(socket)
      let due = 0
      let buffered: Buffer = Buffer.alloc(0)
      const connection: Connection = {
        send(at, bytes) {
          due = at
          socket.write(bytes)
        },
      }
      const next = () => {
        const waiting = backlog.shift()
        if (waiting === undefined) idle.push(connection)
        else connection.send(waiting, requests[sent++ % requests.length] as Buffer)
      }
      socket.on('data', (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
        const headEnd = buffered.indexOf(HEAD_END)
        if (headEnd < 0) return
        const head = buffered.subarray(0, headEnd).toString('latin1')
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        const bodyStart = headEnd + HEAD_END.length
        if (buffered.length < bodyStart + length) return
        const body = buffered.subarray(bodyStart, bodyStart + length).toString('utf8')
        buffered = buffered.subarray(bodyStart + length)
        const status = Number(head.slice(9, 12))
        if (status < 200 || status > 299) {
          result.non2xx++
          statuses.set(status, (statuses.get(status) ?? 0) + 1)
        } else if (!load.expect(body)) result.wrongBodies++
        else latencies[result.answered++] = performance.now() - due
        settle()
        next()
      })
      socket.on('error', () => {
        result.errors++
        settle()
      })
      idle.push(connection)
      return connection
    }
    for (let i = 0; i < CONNECTIONS; i++) connect()

    // A connection that failed leaves its requests unanswered: end the measurement anyway.
    const deadline = setTimeout(finish, (load.seconds + 10) * 1000)
    let scheduled = 0
    const timer = setInterval(() => {
      const now = performance.now()
      const due = Math.min(total, Math.floor(((now - started) / 1000) * load.rate))
      for (; scheduled < due; scheduled++) {
        const at = started + (scheduled / load.rate) * 1000
        const connection = idle.pop()
        if (connection) connection.send(at, requests[sent++ % requests.length] as Buffer)
        else backlog.push(at)
      }
      if (scheduled === total) clearInterval(timer)
    }, TICK_MS)
  })
}
