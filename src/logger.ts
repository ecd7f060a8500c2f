import type { BaseLogger, LoggerOptions } from 'pino'
import type { Config } from './config.ts'

/**
 * pino settings shared by the server and the CLI. Secrets are censored by path
 * wherever they could appear: request headers, and any logged object carrying a
 * token, refresh token or API key.
 */
export function loggerOptions(config: Pick<Config, 'logLevel'>): LoggerOptions {
  return {
    level: config.logLevel,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'req.headers["proxy-authorization"]',
        'req.headers["x-api-key"]',
        'headers.authorization',
        'headers.cookie',
        'token',
        'refresh_token',
        'access_token',
        'key',
        'apiKey',
        '*.token',
        '*.refresh_token',
        '*.access_token',
        '*.key',
        '*.apiKey',
        'config.adminApiKey',
        'config.signingKeyEncryptionKey',
        'config.databaseUrl',
        'config.redisUrl',
      ],
      censor: '[redacted]',
    },
  }
}

/** The logging the domain and the data layer need (a pino or Fastify logger). */
export type Log = Pick<BaseLogger, 'error' | 'warn' | 'info' | 'debug'>
