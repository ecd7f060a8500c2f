/**
 * Signature verification on one core, in this process, with the service's own
 * verifier (nothing cached): how many access JWTs per second one core can check
 * when none has been seen before.
 */
import { randomUUID } from 'node:crypto'
import type { SigningAlgorithm } from '../src/keys/signing-keys.ts'
import { generateSigningKey, keySigner, keyVerifier } from '../src/keys/signing-keys.ts'

const ALGORITHMS: SigningAlgorithm[] = ['EdDSA', 'ES256', 'RS256']
/** What the issue asks of EdDSA and ES256. */
export const VERIFY_TARGET_PER_SECOND = 8000
const DISTINCT_TOKENS = 1000

export interface VerifyRow {
  alg: SigningAlgorithm
  perSecond: number
}

/** Verifies distinct tokens for `seconds` per algorithm and reports the rate. */
export function measureVerification(seconds: number): VerifyRow[] {
  const audience = { issuer: 'bench', audience: 'api' }
  return ALGORITHMS.map((alg) => {
    const { jwk, privateDer } = generateSigningKey(alg)
    const sign = keySigner(privateDer, jwk)
    const verify = keyVerifier(jwk, audience)
    const now = Math.floor(Date.now() / 1000)
    const tokens = Array.from({ length: DISTINCT_TOKENS }, () =>
      sign({
        iss: 'bench',
        aud: 'api',
        sub: 'u',
        sid: randomUUID(),
        jti: randomUUID(),
        iat: now,
        exp: now + 300,
      }),
    )
    for (const token of tokens.slice(0, 100)) verify(token)
    let done = 0
    const started = performance.now()
    const until = started + seconds * 1000
    while (performance.now() < until) {
      verify(tokens[done % DISTINCT_TOKENS] as string)
      done++
    }
    return { alg, perSecond: done / ((performance.now() - started) / 1000) }
  })
}

export function verificationTable(rows: VerifyRow[]): string {
  const lines = rows.map(({ alg, perSecond }) => {
    const target = alg === 'RS256' ? '—' : `≥ ${VERIFY_TARGET_PER_SECOND.toLocaleString('en')}`
    const met = alg === 'RS256' ? '—' : perSecond >= VERIFY_TARGET_PER_SECOND ? 'yes' : '**no**'
    return `| ${alg} | ${Math.round(perSecond).toLocaleString('en')} | ${target} | ${met} |`
  })
  return [
    '| algorithm | verifications/s, one core | target | met |',
    '| --- | ---: | --- | --- |',
    ...lines,
  ].join('\n')
}
