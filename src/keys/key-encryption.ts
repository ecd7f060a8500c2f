import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'
import { type Config, ConfigError } from '../config.ts'

/**
 * The key-encryption key (KEK): it seals private signing keys at rest and
 * derives the secret that chains refresh tokens. Only its id (a fingerprint)
 * is ever stored or logged.
 */
export interface KeyEncryptionKey {
  /** A fingerprint that names the KEK, stored beside what it sealed. */
  id: string
  /** True for the public development key (DEV_MODE without a configured KEK). */
  development: boolean
  seal(plain: Buffer, context: string): Buffer
  open(sealed: Buffer, context: string): Buffer
  /** A 32-byte key for another purpose, derived so that it reveals nothing about the KEK. */
  derive(purpose: string): Buffer
}

// Anyone can read this: it only keeps development keys from being stored in the clear by accident.
const DEVELOPMENT_KEK = createHash('sha256').update('session-authority development key').digest()

const IV_BYTES = 12
const TAG_BYTES = 16

/** Decodes the configured KEK (base64, base64url or hex of 32 bytes). */
function decode(text: string): Buffer {
  const bytes = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64')
  if (bytes.length !== 32) throw new Error('the key-encryption key must be 32 bytes')
  return bytes
}

/** The KEK from config, or the development key when there is none (the caller decides whether that is allowed). */
export function keyEncryptionKey(configured: string | undefined): KeyEncryptionKey {
  const key = configured ? decode(configured) : DEVELOPMENT_KEK
  const derive = (purpose: string) =>
    Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `session-authority ${purpose}`, 32))
  return {
    id: derive('key id').toString('hex').slice(0, 16),
    development: !configured,
    derive,
    // AES-256-GCM; the context (a key id) is authenticated, so a sealed key cannot be moved to another row.
    seal(plain, context) {
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', key, iv)
      cipher.setAAD(Buffer.from(context))
      const body = Buffer.concat([cipher.update(plain), cipher.final()])
      return Buffer.concat([iv, cipher.getAuthTag(), body])
    },
    open(sealed, context) {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES))
      decipher.setAAD(Buffer.from(context))
      decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
      return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)), decipher.final()])
    },
  }
}

/** The configured KEK; without one, outside development, the service (and every command that seals or opens keys) refuses. */
export function requireKeyEncryptionKey(
  config: Pick<Config, 'signingKeyEncryptionKey' | 'devMode'>,
): KeyEncryptionKey {
  if (!config.signingKeyEncryptionKey && !config.devMode) {
    throw new ConfigError(
      'invalid configuration: SIGNING_KEY_ENCRYPTION_KEY is required (32 random bytes, e.g. `openssl rand -base64 32`); DEV_MODE=true runs without one, for local development only',
    )
  }
  return keyEncryptionKey(config.signingKeyEncryptionKey)
}
