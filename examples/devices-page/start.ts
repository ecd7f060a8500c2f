import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildDevicesPage } from './server.ts'

/*
 * `npm run example:devices-page`: the page with <session-devices> on http://127.0.0.1:3000. Without
 * SESSION_AUTHORITY_URL and SESSION_AUTHORITY_API_KEY it first starts a session-authority of its own
 * (embedded Postgres, DEV_MODE, the development admin key) that reads the session cookie and believes
 * this example's X-Forwarded-For, and stops it again on Ctrl-C.
 */

// The README's development key: the service takes it only with DEV_MODE, on a loopback address.
const DEV_ADMIN_KEY = 'dev-admin-key-change-me-0123456789abcdef'
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
// Kept across runs (a first start makes the database: half a minute), outside the checkout.
const DATA_DIR = join(tmpdir(), 'session-authority-devices-page-example')
const env = process.env
// The service's setting and this example's cookie: one name for both.
const COOKIE = env.FORWARD_AUTH_COOKIE ?? 'sa_session'

let service: ChildProcess | undefined
let app: ReturnType<typeof buildDevicesPage> | undefined
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
  if (await answers(`${url}/readyz`)) {
    return fail(
      `something already answers on ${url}. If it is session-authority with FORWARD_AUTH_COOKIE=${COOKIE} and TRUST_PROXY=127.0.0.1, use it:\n` +
        `  SESSION_AUTHORITY_URL=${url} SESSION_AUTHORITY_API_KEY=<its admin key> npm run example:devices-page\n` +
        'or set SESSION_AUTHORITY_PORT to start one on another port.',
    )
  }
  console.log(`starting session-authority on ${url}, embedded Postgres in ${DATA_DIR}`)
  console.log('(the first start makes the database: about half a minute)')
  const serviceEnv: NodeJS.ProcessEnv = {
    ...env,
    DEV_MODE: 'true',
    ADMIN_API_KEY: DEV_ADMIN_KEY,
    HOST: '127.0.0.1',
    PORT: port,
    DATA_DIR,
    LOG_LEVEL: env.LOG_LEVEL ?? 'warn',
    // The self-service API reads the token from this cookie, and the browser's address from this
    // example's X-Forwarded-For (it runs on this machine).
    FORWARD_AUTH_COOKIE: COOKIE,
    TRUST_PROXY: '127.0.0.1',
  }
  service = spawn(process.execPath, ['bin/session-authority.mjs', 'serve'], {
    cwd: ROOT,
    env: serviceEnv,
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

const example = buildDevicesPage({
  sessionAuthorityUrl,
  apiKey,
  cookieName: COOKIE,
  logger: { level: 'warn' },
})
app = example
try {
  const address = await example.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 3000) })
  console.log(
    `devices page example: open ${address} (session-authority at ${sessionAuthorityUrl}; Ctrl-C stops)`,
  )
} catch (err) {
  await fail(`the example could not listen: ${(err as Error).message} (PORT picks another port)`)
}
