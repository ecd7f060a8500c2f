import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { ServerArgs, Stats, ToChild, Tokens, ToParent } from './protocol.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SERVER = fileURLToPath(new URL('./server.ts', import.meta.url))
const START_TIMEOUT_MS = 30_000
// BENCH_CPU_PROF=1 profiles every server child; Node writes the profile when the child exits.
const PROFILE = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir=.bench/profiles'] : []
const REPLY_TIMEOUT_MS = 10_000

/** Every server child still alive, so they are killed however the run ends. */
const running = new Set<ChildProcess>()

/** Kills the children this process started (each by its own pid), e.g. on failure or Ctrl-C. */
export function killServers(): void {
  for (const child of running) child.kill('SIGKILL')
  running.clear()
}

export interface Server {
  port: number
  /** The tokens of the sessions the child opened (null for the bare route). */
  tokens: Tokens | null
  /** Rejects if the child exits before stop(): race a measurement with it to fail fast. */
  died: Promise<never>
  stats(): Promise<Stats>
  stop(): Promise<void>
}

/** The next message of one type from the child; fails if the child reports a failure, exits or stays silent. */
function reply<T extends ToParent['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs: number,
): Promise<Extract<ToParent, { type: T }>> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      reject(new Error(`server exited (code ${child.exitCode}, signal ${child.signalCode})`))
      return
    }
    const done = (err: Error | null, message?: Extract<ToParent, { type: T }>) => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
      if (err) reject(err)
      else resolve(message as Extract<ToParent, { type: T }>)
    }
    const onMessage = (message: ToParent) => {
      if (message.type === type) done(null, message as Extract<ToParent, { type: T }>)
      else if (message.type === 'failed') done(new Error(`server failed:\n${message.message}`))
    }
    const onExit = (code: number | null, signal: string | null) =>
      done(new Error(`server exited (code ${code}, signal ${signal}) while waiting for "${type}"`))
    const timer = setTimeout(
      () => done(new Error(`server sent no "${type}" within ${timeoutMs} ms`)),
      timeoutMs,
    )
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/** Starts a server child and waits until it listens (and, for the service, has a session open). */
export async function startServer(args: ServerArgs): Promise<Server> {
  const child = spawn(process.execPath, [...PROFILE, '--import', 'tsx', SERVER, JSON.stringify(args)], {
    cwd: ROOT,
    // The child's log (warnings only) goes to the terminal; the protocol goes over IPC.
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  running.add(child)
  child.once('exit', () => running.delete(child))
  // A failed send (the channel closed as the child died) must not crash the run; its exit is reported instead.
  child.on('error', (err) => console.error(`server child: ${err.message}`))
  const send = (message: ToChild) => child.send(message)
  let stopping = false
  const died = new Promise<never>((_, reject) => {
    child.once('exit', (code, signal) => {
      if (!stopping) reject(new Error(`server exited during the run (code ${code}, signal ${signal})`))
    })
  })
  // Nobody may be racing it at the moment it rejects.
  died.catch(() => {})

  try {
    const { port, tokens } = await reply(child, 'ready', START_TIMEOUT_MS)
    return {
      port,
      tokens,
      died,
      async stats() {
        const answer = reply(child, 'stats', REPLY_TIMEOUT_MS)
        send({ type: 'stats' })
        const { rss, cpuMicros, loopDelayMaxMs, answered } = await answer
        return { rss, cpuMicros, loopDelayMaxMs, answered }
      },
      async stop() {
        stopping = true
        if (child.exitCode !== null || child.signalCode !== null) return
        const exited = new Promise((resolve) => child.once('exit', resolve))
        send({ type: 'stop' })
        const timer = setTimeout(() => child.kill('SIGKILL'), REPLY_TIMEOUT_MS)
        await exited
        clearTimeout(timer)
      },
    }
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  }
}
