import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildApp } from './app.ts'
import type { Config } from './config.ts'
import { loggerOptions } from './logger.ts'

/** Builds the app, listens, and closes gracefully on SIGINT/SIGTERM (in-flight requests finish first). */
export async function serve(config: Config): Promise<void> {
  const logger = pino(loggerOptions(config))
  const app = await buildApp(config, { logger })
  // Under the 10 s a container runtime waits before it kills.
  const grace = closeWithGrace({ delay: 8000, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'closing after an error')
    else logger.info({ signal }, 'closing')
    await app.close()
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
