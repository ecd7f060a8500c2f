import ipaddr from 'ipaddr.js'
import { LRUCache } from 'lru-cache'

export type Address = ipaddr.IPv4 | ipaddr.IPv6

// Parsing an address is dear next to the rest of a cached check, and gateways repeat the same few.
// false: not an address.
const parsed = new LRUCache<string, Address | false>({ max: 10_000 })

/** An address as the family it really is (IPv4-mapped IPv6 is IPv4), or null when it is not one. */
export function parseAddress(text: string | undefined): Address | null {
  if (!text) return null
  let address = parsed.get(text)
  if (address === undefined) {
    address = ipaddr.isValid(text) ? ipaddr.process(text) : false
    parsed.set(text, address)
  }
  return address || null
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
