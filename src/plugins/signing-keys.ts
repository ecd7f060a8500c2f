import fp from 'fastify-plugin'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import type { KeyEncryptionKey } from '../keys/key-encryption.ts'
import { createSigningKeys, type SigningKeys } from '../keys/signing-keys.ts'

declare module 'fastify' {
  interface FastifyInstance {
    signingKeys: SigningKeys
  }
}

/** The JWT signing keys, loaded (or made) at start and reloaded until the app closes. */
export default fp(
  async (app, { config, clock, kek }: { config: Config; clock: Clock; kek: KeyEncryptionKey }) => {
    if (kek.development) {
      app.log.warn(
        'DEV_MODE: signing keys are sealed with the public development key; never run so in production',
      )
    }
    const keys = createSigningKeys({ sql: app.db.sql, clock, kek, config, log: app.log })
    await keys.start()
    app.decorate('signingKeys', keys)
    app.addHook('onClose', () => keys.close())
  },
  { name: 'signing-keys', dependencies: ['db'] },
)
