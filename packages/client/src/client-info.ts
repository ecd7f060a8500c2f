import { type HeadersLike, header } from './headers.ts'

/**
 * What clientInfo reads a request from: Node's IncomingMessage, a Fastify or
 * Express request, or a web Request (which has no peer address: pass
 * `remoteAddress` in the options when the runtime gives you one).
 */
export interface RequestLike {
  headers: HeadersLike
  socket?: { remoteAddress?: string | undefined } | null | undefined
  /** Only when there is no socket (Fastify's and Express's `ip` already apply their own trust-proxy setting). */
  ip?: string | undefined
}

export interface ClientInfoOptions {
  /**
   * Whose X-Forwarded-For to believe; by default nobody's, and the peer is the client.
   * A number: that many proxies in front of you (1 = one load balancer), counted from the peer.
   * A list (or comma-separated string) of addresses and CIDRs: the hops to skip while they are listed.
   */
  trustProxy?: number | string | readonly string[]
  /** The peer's address when the request object does not carry it (Deno, Bun, workers). */
  remoteAddress?: string
}

/** The end user's client as the service's `ip` and `user_agent` fields want it (absent when unknown). */
export interface ClientInfo {
  ip?: string
  user_agent?: string
}

// The service refuses longer User-Agents and any control character.
const MAX_USER_AGENT = 1024
const printable = (text: string) =>
  Array.from(text)
    .filter((c) => c.charCodeAt(0) > 0x1f && c.charCodeAt(0) !== 0x7f)
    .join('')

/**
 * The end user's IP address and User-Agent from an incoming request, to pass
 * to openSession, introspect and refresh. X-Forwarded-For is believed only as
 * far as `trustProxy` says: the address is the rightmost hop that is not a
 * trusted proxy, so a client cannot choose its address by sending the header.
 */
export function clientInfo(request: RequestLike, options: ClientInfoOptions = {}): ClientInfo {
  const info: ClientInfo = {}
  const ip = clientAddress(request, options)
  if (ip) info.ip = ip
  const userAgent = printable(header(request.headers, 'user-agent') ?? '').slice(0, MAX_USER_AGENT)
  if (userAgent) info.user_agent = userAgent
  return info
}

function clientAddress(request: RequestLike, { trustProxy, remoteAddress }: ClientInfoOptions) {
  const peer = remoteAddress ?? request.socket?.remoteAddress ?? (request.socket ? undefined : request.ip)
  const forwarded = trustProxy ? header(request.headers, 'x-forwarded-for') : undefined
  // Nearest first: the peer, then X-Forwarded-For from its right end (each proxy appends who called it).
  const hops = [
    peer,
    ...(forwarded ?? '')
      .split(',')
      .map((hop) => hop.trim())
      .filter(Boolean)
      .reverse(),
  ]
  let at = 0
  if (typeof trustProxy === 'number') {
    at = Math.min(Math.max(0, Math.floor(trustProxy)), hops.length - 1)
  } else if (trustProxy) {
    const trusted = trustList(trustProxy)
    // An unknown peer cannot be shown to be a trusted proxy: then nothing forwarded is believed.
    while (at < hops.length - 1 && trusted(parseAddress(hops[at]))) at++
  }
  const client = parseAddress(hops[at])
  return client ? formatAddress(client) : undefined
}

/** An address as bytes: 4 for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6. */
type Address = Uint8Array

function parseIpv4(text: string): Address | null {
  const parts = text.split('.')
  if (parts.length !== 4) return null
  const bytes = new Uint8Array(4)
  for (const [i, part] of parts.entries()) {
    // Decimal only, no leading zeros (010 would be octal to inet_aton), as the service accepts.
    if (!/^(0|[1-9]\d{0,2})$/.test(part) || Number(part) > 255) return null
    bytes[i] = Number(part)
  }
  return bytes
}

function parseIpv6(text: string): Address | null {
  let groupsText = text
  // An IPv4 tail (::ffff:192.0.2.1) stands for the last two groups.
  const tailAt = text.lastIndexOf(':') + 1
  const ipv4 = text.includes('.', tailAt) ? parseIpv4(text.slice(tailAt)) : null
  if (text.includes('.', tailAt)) {
    if (!ipv4) return null
    groupsText = `${text.slice(0, tailAt)}0:0`
  }
  const halves = groupsText.split('::')
  if (halves.length > 2) return null
  const head = halves[0] ? halves[0].split(':') : []
  const tail = halves[1] ? halves[1].split(':') : []
  const given = [...head, ...tail]
  if (!given.every((group) => /^[0-9a-f]{1,4}$/i.test(group))) return null
  if (halves.length === 2 ? given.length > 7 : given.length !== 8) return null
  const words = [...head, ...new Array<string>(8 - given.length).fill('0'), ...tail]
  const bytes = new Uint8Array(16)
  for (const [i, group] of words.entries()) {
    const word = Number.parseInt(group, 16)
    bytes[i * 2] = word >> 8
    bytes[i * 2 + 1] = word & 0xff
  }
  if (ipv4) bytes.set(ipv4, 12)
  const mapped = bytes.subarray(0, 12).every((byte, i) => byte === (i < 10 ? 0 : 0xff))
  return mapped ? bytes.slice(12) : bytes
}

/** An address as a client or proxy may state it: a port (`192.0.2.1:443`, `[2001:db8::1]:443`) and a zone id are dropped. */
function parseAddress(text: string | undefined): Address | null {
  if (!text || text.length > 64) return null
  let host = text.trim()
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host)
  if (bracketed?.[1]) host = bracketed[1]
  else if (/^[\d.]+:\d+$/.test(host)) host = host.slice(0, host.indexOf(':'))
  host = host.replace(/%.*$/, '')
  return host.includes(':') ? parseIpv6(host) : parseIpv4(host)
}

function formatAddress(bytes: Address): string {
  if (bytes.length === 4) return bytes.join('.')
  const words = Array.from({ length: 8 }, (_, i) => ((bytes[i * 2] ?? 0) << 8) | (bytes[i * 2 + 1] ?? 0))
  // RFC 5952: the longest run of two or more zero groups (the first of equals) becomes ::.
  let best = { start: -1, length: 1 }
  for (let i = 0; i < 8; i++) {
    let j = i
    while (j < 8 && words[j] === 0) j++
    if (j - i > best.length) best = { start: i, length: j - i }
    i = j
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':')
  if (best.start < 0) return hex(words)
  return `${hex(words.slice(0, best.start))}::${hex(words.slice(best.start + best.length))}`
}

/** A test for "is this a trusted proxy" from addresses and CIDRs; throws on an entry that is neither. */
function trustList(list: string | readonly string[]): (address: Address | null) => boolean {
  const entries = (typeof list === 'string' ? list.split(',') : list).map((e) => e.trim()).filter(Boolean)
  const ranges = entries.map((entry) => {
    const [host, bits, extra] = entry.split('/')
    const address = parseAddress(host)
    const width = address ? address.length * 8 : 0
    // A CIDR of an IPv4-mapped address (::ffff:10.0.0.0/104) counts its bits within the IPv4 part.
    const prefix = bits === undefined ? width : Number(bits) - (host?.includes(':') && width === 32 ? 96 : 0)
    const badBits = bits !== undefined && !/^\d{1,3}$/.test(bits)
    if (!address || extra !== undefined || badBits || !(prefix >= 0 && prefix <= width)) {
      throw new TypeError(`trustProxy: not an address or CIDR: ${entry}`)
    }
    return { address, prefix }
  })
  return (address) =>
    address !== null &&
    ranges.some(
      (range) => range.address.length === address.length && samePrefix(range.address, address, range.prefix),
    )
}

function samePrefix(a: Address, b: Address, bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff
    if (((a[i] ?? 0) & mask) !== ((b[i] ?? 0) & mask)) return false
  }
  return true
}
