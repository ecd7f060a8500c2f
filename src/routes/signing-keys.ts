import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { type SigningKeys, SigningKeyView } from '../keys/signing-keys.ts'
import { withErrors } from '../schemas.ts'
import { NewestFirstQuery, nextPositionCursor, pageReply, pageRequest } from './paging.ts'

const SigningKeyJwk = Type.Object(
  {
    kty: Type.String(),
    kid: Type.String(),
    alg: Type.String(),
    use: Type.String(),
    crv: Type.Optional(Type.String()),
    x: Type.Optional(Type.String()),
    y: Type.Optional(Type.String()),
    n: Type.Optional(Type.String()),
    e: Type.Optional(Type.String()),
  },
  { title: 'JWK' },
)

const JwksReply = Type.Object({ keys: Type.Array(SigningKeyJwk) }, { title: 'JWKSet' })

const SigningKeysReply = pageReply({ keys: Type.Array(SigningKeyView) })

/** The public JWK Set for verifiers, and the admin view and rotation of the signing keys. */
const signingKeyRoutes: FastifyPluginAsyncTypebox<{ keys: SigningKeys; maxAgeSeconds: number }> = async (
  app,
  { keys, maxAgeSeconds },
) => {
  app.get(
    '/.well-known/jwks.json',
    {
      schema: {
        operationId: 'getJwks',
        tags: ['sessions'],
        summary: 'The public keys that sign access JWTs (RFC 7517 JWK Set)',
        description:
          'Retired keys stay listed until every token they signed has expired. A verifier that meets an unknown kid should fetch this again.',
        response: { 200: JwksReply },
      },
    },
    async (_request, reply) => {
      const jwks = keys.jwks()
      // Never cached past the moment a retired key leaves the set.
      const maxAge = Math.min(maxAgeSeconds, jwks.maxAgeSeconds)
      reply.header('cache-control', `public, max-age=${maxAge}`)
      return { keys: jwks.keys }
    },
  )

  app.get(
    '/v1/signing-keys',
    {
      config: { scope: 'admin' },
      schema: {
        operationId: 'listSigningKeys',
        tags: ['api keys'],
        summary: 'The JWT signing keys, newest first, a page at a time (never a private key)',
        querystring: NewestFirstQuery,
        response: withErrors({ 200: SigningKeysReply }),
      },
    },
    async (request) => {
      const page = pageRequest(request.query)
      const rows = await keys.listPage(page)
      return { keys: rows, next_cursor: nextPositionCursor(rows, page, (row) => row.kid) }
    },
  )

  app.post(
    '/v1/signing-keys/rotate',
    {
      config: { scope: 'platform' },
      schema: {
        operationId: 'rotateSigningKey',
        tags: ['api keys'],
        summary: 'Make a new signing key current; tokens signed before stay valid until they expire',
        response: withErrors({ 201: SigningKeyView }),
      },
    },
    async (_request, reply) => reply.code(201).send(await keys.rotateNow()),
  )
}

export default signingKeyRoutes
