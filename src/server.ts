import pino, { type Logger } from 'pino'
import { buildApp } from './app.ts'
import type { Config } from './config.ts'
import { loggerOptions } from './logger.ts'

/** Under the 10 s a container runtime waits before it kills. */
const CLOSE_DEADLINE_MS = 8000
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/**
 * Runs close once, on the first stop signal or uncaught error, then exits: 0 after a clean close, 1 after
 * an error or when the close outlasts the deadline. One stop often arrives as several signals (a signal to
 * the process group reaches the service directly and again relayed by npm or a runner), so a signal during the close
 * is the same stop: cutting the close short would lose the pending last-seen writes.
 */
function closeOnStop(log: Logger, close: () => Promise<void>) {
  let closing = false
  let failed = false
  const begin = () => {
    if (closing) return
    closing = true
    setTimeout(() => {
      log.error(`the close did not finish within ${CLOSE_DEADLINE_MS} ms; exiting`)
      process.exit(1)
    }, CLOSE_DEADLINE_MS)
    close().then(
      () => process.exit(failed ? 1 : 0),
      (err: unknown) => {
        log.error({ err }, 'the close failed')
        process.exit(1)
      },
    )
  }
  const onSignal = (signal: NodeJS.Signals) => {
    log.info({ signal }, closing ? 'already closing (the same stop)' : 'closing')
    begin()
  }
  const onError = (err: unknown) => {
    failed = true
    log.error({ err }, closing ? 'error while closing' : 'closing after an error')
    begin()
  }
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal)
  process.on('uncaughtException', onError)
  process.on('unhandledRejection', onError)
  return {
    uninstall() {
      for (const signal of STOP_SIGNALS) process.off(signal, onSignal)
      process.off('uncaughtException', onError)
      process.off('unhandledRejection', onError)
    },
  }
}

/** Builds the app, listens, and closes gracefully on SIGINT/SIGTERM (in-flight requests finish first). */
export async function serve(config: Config): Promise<void> {
  const logger = pino(loggerOptions(config))
  const app = await buildApp(config, { logger })
  const grace = closeOnStop(logger, async () => {
    // Node closes the kept-alive connections idle when the close starts; one whose request finishes during
    // the close would hold it open for its keep-alive timeout (72 s), past the deadline and the last writes.
    const sweep = setInterval(() => app.server.closeIdleConnections(), 100)
    try {
      await app.close()
    } finally {
      clearInterval(sweep)
    }
  })
  try {
    await app.listen({ host: config.host, port: config.port })
  } catch (err) {
    // Not listening (port taken…): close everything so the process exits non-zero now.
    grace.uninstall()
    await app.close()
    throw err
  }
}
