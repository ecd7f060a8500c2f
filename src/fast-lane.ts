import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { FastifyServerFactory } from 'fastify'

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

  /** Fastify's own HTTP/1 server, with the lanes in front of its router. */
  const serverFactory: FastifyServerFactory = (route, options) => {
    const server = http.createServer(options.http as http.ServerOptions, (request, response) => {
      if (open) for (const lane of lanes) if (lane(request, response)) return
      route(request, response)
    })
    // What Fastify sets on a server it makes.
    server.keepAliveTimeout = options.keepAliveTimeout as number
    server.requestTimeout = options.requestTimeout as number
    server.setTimeout(options.connectionTimeout as number)
    if ((options.maxRequestsPerSocket as number) > 0) {
      server.maxRequestsPerSocket = options.maxRequestsPerSocket as number
    }
    return server
  }

  return {
    serverFactory,
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
