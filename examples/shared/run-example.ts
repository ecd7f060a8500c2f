import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

/*
 * What the examples' one command does: without SESSION_AUTHORITY_URL and SESSION_AUTHORITY_API_KEY it
 * first starts a session-authority of its own, as the README's `npm start` does (embedded Postgres,
 * DEV_MODE, the development admin key), then the example on http://127.0.0.1:3000 (HOST, PORT), and
 * stops both on Ctrl-C.
 */

// The README's development key: the service takes it only with DEV_MODE, on a loopback address.
const DEV_ADMIN_KEY = 'dev-admin-key-change-me-0123456789abcdef'
const ROOT = fileURLToPath(new URL('../../', import.meta.url))

interface Listening {
  listen(options: { host: string; port: number }): Promise<string>
  close(): Promise<unknown>
}

export interface ExampleRun {
  /** The example's name, as the line that says where to open it calls it. */
  name: string
  /** Where a service started here keeps its embedded Postgres (kept across runs: the first start makes it). */
  dataDir: string
  /** Settings of a service started here, over the process's own (undefined: not passed on). */
  serviceEnv: NodeJS.ProcessEnv
  /** What to say when something already answers on the service's port (its URL given). */
  alreadyRunning: (url: string) => string
  /** The example, for a service and an API key (not listening). */
  build: (sessionAuthorityUrl: string, apiKey: string) => Listening
}

export async function runExample(run: ExampleRun): Promise<void> {
  const env = process.env
  let service: ChildProcess | undefined
  let app: Listening | undefined
  let stopping = false

  /**
   * Closes the example, then the service it started (by its pid), and exits; a second call waits for the
   * first. An example that fails to close still stops its service, and exits 1 saying why.
   */
  async function stop(code: number): Promise<never> {
    if (stopping) return new Promise<never>(() => {})
    stopping = true
    try {
      await app?.close()
    } catch (err) {
      console.error(`could not close the example: ${(err as Error).message}`)
      code = 1
    }
    if (service?.pid && service.exitCode === null && service.signalCode === null) {
      const exited = once(service, 'exit')
      process.kill(service.pid, 'SIGTERM')
      await exited
    }
    process.exit(code)
  }

  function fail(message: string): Promise<never> {
    console.error(message)
    return stop(1)
  }

  async function answers(url: string) {
    try {
      return (await fetch(url)).ok
    } catch {
      return false
    }
  }

  /** Starts `session-authority serve` as a child process and waits until it is ready. */
  async function startService(port: string): Promise<string> {
    const url = `http://127.0.0.1:${port}`
    if (await answers(`${url}/readyz`)) return fail(run.alreadyRunning(url))
    console.log(`starting session-authority on ${url}, embedded Postgres in ${run.dataDir}`)
    console.log('(the first start makes the database: about half a minute)')
    service = spawn(process.execPath, ['bin/session-authority.mjs', 'serve'], {
      cwd: ROOT,
      env: {
        ...env,
        DEV_MODE: 'true',
        ADMIN_API_KEY: DEV_ADMIN_KEY,
        HOST: '127.0.0.1',
        PORT: port,
        DATA_DIR: run.dataDir,
        LOG_LEVEL: env.LOG_LEVEL ?? 'warn',
        ...run.serviceEnv,
      },
      stdio: 'inherit',
    })
    service.on('exit', (code) => {
      if (!stopping) void fail(`session-authority exited (code ${code}); stopping the example`)
    })
    while (!(await answers(`${url}/readyz`))) {
      if (stopping) return stop(0)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    return url
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void stop(0))

  let sessionAuthorityUrl = env.SESSION_AUTHORITY_URL
  let apiKey = env.SESSION_AUTHORITY_API_KEY
  if (!sessionAuthorityUrl !== !apiKey) {
    await fail(
      'set both SESSION_AUTHORITY_URL and SESSION_AUTHORITY_API_KEY, or neither (to start a service here)',
    )
  }
  if (!sessionAuthorityUrl || !apiKey) {
    sessionAuthorityUrl = await startService(env.SESSION_AUTHORITY_PORT ?? '8080')
    apiKey = DEV_ADMIN_KEY
  }

  const example = run.build(sessionAuthorityUrl, apiKey)
  app = example
  try {
    const address = await example.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 3000) })
    console.log(`${run.name}: open ${address} (session-authority at ${sessionAuthorityUrl}; Ctrl-C stops)`)
  } catch (err) {
    await fail(`the example could not listen: ${(err as Error).message} (PORT picks another port)`)
  }
}
