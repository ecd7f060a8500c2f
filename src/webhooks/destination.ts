import { lookup as dnsLookup } from 'node:dns/promises'
import { request as httpRequest } from 'node:http'
import { isIP, connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import ipaddr from 'ipaddr.js'
import { type Address, addressMatcher, parseAddress } from '../addresses.ts'
import { ConfigError } from '../config.ts'
import { Errors } from '../errors.ts'

/**
 * Where a webhook may go. Its receivers are the public internet: an admin who
 * could point one at loopback, the private network or a cloud metadata service
 * (169.254.169.254, fd00:ec2::254) would turn the dispatcher into a proxy and
 * `last_status` / `last_error` into a port scanner. So URLs are checked when a
 * subscription is written (their scheme, credentials and literal addresses),
 * and names are resolved, checked and pinned at every delivery: the request
 * goes to the very address that was checked, with no second lookup that DNS
 * rebinding could answer differently.
 */

/** The kind of range that makes an address no place for a webhook. */
export type Category =
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'carrier-grade NAT'
  | 'reserved'

// ipaddr.js range names; any other range but unicast (documentation, benchmarking, Teredo, 240/4…) is 'reserved'.
const CATEGORY: Record<string, Category> = {
  loopback: 'loopback',
  private: 'private',
  uniqueLocal: 'private',
  deprecatedSiteLocal: 'private',
  linkLocal: 'link-local',
  unspecified: 'unspecified',
  multicast: 'multicast',
  broadcast: 'broadcast',
  carrierGradeNat: 'carrier-grade NAT',
}

const GLOBAL_UNICAST = ipaddr.parseCIDR('2000::/3')
const NAT64 = ipaddr.parseCIDR('64:ff9b::/96')

const ipv4Of = (high: number, low: number) => new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff])

/** The IPv4 address an IPv6 one carries and is routed to (mapped, translated, NAT64, 6to4), if any. */
function embeddedIPv4(address: ipaddr.IPv6): ipaddr.IPv4 | null {
  const parts = address.parts
  const range = address.range()
  if (range === 'ipv4Mapped' || range === 'rfc6145' || address.match(NAT64)) {
    return ipv4Of(parts[6] ?? 0, parts[7] ?? 0)
  }
  if (range === '6to4') return ipv4Of(parts[1] ?? 0, parts[2] ?? 0)
  return null
}

/** Why an address is no place for a webhook, or null for a public unicast one. */
export function forbiddenCategory(address: Address): Category | null {
  if (address.kind() === 'ipv6') {
    const v6 = address as ipaddr.IPv6
    const v4 = embeddedIPv4(v6)
    if (v4) return forbiddenCategory(v4)
    const range = v6.range()
    if (range === 'unicast') return v6.match(GLOBAL_UNICAST) ? null : 'reserved'
    return CATEGORY[range] ?? 'reserved'
  }
  const range = address.range()
  return range === 'unicast' ? null : (CATEGORY[range] ?? 'reserved')
}

/**
 * A delivery refused by the rule. Its message is all a webhook's
 * `last_error` says: the kind of destination, never the URL, the name or the
 * address (they would tell an admin what answers inside the network).
 */
export class DestinationRefused extends Error {
  override name = 'DestinationRefused'
  constructor(
    readonly reason: Category | 'credentials in the URL' | 'not http or https',
    /** For the service log only. */
    readonly address: string | null = null,
  ) {
    super(`destination not allowed: ${reason}`)
  }
}

/** One checked address to connect to, and the name the URL gave it (TLS and Host). */
export interface Target {
  address: string
  family: 4 | 6
  port: number
  tls: boolean
  /** SNI and certificate name: the URL's host name; undefined when the URL holds an address. */
  servername: string | undefined
}

export type Lookup = (hostname: string) => Promise<Array<{ address: string; family: number }>>
export type Connect = (target: Target) => Socket

/** Every address a name has, as the system resolver (and /etc/hosts) answers. */
const systemLookup: Lookup = (hostname) => dnsLookup(hostname, { all: true })

/** Opens the connection to the checked address itself: nothing resolves a name after the check. */
export const connectPinned: Connect = (target) =>
  target.tls
    ? tlsConnect({ host: target.address, port: target.port, servername: target.servername })
    : netConnect({ host: target.address, port: target.port })

/** Rejects when the signal fires: a lookup cannot be cancelled, but the wait for it can. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason)
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

/** The host of a URL as an address or a name (no IPv6 brackets). */
const bareHost = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1')

export interface DestinationOptions {
  /** WEBHOOK_ALLOWED_CIDRS: ranges allowed although not public. */
  allowedCidrs?: string | undefined
  /** Name resolution; tests pass their own. */
  lookup?: Lookup
  /** Opening the connection; tests pass a spy. */
  connect?: Connect
}

/** The webhook destination rule, and a POST that goes only where the rule allows. */
export function createDestinations({
  allowedCidrs,
  lookup = systemLookup,
  connect = connectPinned,
}: DestinationOptions = {}) {
  let allowed: (address: string) => boolean = () => false
  try {
    if (allowedCidrs) allowed = addressMatcher(allowedCidrs)
  } catch (err) {
    throw new ConfigError(`invalid configuration: WEBHOOK_ALLOWED_CIDRS: ${(err as Error).message}`)
  }

  /** Why the rule refuses this address, or null when it may be called. */
  function refusal(address: string): Category | null {
    const ip = parseAddress(address)
    if (!ip) return 'reserved'
    const category = forbiddenCategory(ip)
    return category && !allowed(address) ? category : null
  }

  /** What a URL itself breaks of the rule, before any name is resolved. */
  function urlRefusal(url: URL): DestinationRefused | null {
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      return new DestinationRefused('not http or https')
    if (url.username || url.password) return new DestinationRefused('credentials in the URL')
    const host = bareHost(url)
    const category = isIP(host) ? refusal(host) : null
    return category ? new DestinationRefused(category, host) : null
  }

  /**
   * Checks a subscription's URL (create, change): a bad one is a 400 now
   * rather than a dead delivery later. A name passes here; what it resolves
   * to is checked at each delivery. The URL is never echoed (it may hold a
   * password).
   */
  function checkUrl(text: string): void {
    let url: URL
    try {
      url = new URL(text)
    } catch {
      throw new Errors.VALIDATION_FAILED('url: not a valid URL')
    }
    const refused = urlRefusal(url)
    if (!refused) return
    const why =
      refused.reason === 'not http or https'
        ? 'only http and https URLs are allowed'
        : refused.reason === 'credentials in the URL'
          ? 'a user name or password in the URL is not allowed (receivers check the webhook-signature instead)'
          : `${refused.reason} addresses are not allowed as webhook destinations unless WEBHOOK_ALLOWED_CIDRS lists them`
    throw new Errors.WEBHOOK_URL_NOT_ALLOWED(why)
  }

  /**
   * Resolves the URL's host once and checks every address it has (one
   * forbidden answer refuses the name: which one a connection would use is
   * not ours to choose). Throws DestinationRefused.
   */
  async function resolve(url: URL, signal: AbortSignal): Promise<Target> {
    const early = urlRefusal(url)
    if (early) throw early
    const host = bareHost(url)
    const literal = isIP(host)
    const answers = literal
      ? [{ address: host, family: literal }]
      : await Promise.race([lookup(host), untilAborted(signal)])
    for (const { address } of answers) {
      const category = refusal(address)
      if (category) throw new DestinationRefused(category, address)
    }
    const [first] = answers
    if (!first) throw Object.assign(new Error('no address'), { code: 'ENOTFOUND' })
    const tls = url.protocol === 'https:'
    return {
      address: first.address,
      family: first.family === 6 ? 6 : 4,
      port: Number(url.port) || (tls ? 443 : 80),
      tls,
      // A name is presented without its root dot, as certificates and SNI spell it.
      servername: literal ? undefined : host.replace(/\.$/, ''),
    }
  }

  /**
   * POSTs to the URL over a connection to the checked address; the Host header
   * is the URL's. Redirects are not followed. Resolves with the status; the
   * answer's body is not read.
   */
  async function post(
    url: URL,
    request: { headers: Record<string, string>; body: string },
    signal: AbortSignal,
  ): Promise<number> {
    const target = await resolve(url, signal)
    signal.throwIfAborted()
    const socket = connect(target)
    return new Promise<number>((resolvePost, reject) => {
      const req = httpRequest(
        {
          method: 'POST',
          host: target.address,
          port: target.port,
          path: `${url.pathname}${url.search}`,
          headers: {
            ...request.headers,
            host: url.host,
            'content-length': String(Buffer.byteLength(request.body)),
          },
          createConnection: () => socket,
          signal,
        },
        (response) => {
          resolvePost(response.statusCode ?? 0)
          response.destroy()
        },
      )
      req.on('error', reject)
      req.end(request.body)
    }).catch((err: unknown) => {
      socket.destroy()
      throw err
    })
  }

  return { refusal, checkUrl, resolve, post }
}

export type Destinations = ReturnType<typeof createDestinations>
