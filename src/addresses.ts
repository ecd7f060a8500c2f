import ipaddr from 'ipaddr.js'

type Address = ipaddr.IPv4 | ipaddr.IPv6

/** An address as the family it really is (IPv4-mapped IPv6 is IPv4), or null when it is not one. */
export function parseAddress(text: string | undefined): Address | null {
  return text && ipaddr.isValid(text) ? ipaddr.process(text) : null
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
  return (address) => {
    const ip = parseAddress(address)
    if (!ip) return false
    if (exact.has(ip.toString())) return true
    return ranges.some(([range, bits]) => ip.kind() === range.kind() && ip.match(range, bits))
  }
}
