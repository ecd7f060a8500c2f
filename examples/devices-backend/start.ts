import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runExample } from '../shared/run-example.ts'
import { buildExample } from './server.ts'

// `npm run example`: the devices example, with a development session-authority of its own unless
// SESSION_AUTHORITY_URL and SESSION_AUTHORITY_API_KEY name one (see ../shared/run-example.ts).

/** TRUST_PROXY: a hop count, or addresses and CIDRs, comma-separated. */
const trustProxy = (value: string | undefined) =>
  value && /^\d+$/.test(value) ? Number(value) : value || undefined

await runExample({
  name: 'devices example',
  dataDir: join(tmpdir(), 'session-authority-devices-example'),
  // TRUST_PROXY is the example's own setting, not the service's (which has its own meaning and format).
  serviceEnv: { TRUST_PROXY: undefined },
  alreadyRunning: (url) =>
    `something already answers on ${url}. If it is session-authority started with the README's settings, use it:\n` +
    `  SESSION_AUTHORITY_URL=${url} SESSION_AUTHORITY_API_KEY=dev-admin-key-change-me-0123456789abcdef npm run example\n` +
    'or set SESSION_AUTHORITY_PORT to start one on another port.',
  build: (sessionAuthorityUrl, apiKey) =>
    buildExample({
      sessionAuthorityUrl,
      apiKey,
      trustProxy: trustProxy(process.env.TRUST_PROXY),
      logger: { level: 'warn' },
    }),
})
