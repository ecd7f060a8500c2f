import { randomBytes } from 'node:crypto'
import {
  CLIENT,
  CREATE_PATH,
  FORWARD_AUTH_PATH,
  GATEWAY_SECRET,
  GATEWAY_SECRET_HEADER,
  INTROSPECT_PATH,
  openSessionBody,
  type ServerMode,
  type Tokens,
} from './protocol.ts'

/** What a row is judged by: req/s as a fraction of the bare route's, or the p99 latency. */
export type Target = { minRatio: number } | { maxP99Ms: number } | null

export interface Scenario {
  name: string
  mode: ServerMode
  /** Measured on the server of the row before (warm, caches filled) instead of a fresh one. */
  sameServer?: boolean
  path: string
  /** GET with these headers (a gateway sub-request) instead of POSTing the bodies. */
  get?(tokens: Tokens | null): Record<string, string>
  /** The request bodies, given the tokens of the sessions the server opened. */
  bodies(tokens: Tokens | null): string[]
  /** Is this the answer the row means to measure? (A 200 "inactive" is not an L1 hit.) */
  expect(body: string): boolean
  /** A fixed request rate derived from the bare route's req/s; unset = as fast as the server answers. */
  rate?(bareRps: number): number
  target: Target
  /** The bare row this one is a ratio to (one sent the same request bytes); unset = the first bare row. */
  baseline?: string
}

/** A token of the right shape (so it passes the format check and reaches the lookup). */
const wellFormedToken = () => `sat_${randomBytes(32).toString('base64url')}`
const introspectBody = (token: string) => JSON.stringify({ token, ...CLIENT })
const active = (body: string) => body.startsWith('{"active":true')

// About the length of the benchmark's access JWTs, for a bare row sent requests of the same size.
const JWT_LENGTH = 520
const jwtShapedToken = () =>
  `eyJ${randomBytes(JWT_LENGTH)
    .toString('base64url')
    .slice(0, JWT_LENGTH - 3)}`

/** What a gateway sends forward-auth: the user's token, browser and address, and the gateway's secret. */
const forwardAuthHeaders = (token: string) => ({
  authorization: `Bearer ${token}`,
  'user-agent': CLIENT.user_agent,
  'x-forwarded-for': CLIENT.ip,
  [GATEWAY_SECRET_HEADER]: GATEWAY_SECRET,
})

const UNKNOWN_TOKENS = 10_000
const USERS = 1000

const bare: Scenario = {
  name: 'bare Fastify route',
  mode: 'bare',
  path: INTROSPECT_PATH,
  // The very bytes an introspection sends, so the two differ only in what the server does.
  bodies: () => [introspectBody(wellFormedToken())],
  expect: active,
  target: null,
}

/** Introspection of a session the server opened, answered by the path its mode leaves. */
const introspectSession = (
  name: string,
  mode: Scenario['mode'],
  target: Scenario['target'],
  kind: 'opaque' | 'jwt' = 'opaque',
): Scenario => ({
  name,
  mode,
  path: INTROSPECT_PATH,
  bodies: (tokens) => [introspectBody((tokens as Tokens)[kind])],
  expect: active,
  target,
})

export const SCENARIOS: Scenario[] = [
  bare,
  introspectSession('introspect, L1 hit', 'cached', { minRatio: 0.85 }),
  {
    ...introspectSession('introspect, L1 hit at ½ bare req/s', 'cached', { maxP99Ms: 5 }),
    sameServer: true,
    rate: (bareRps) => Math.round(bareRps / 2),
  },
  {
    // What the machine itself allows at that rate: the same paced load on the bare route.
    ...bare,
    name: 'bare Fastify route at ½ bare req/s',
    rate: (bareRps) => Math.round(bareRps / 2),
  },
  {
    // The L1-hit row without the end user's client: the difference between the two is what the drift check costs.
    name: 'introspect, L1 hit, no ip/user_agent (drift not checked)',
    mode: 'cached',
    path: INTROSPECT_PATH,
    bodies: (tokens) => [JSON.stringify({ token: (tokens as Tokens).opaque })],
    expect: active,
    target: null,
  },
  {
    ...bare,
    name: 'bare Fastify route, JWT-sized request',
    bodies: () => [introspectBody(jwtShapedToken())],
  },
  {
    ...introspectSession(
      'introspect JWT, warm (signature verified before, L1 hit)',
      'cached',
      { minRatio: 0.8 },
      'jwt',
    ),
    baseline: 'bare Fastify route, JWT-sized request',
  },
  {
    ...introspectSession('introspect JWT, signature checked every time', 'jwt-uncached', null, 'jwt'),
    baseline: 'bare Fastify route, JWT-sized request',
  },
  {
    name: 'bare Fastify route, forward-auth request',
    mode: 'bare',
    path: FORWARD_AUTH_PATH,
    bodies: () => [''],
    get: () => forwardAuthHeaders(wellFormedToken()),
    expect: (body) => body === '',
    target: null,
  },
  {
    name: 'forward-auth (gateway sub-request), L1 hit',
    mode: 'cached',
    path: FORWARD_AUTH_PATH,
    bodies: () => [''],
    get: (tokens) => forwardAuthHeaders((tokens as Tokens).opaque),
    expect: (body) => body === '',
    target: { minRatio: 0.8 },
    baseline: 'bare Fastify route, forward-auth request',
  },
  {
    ...introspectSession('introspect, Redis hit (200 sessions, L1 of one entry)', 'redis', { minRatio: 0.6 }),
    bodies: (tokens) => (tokens as Tokens).many.map(introspectBody),
  },
  introspectSession('introspect, Postgres only', 'postgres', { minRatio: 0.25 }),
  {
    name: `unknown-token flood (${UNKNOWN_TOKENS.toLocaleString('en')} distinct)`,
    mode: 'cached',
    path: INTROSPECT_PATH,
    bodies: () => Array.from({ length: UNKNOWN_TOKENS }, () => introspectBody(wellFormedToken())),
    // The benchmark's key may read sessions, so it is told why: the token is unknown.
    expect: (body) => body === '{"active":false,"reason":"unknown"}',
    target: { minRatio: 0.8 },
  },
  {
    name: 'session creation',
    mode: 'cached',
    path: CREATE_PATH,
    // Logins spread over many users, as a real login stream is.
    bodies: () => Array.from({ length: USERS }, (_, i) => openSessionBody(`bench-user-${i}`)),
    expect: (body) => body.includes('"token":"sat_'),
    target: null,
  },
  // The same again: how far it moved during the run shows how much of any ratio is noise.
  { ...bare, name: 'bare Fastify route, again at the end' },
]
