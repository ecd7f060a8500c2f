import formbody from '@fastify/formbody'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply } from 'fastify'
import { allows } from '../api-keys/api-keys.ts'
import { Errors } from '../errors.ts'
import { withErrors } from '../schemas.ts'
import { Ip, UserAgent } from '../sessions/model.ts'
import type { SessionService } from '../sessions/service.ts'

const tags = ['standards']
const FORM = ['application/x-www-form-urlencoded']

const TokenForm = {
  client_id: Type.Optional(
    Type.String({ maxLength: 256, description: 'client_secret_post: the API key id' }),
  ),
  client_secret: Type.Optional(
    Type.String({ maxLength: 512, description: 'client_secret_post: the API key' }),
  ),
  token: Type.String({ maxLength: 8192, description: 'The token: opaque, access JWT or refresh token' }),
  token_type_hint: Type.Optional(
    Type.String({
      maxLength: 64,
      description: 'access_token or refresh_token; a wrong hint still finds the token',
    }),
  ),
}

// OAuth clients may send parameters of their own (client_id…): ignored, as RFC 7662 and 7009 ask.
const IntrospectForm = Type.Object(
  {
    ...TokenForm,
    ip: Type.Optional(Ip),
    user_agent: Type.Optional(UserAgent),
  },
  { description: 'ip and user_agent (extensions) feed the drift check like /v1/sessions/introspect' },
)

const RevokeForm = Type.Object(TokenForm)

const OAuthIntrospection = Type.Object(
  {
    active: Type.Boolean(),
    sub: Type.Optional(Type.String({ description: 'The user id' })),
    sid: Type.Optional(Type.String({ description: 'The session id' })),
    exp: Type.Optional(Type.Integer({ description: 'When the token stops being active (Unix seconds)' })),
    iat: Type.Optional(Type.Integer({ description: 'When the token was issued (Unix seconds)' })),
    token_type: Type.Optional(
      Type.String({
        description:
          '`Bearer` for session tokens and access JWTs, `refresh_token` for refresh tokens (active only to a key with `sessions:write` or `admin`, which may refresh; to any other caller a refresh token is inactive)',
      }),
    ),
    iss: Type.Optional(Type.String()),
    client_id: Type.Optional(Type.String({ description: 'The API key that opened the session' })),
  },
  { description: 'RFC 7662. An inactive token is exactly {"active":false}' },
)

const seconds = (date: Date) => Math.floor(date.getTime() / 1000)

/** 415 for a body that is not a form: the code every route uses, with a message that says what to send here. */
function formRequired(contentType: string | undefined) {
  const type = JSON.stringify(String(contentType ?? '').slice(0, 100))
  const error = new Errors.UNSUPPORTED_MEDIA_TYPE(type)
  error.message = `content type ${type} is not accepted; send a form (${FORM[0]})`
  return error
}

/** RFC 7662 token introspection and RFC 7009 token revocation, form-encoded, for OAuth client libraries. */
const oauth2Routes: FastifyPluginAsyncTypebox<{ sessions: SessionService; issuer: string }> = async (
  app,
  { sessions, issuer },
) => {
  app.removeAllContentTypeParsers()
  await app.register(formbody)
  app.addContentTypeParser('*', (request, _payload, done) =>
    done(formRequired(request.headers['content-type'])),
  )
  // Clients authenticating with HTTP Basic are told so when that fails (RFC 6749 §5.2).
  app.addHook('onSend', async (_request, reply, payload) => {
    if (reply.statusCode === 401) reply.header('www-authenticate', 'Basic realm="session-authority"')
    return payload
  })

  app.post(
    '/oauth2/introspect',
    {
      config: { scope: 'introspect', formCredentials: true },
      schema: {
        operationId: 'oauthIntrospect',
        tags,
        summary:
          'RFC 7662 token introspection (client authentication: HTTP Basic with key id and key, or Bearer)',
        consumes: FORM,
        body: IntrospectForm,
        response: withErrors({ 200: OAuthIntrospection }),
      },
    },
    async (request) => {
      const { token, ip, user_agent } = request.body
      // No use for token_type_hint: the service tells the kinds apart by their shape.
      // A refresh token is active only to a caller that may refresh: a gateway checking
      // nothing but `active` must never take one for an access token.
      const mayRefresh = request.caller !== null && allows(request.caller.scopes, 'sessions:write')
      const { refresh, result } = await sessions.introspectAnyToken(
        request.tenancy,
        token,
        { ip, user_agent },
        { refreshTokens: mayRefresh },
      )
      if (!result.active) return { active: false }
      const { session, claims } = result
      return {
        active: true,
        sub: session.user_id,
        sid: session.id,
        exp: seconds(result.expiresAt),
        iat: claims ? claims.iat : seconds(refresh ? result.seenAt : session.created_at),
        token_type: refresh ? 'refresh_token' : 'Bearer',
        iss: issuer,
        client_id: session.client_id ?? undefined,
      }
    },
  )

  app.post(
    '/oauth2/revoke',
    {
      config: { scope: 'sessions:write', formCredentials: true },
      schema: {
        operationId: 'oauthRevoke',
        tags,
        summary: 'RFC 7009 token revocation: ends the session of the token (200 also for unknown tokens)',
        consumes: FORM,
        body: RevokeForm,
        response: withErrors({
          200: Type.Unsafe<undefined>({ description: 'Revoked, or nothing to revoke (empty body)' }),
        }),
      },
    },
    async (request, reply) => {
      // RFC 7009 §2.1: only a token issued to this client, which here means to its tenant (a
      // tenant's keys are one client: a rotated key still revokes what the old one opened).
      await sessions.revokeByToken(request.tenancy, request.body.token, 'oauth_revoke')
      // An empty body (RFC 7009 §2.2); the typed reply would serialise null.
      return (reply as FastifyReply).code(200).send()
    },
  )
}

export default oauth2Routes
