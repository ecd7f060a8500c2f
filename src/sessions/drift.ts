import type ipaddr from 'ipaddr.js'
import { parseAddress } from '../addresses.ts'
import type { Config } from '../config.ts'
import { parseDevice } from './device.ts'
import type { Binding, Client, Device, DriftPolicy, Required } from './model.ts'

/** What a use from `client` means for a session bound to another. */
export interface Verdict {
  /** The dimensions that drifted and whose policy is not `ignore`, with that policy. */
  drifted: Array<{ dimension: 'user_agent' | 'ip'; policy: Exclude<DriftPolicy, 'ignore'> }>
  /** The same browser, OS and device type in a newer version: the stored User-Agent should follow. */
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

/** -1, 0 or 1 as dotted version a is older, the same or newer than b; null when either is unknown. */
function compareVersions(a: string | null, b: string | null): number | null {
  if (!a || !b) return null
  const x = a.split(/[._]/).map((p) => Number.parseInt(p, 10) || 0)
  const y = b.split(/[._]/).map((p) => Number.parseInt(p, 10) || 0)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return Math.sign(d)
  }
  return 0
}

/**
 * Is `presented` a later release of the bound client: a newer browser, or the
 * same browser on a newer OS? Only a move forward is followed, so a user
 * alternating two versions (two machines, a staged rollout) rewrites nothing.
 */
function isNewer(presented: Device, bound: Device): boolean {
  const browser = compareVersions(presented.browser_version, bound.browser_version)
  if (browser !== 0) return browser === 1
  return compareVersions(presented.os_version, bound.os_version) === 1
}

/**
 * Judges a use of a session against the client it is bound to. A value the
 * session was opened without is never checked. A value missing from the use
 * is "not checked" too, unless `required` says the caller always has it
 * (forward-auth): then, under a `suspend` policy, its absence is drift (under
 * `record` there is no client to rebind to, so nothing happens). Identical
 * values, the common case, cost a string comparison; parsed User-Agents and
 * addresses are cached.
 */
export function judgeDrift(
  bound: Client,
  binding: Binding,
  ip: string | null,
  userAgent: string | null,
  settings: Settings,
  required: Required = {},
): Verdict {
  const verdict: Verdict = { drifted: [], uaUpdated: false }
  const uaPolicy = binding.user_agent ?? settings.uaDriftPolicy
  if (bound.user_agent && uaPolicy !== 'ignore') {
    if (!userAgent) {
      if (required.user_agent && uaPolicy === 'suspend')
        verdict.drifted.push({ dimension: 'user_agent', policy: uaPolicy })
    } else if (userAgent !== bound.user_agent) {
      const presented = parseDevice(userAgent)
      if (!sameClientKind(bound.device, presented))
        verdict.drifted.push({ dimension: 'user_agent', policy: uaPolicy })
      else verdict.uaUpdated = isNewer(presented, bound.device)
    }
  }
  const ipPolicy = binding.ip ?? settings.ipDriftPolicy
  if (bound.ip && ipPolicy !== 'ignore') {
    if (!ip) {
      if (required.ip && ipPolicy === 'suspend') verdict.drifted.push({ dimension: 'ip', policy: ipPolicy })
    } else if (ip !== bound.ip) {
      const v4 = binding.ipv4_prefix ?? settings.ipv4DriftPrefix
      const v6 = binding.ipv6_prefix ?? settings.ipv6DriftPrefix
      if (!samePrefix(ip, bound.ip, v4, v6)) verdict.drifted.push({ dimension: 'ip', policy: ipPolicy })
    }
  }
  return verdict
}
