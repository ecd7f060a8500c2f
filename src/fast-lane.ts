import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http'

/**
 * Answers a request whole, before the router sees it, and returns true; or
 * returns false, having written nothing, to leave it to the router.
 */
export type Lane = (request: IncomingMessage, response: ServerResponse) => boolean

/**
 * Lanes past Fastify for the few requests whose cost multiplies by all of a
 * deployment's traffic (a gateway's sub-request on every request it serves).
 * A lane answers only the common case, from memory, exactly as its route
 * would; everything else (errors, misses, anything odd) goes to the route.
 */
export function createLanes() {
  const lanes: Lane[] = []
  let open = true

  return {
    /**
     * Puts the lanes in front of the router of the server Fastify made (its
     * one `request` listener), so the server stays Fastify's own: its
     * settings, its TLS if any. A second server Fastify makes when it listens
     * on a name with two addresses (`localhost`) has no lanes: the router
     * answers everything there, as it would.
     */
    install(server: Server) {
      const routers = server.listeners('request') as RequestListener[]
      const [router] = routers
      if (routers.length !== 1 || !router) throw new Error('fast lanes: the server has no single router')
      server.removeListener('request', router)
      server.on('request', (request: IncomingMessage, response: ServerResponse) => {
        if (open) for (const lane of lanes) if (lane(request, response)) return
        router(request, response)
      })
    },
    add(lane: Lane) {
      lanes.push(lane)
    },
    /** From now on the router answers everything (a closing app answers 503). */
    close() {
      open = false
    },
  }
}

export type Lanes = ReturnType<typeof createLanes>
