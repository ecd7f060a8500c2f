import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runExample } from '../shared/run-example.ts'
import { buildDevicesPage } from './server.ts'

// `npm run example:devices-page`: the page with <session-devices>, with a development session-authority
// of its own unless SESSION_AUTHORITY_URL and SESSION_AUTHORITY_API_KEY name one (see
// ../shared/run-example.ts). A service started here reads the session cookie and believes this
// example's X-Forwarded-For.

// The service's setting and this example's cookie: one name for both.
const COOKIE = process.env.FORWARD_AUTH_COOKIE ?? 'sa_session'

await runExample({
  name: 'devices page example',
  dataDir: join(tmpdir(), 'session-authority-devices-page-example'),
  // The self-service API reads the token from this cookie, and the browser's address from this
  // example's X-Forwarded-For (it runs on this machine).
  serviceEnv: { FORWARD_AUTH_COOKIE: COOKIE, TRUST_PROXY: '127.0.0.1' },
  alreadyRunning: (url) =>
    `something already answers on ${url}. If it is session-authority with FORWARD_AUTH_COOKIE=${COOKIE} and TRUST_PROXY=127.0.0.1, use it:\n` +
    `  SESSION_AUTHORITY_URL=${url} SESSION_AUTHORITY_API_KEY=<its admin key> npm run example:devices-page\n` +
    'or set SESSION_AUTHORITY_PORT to start one on another port.',
  build: (sessionAuthorityUrl, apiKey) =>
    buildDevicesPage({ sessionAuthorityUrl, apiKey, cookieName: COOKIE, logger: { level: 'warn' } }),
})
