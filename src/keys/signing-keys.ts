import { createPrivateKey, createPublicKey, generateKeyPairSync, hash, type JsonWebKey } from 'node:crypto'
import { type Static, Type } from '@sinclair/typebox'
import { type Algorithm, createSigner, createVerifier } from 'fast-jwt'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { Sql } from '../db/connect.ts'
import { newestFirst, type PageRequest, type Positioned } from '../db/keyset.ts'
import { Errors } from '../errors.ts'
import type { Log } from '../logger.ts'
import { Nullable, Timestamp } from '../schemas.ts'
import type { KeyEncryptionKey } from './key-encryption.ts'

export type SigningAlgorithm = Config['jwtAlgorithm']

export type PublicJwk = JsonWebKey & { kty: string; kid: string; alg: string; use: 'sig' }

interface KeyRow {
  kid: string
  alg: SigningAlgorithm
  public_jwk: PublicJwk
  private_key: Buffer
  kek_id: string
  created_at: Date
  retired_at: Date | null
  publish_until: Date | null
}

/** A signing key as the admin API shows it (never the private key). */
export const SigningKeyView = Type.Object(
  {
    kid: Type.String(),
    alg: Type.String(),
    current: Type.Boolean({ description: 'New access JWTs are signed with this key' }),
    created_at: Timestamp(),
    retired_at: Nullable(Timestamp()),
    publish_until: Nullable(
      Timestamp('A retired key stays in the JWKS until every token it signed has expired'),
    ),
  },
  { title: 'SigningKey' },
)
export type SigningKeyView = Static<typeof SigningKeyView>

type Sign = (payload: Record<string, unknown>) => string
type Verify = (token: string) => Record<string, unknown>

// RFC 7638: the members that define each key type, in lexicographic order.
const THUMBPRINT_MEMBERS: Record<string, string[]> = {
  OKP: ['crv', 'kty', 'x'],
  EC: ['crv', 'kty', 'x', 'y'],
  RSA: ['e', 'kty', 'n'],
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url): the key id, so a kid always names exactly one key. */
export function thumbprint(jwk: JsonWebKey): string {
  const members = THUMBPRINT_MEMBERS[jwk.kty ?? ''] ?? []
  const canonical = JSON.stringify(
    Object.fromEntries(members.map((m) => [m, (jwk as Record<string, unknown>)[m]])),
  )
  return hash('sha256', canonical, 'base64url')
}

/** A new key pair for `alg`: the public half as a JWK (kid = thumbprint), the private half as PKCS#8 DER. */
export function generateSigningKey(alg: SigningAlgorithm): { jwk: PublicJwk; privateDer: Buffer } {
  const pair =
    alg === 'EdDSA'
      ? generateKeyPairSync('ed25519')
      : alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const publicJwk = pair.publicKey.export({ format: 'jwk' })
  const jwk: PublicJwk = {
    ...publicJwk,
    kty: String(publicJwk.kty),
    kid: thumbprint(publicJwk),
    alg,
    use: 'sig',
  }
  return { jwk, privateDer: pair.privateKey.export({ format: 'der', type: 'pkcs8' }) }
}

/**
 * Verifies tokens signed by one key: signature with the algorithm pinned to
 * the key (a token cannot pick its own: no "none", no HS256 keyed with the
 * public key), issuer, audience and the claims introspection needs. Times are
 * left to the caller, which checks them against the service's clock.
 */
export function keyVerifier(jwk: PublicJwk, audience: { issuer: string; audience: string }): Verify {
  const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' })
  return createVerifier({
    key: pem.toString(),
    algorithms: [jwk.alg as Algorithm],
    allowedIss: audience.issuer,
    allowedAud: audience.audience,
    requiredClaims: ['iss', 'aud', 'sub', 'sid', 'jti', 'iat', 'exp'],
    ignoreExpiration: true,
    ignoreNotBefore: true,
    cache: false,
  }) as Verify
}

/** Signs access JWTs with one private key: header `typ: at+jwt` and the kid; iat and exp come in the payload. */
export function keySigner(privateDer: Buffer, jwk: Pick<PublicJwk, 'alg' | 'kid'>): Sign {
  const key = createPrivateKey({ key: privateDer, format: 'der', type: 'pkcs8' })
  return createSigner({
    key: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    algorithm: jwk.alg as Algorithm,
    kid: jwk.kid,
    header: { alg: jwk.alg, typ: 'at+jwt' },
  }) as Sign
}

interface Deps {
  sql: Sql
  clock: Clock
  kek: KeyEncryptionKey
  config: Pick<
    Config,
    | 'jwtAlgorithm'
    | 'jwtIssuer'
    | 'jwtAudience'
    | 'accessTokenTtlSeconds'
    | 'jwtClockSkewSeconds'
    | 'signingKeyRotationDays'
    | 'signingKeyReloadMs'
  >
  log: Log
}

const DAY_MS = 86_400_000

/**
 * The keys that sign access JWTs, kept in Postgres (private keys sealed with
 * the KEK) and mirrored in each replica, which rereads them every
 * `signingKeyReloadMs`. Rotation makes a new key current at once; the old one
 * stays published (and trusted) until every token it could have signed has
 * expired, counting a replica that signs with it until its next reload.
 */
export function createSigningKeys({ sql, clock, kek, config, log }: Deps) {
  let rows: KeyRow[] = []
  const verifiers = new Map<string, Verify>()
  const signers = new Map<string, Sign>()
  let timer: NodeJS.Timeout | undefined
  let lastReload = 0
  let reloading: Promise<void> | null = null
  const audience = { issuer: config.jwtIssuer, audience: config.jwtAudience }

  /** How long a retired key stays trusted: the last token it may sign, plus that token's lifetime. */
  const retiredLifetimeMs = () =>
    config.signingKeyReloadMs + (config.accessTokenTtlSeconds + config.jwtClockSkewSeconds) * 1000

  async function load(): Promise<void> {
    const now = new Date(clock.now())
    rows = await sql<KeyRow[]>`
      select kid, alg, public_jwk, private_key, kek_id, created_at, retired_at, publish_until
      from signing_keys
      where publish_until is null or publish_until > ${now}
      order by created_at desc, kid`
    lastReload = Date.now()
    const kids = new Set(rows.map((r) => r.kid))
    for (const kid of verifiers.keys()) if (!kids.has(kid)) verifiers.delete(kid)
    for (const kid of signers.keys()) if (!kids.has(kid)) signers.delete(kid)
    for (const row of rows)
      if (!verifiers.has(row.kid)) verifiers.set(row.kid, keyVerifier(row.public_jwk, audience))
  }

  /** The key new tokens are signed with: the newest one not retired. */
  function current(): KeyRow {
    const row = rows.find((r) => r.retired_at === null)
    if (!row) throw new Error('no current signing key (keys not loaded)')
    return row
  }

  /** Why the current key is due for replacement by the schedule, if it is. */
  function dueReason(row: KeyRow | undefined, now: number): string | null {
    if (!row) return 'no signing key yet'
    const maxAge = config.signingKeyRotationDays * DAY_MS
    return maxAge > 0 && now - row.created_at.getTime() >= maxAge ? 'scheduled rotation' : null
  }

  /**
   * At start, also replace a key this replica's settings disagree with. (Only
   * at start: replicas with different settings would otherwise take turns.)
   */
  function startReason(row: KeyRow | undefined, now: number): string | null {
    if (row && row.alg !== config.jwtAlgorithm) return `JWT_ALGORITHM is now ${config.jwtAlgorithm}`
    if (row && row.kek_id !== kek.id) return 'the key-encryption key changed'
    return dueReason(row, now)
  }

  /** Rereads the keys, and rotates first if the current one must go. */
  async function refresh(reason: typeof dueReason): Promise<void> {
    await load()
    if (
      reason(
        rows.find((r) => r.retired_at === null),
        clock.now(),
      )
    )
      await rotate(reason)
  }

  /**
   * Makes a new key current, under an advisory lock so that replicas doing
   * this at once make one key. With `onlyIf`, rotates only when it says the
   * current key (as the lock holder sees it) must go.
   */
  async function rotate(
    onlyIf?: (row: KeyRow | undefined, now: number) => string | null,
  ): Promise<KeyRow | null> {
    const created = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext(current_schema() || ':session-authority:signing-keys'))`
      const now = clock.now()
      const [latest] = await tx<KeyRow[]>`
        select kid, alg, kek_id, created_at from signing_keys where retired_at is null
        order by created_at desc, kid limit 1`
      const reason = onlyIf ? onlyIf(latest, now) : 'by request'
      if (!reason) return null
      const { jwk, privateDer } = generateSigningKey(config.jwtAlgorithm)
      const at = new Date(now)
      const until = new Date(now + retiredLifetimeMs())
      await tx`
        update signing_keys set retired_at = ${at}, publish_until = ${until} where retired_at is null`
      const [row] = await tx<KeyRow[]>`
        insert into signing_keys (kid, alg, public_jwk, private_key, kek_id, created_at)
        values (${jwk.kid}, ${jwk.alg}, ${tx.json(jwk as never)}, ${kek.seal(privateDer, jwk.kid)}, ${kek.id}, ${at})
        returning kid, alg, public_jwk, private_key, kek_id, created_at, retired_at, publish_until`
      log.info({ kid: jwk.kid, alg: jwk.alg, reason }, 'signing key rotated')
      return row as KeyRow
    })
    await load()
    return created
  }

  /** Rereads the keys soon (a token named a kid this replica has not seen), at most once a second. */
  function reloadSoon(): Promise<void> {
    if (reloading) return reloading
    if (Date.now() - lastReload < 1000) return Promise.resolve()
    reloading = load()
      .catch((err: unknown) => log.warn({ err }, 'could not reload signing keys'))
      .finally(() => {
        reloading = null
      })
    return reloading
  }

  function signer(kid: string): Sign {
    let sign = signers.get(kid)
    if (sign) return sign
    const row = rows.find((r) => r.kid === kid)
    if (!row) throw new Error(`signing key ${kid} is not loaded`)
    if (row.kek_id !== kek.id) {
      throw new Errors.SERVICE_UNAVAILABLE(
        'the current signing key was sealed with another SIGNING_KEY_ENCRYPTION_KEY than this replica has',
      )
    }
    sign = keySigner(kek.open(row.private_key, kid), row.public_jwk)
    signers.set(kid, sign)
    return sign
  }

  return {
    /** Makes sure a usable current key exists, loads the keys, and rereads them periodically. */
    async start() {
      await refresh(startReason)
      timer = setInterval(() => {
        refresh(dueReason).catch((err: unknown) => log.warn({ err }, 'could not reload signing keys'))
      }, config.signingKeyReloadMs)
      timer.unref()
    },

    /** Signs claims with the current key (or a named one, to issue a token again); returns the kid used. */
    sign(payload: Record<string, unknown>, kid = current().kid): { token: string; kid: string } {
      return { token: signer(kid)(payload), kid }
    },

    currentKid: () => current().kid,

    /** The verifier of a kid, pinned to its algorithm; undefined for a kid not (or no longer) published. */
    verifier: (kid: string): Verify | undefined => verifiers.get(kid),

    reloadSoon,

    /** RFC 7517 JWK Set of the keys a verifier may meet, and how long it stays valid as it is. */
    jwks(): { keys: PublicJwk[]; maxAgeSeconds: number } {
      const now = clock.now()
      const live = rows.filter((r) => r.publish_until === null || r.publish_until.getTime() > now)
      // A retired key must not outstay its welcome in a verifier's cache.
      const soonest = Math.min(
        ...live.map((r) => (r.publish_until ? r.publish_until.getTime() - now : Number.POSITIVE_INFINITY)),
      )
      return { keys: live.map((r) => r.public_jwk), maxAgeSeconds: Math.max(0, Math.floor(soonest / 1000)) }
    },

    /** Makes a new key current now. */
    async rotateNow(): Promise<SigningKeyView> {
      const row = (await rotate()) as KeyRow
      return view(row, row.kid)
    },

    /** Every key, newest first (the CLI's list). */
    async list(): Promise<SigningKeyView[]> {
      const all = await sql<KeyRow[]>`
        select kid, alg, created_at, retired_at, publish_until from signing_keys order by created_at desc, kid`
      const live = all.find((r) => r.retired_at === null)?.kid
      return all.map((r) => view(r, live))
    },

    /** A page of the keys, newest first; `current` is said of the current key whichever page it is on. */
    async listPage(page: PageRequest): Promise<Positioned<SigningKeyView>[]> {
      const { positionAt, after, orderAndLimit } = newestFirst(sql, page, 'kid')
      const rows = await sql<Positioned<KeyRow & { current_kid: string | null }>[]>`
        select kid, alg, created_at, retired_at, publish_until, ${positionAt},
          (select kid from signing_keys where retired_at is null order by created_at desc, kid limit 1) as current_kid
        from signing_keys where ${after} ${orderAndLimit}`
      return rows.map((r) => ({ ...view(r, r.current_kid ?? undefined), position_at: r.position_at }))
    },

    async close() {
      clearInterval(timer)
    },
  }
}

function view(
  row: Pick<KeyRow, 'kid' | 'alg' | 'created_at' | 'retired_at' | 'publish_until'>,
  currentKid?: string,
) {
  return {
    kid: row.kid,
    alg: row.alg,
    current: row.kid === currentKid,
    created_at: row.created_at,
    retired_at: row.retired_at,
    publish_until: row.publish_until,
  }
}

export type SigningKeys = ReturnType<typeof createSigningKeys>
