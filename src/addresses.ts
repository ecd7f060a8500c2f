import { isIPv6 } from 'node:net'
import ipaddr from 'ipaddr.js'
import { LRUCache } from 'lru-cache'

export type Address = ipaddr.IPv4 | ipaddr.IPv6

interface Parsed {
  /** The family it really is: an IPv4-mapped IPv6 address is IPv4 (drift and allowlists compare these). */
  address: Address
  /** The one text form every route stores and compares (Postgres `inet` takes it; host() gives it back). */
  text: string
}

// Parsing an address is dear next to the rest of a cached check, and gateways repeat the same few.
// false: not an address.
const parsed = new LRUCache<string, Parsed | false>({ max: 10_000 })

/**
 * The one address parser of the service: the API schemas, forward-auth's
 * forwarded headers, drift and everything stored go through it. Strict, so
 * that whatever it takes Postgres `inet` takes too: IPv4 only as a dotted
 * quad of decimals (not `1.2.3`, `127.1`, `0x7f.0.0.1`, `2130706433` or
 * `010.0.0.1`, which ipaddr.js and inet_aton would read), IPv6 without a zone
 * id (`fe80::1%eth0`).
 */
function parse(text: string | undefined | null): Parsed | null {
  if (!text || text.length > 64) return null
  let hit = parsed.get(text)
  if (hit === undefined) {
    hit = false
    if (ipaddr.IPv4.isValidFourPartDecimal(text) || (isIPv6(text) && !text.includes('%'))) {
      const address = ipaddr.parse(text)
      hit = { address: ipaddr.process(text), text: canonical(address) }
    }
    parsed.set(text, hit)
  }
  return hit || null
}

/** Lower case, zeros compressed (RFC 5952); IPv4-mapped (and the deprecated IPv4-compatible `::a.b.c.d`, which ipaddr.js reads as mapped) as `::ffff:a.b.c.d`, as Postgres prints it. */
function canonical(address: Address): string {
  if (address.kind() === 'ipv4') return address.toString()
  const v6 = address as ipaddr.IPv6
  return v6.isIPv4MappedAddress() ? `::ffff:${v6.toIPv4Address().toString()}` : v6.toRFC5952String()
}

/** Is this text an address the service accepts (see parse)? */
export function isAddress(text: string): boolean {
  return parse(text) !== null
}

/** An address as the family it really is (IPv4-mapped IPv6 is IPv4), or null when it is not one. */
export function parseAddress(text: string | undefined | null): Address | null {
  return parse(text)?.address ?? null
}

/** The canonical text of an address (what is stored and compared), or null when it is not one. */
export function normalizeAddress(text: string | undefined | null): string | null {
  return parse(text)?.text ?? null
}

/**
 * A test for "is this address in the list", from a comma-separated list of
 * addresses and CIDRs. Throws on an entry that is neither, naming it.
 */
export function addressMatcher(list: string): (address: string | undefined) => boolean {
  const exact = new Set<string>()
  const ranges: Array<[Address, number]> = []
  for (const entry of list.split(',').map((e) => e.trim())) {
    if (!entry) continue
    try {
      if (entry.includes('/')) ranges.push(ipaddr.parseCIDR(entry))
      else exact.add(ipaddr.process(entry).toString())
    } catch {
      throw new Error(`not an address or CIDR: ${entry}`)
    }
  }
  const answers = new LRUCache<string, boolean>({ max: 10_000 })
  return (address) => {
    if (!address) return false
    let inList = answers.get(address)
    if (inList === undefined) {
      const ip = parseAddress(address)
      inList =
        ip !== null &&
        (exact.has(ip.toString()) ||
          ranges.some(([range, bits]) => ip.kind() === range.kind() && ip.match(range, bits)))
      answers.set(address, inList)
    }
    return inList
  }
}

/** The network an address is in, as a CIDR of its family's prefix length (`203.0.113.0/24`); null when not an address. */
export function networkOf(text: string | null | undefined, v4Bits: number, v6Bits: number): string | null {
  const address = parseAddress(text)
  if (!address) return null
  const bits = address.kind() === 'ipv4' ? v4Bits : v6Bits
  const network =
    address.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${bits}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${bits}`)
  return `${canonical(network)}/${bits}`
}
