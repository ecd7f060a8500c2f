import type ipaddr from 'ipaddr.js'
import { parseAddress } from '../addresses.ts'
import type { Config } from '../config.ts'
import { type Device, parseDevice } from './device.ts'

export type DriftPolicy = 'ignore' | 'record' | 'suspend'

/** Per-session overrides of the drift settings, chosen at login (`binding`). */
export interface Binding {
  user_agent?: DriftPolicy
  ip?: DriftPolicy
  ipv4_prefix?: number
  ipv6_prefix?: number
}

/** The client a session is bound to, or one that presents its token. */
export interface Client {
  ip: string | null
  user_agent: string | null
  device: Device
}

/** What a use from `client` means for a session bound to another. */
export interface Verdict {
  /** The dimensions that drifted and whose policy is not `ignore`, with that policy. */
  drifted: Array<{ dimension: 'user_agent' | 'ip'; policy: 'record' | 'suspend' }>
  /** Same browser, OS and device type in a new version: the stored User-Agent should follow. */
  uaUpdated: boolean
}

type Settings = Pick<Config, 'uaDriftPolicy' | 'ipDriftPolicy' | 'ipv4DriftPrefix' | 'ipv6DriftPrefix'>

/** Do two addresses share the tolerated prefix? A change of family never does. */
export function samePrefix(a: string, b: string, v4Bits: number, v6Bits: number): boolean {
  const x = parseAddress(a)
  const y = parseAddress(b)
  if (!x || !y || x.kind() !== y.kind()) return false
  if (x.kind() === 'ipv4') return (x as ipaddr.IPv4).match(y as ipaddr.IPv4, v4Bits)
  return (x as ipaddr.IPv6).match(y as ipaddr.IPv6, v6Bits)
}

/** The same browser family, OS family and device type: a version change is not drift. */
function sameClientKind(a: Device, b: Device): boolean {
  return a.browser === b.browser && a.os === b.os && a.type === b.type
}

/**
 * Judges a use of a session against the client it is bound to. Missing
 * values (no IP or User-Agent in the call, or none at login) are "not
 * checked", never drift. Identical values, the common case, cost a string
 * comparison; parsed User-Agents and addresses are cached.
 */
export function judgeDrift(
  bound: Client,
  binding: Binding,
  ip: string | null,
  userAgent: string | null,
  settings: Settings,
): Verdict {
  const verdict: Verdict = { drifted: [], uaUpdated: false }
  const uaPolicy = binding.user_agent ?? (settings.uaDriftPolicy as DriftPolicy)
  if (userAgent && bound.user_agent && userAgent !== bound.user_agent && uaPolicy !== 'ignore') {
    if (sameClientKind(bound.device, parseDevice(userAgent))) verdict.uaUpdated = true
    else verdict.drifted.push({ dimension: 'user_agent', policy: uaPolicy })
  }
  const ipPolicy = binding.ip ?? (settings.ipDriftPolicy as DriftPolicy)
  if (ip && bound.ip && ip !== bound.ip && ipPolicy !== 'ignore') {
    const v4 = binding.ipv4_prefix ?? settings.ipv4DriftPrefix
    const v6 = binding.ipv6_prefix ?? settings.ipv6DriftPrefix
    if (!samePrefix(ip, bound.ip, v4, v6)) verdict.drifted.push({ dimension: 'ip', policy: ipPolicy })
  }
  return verdict
}
