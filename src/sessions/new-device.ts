import { networkOf } from '../addresses.ts'
import type { Policy } from '../tenants/store.ts'
import type { Device } from './model.ts'

const DAY_MS = 86_400_000

/** What a sign-in is recorded as, to tell whether the user has signed in from that device lately. */
export interface Sighting {
  /** Browser family, OS and device type (and the network, by policy): versions and addresses within it are the same device. */
  key: string
  /** A sign-in from the same key at or after this instant makes this one not new. */
  knownSince: Date
  /** What `session.new_device` says besides the session's own client. */
  network: string | null
}

/**
 * How a sign-in is judged "new device", under the tenant's policy; null when
 * it is not judged: the policy is off, or the User-Agent told nothing (a
 * backend that sends none would otherwise announce every sign-in, or none).
 */
export function sightingOf(
  device: Device,
  ip: string | null,
  policy: Pick<Policy, 'newDeviceWindowDays' | 'newDeviceByNetwork' | 'ipv4DriftPrefix' | 'ipv6DriftPrefix'>,
  now: number,
): Sighting | null {
  if (policy.newDeviceWindowDays <= 0) return null
  if (!device.browser && !device.os) return null
  const network = policy.newDeviceByNetwork
    ? networkOf(ip, policy.ipv4DriftPrefix, policy.ipv6DriftPrefix)
    : null
  const key = JSON.stringify([device.browser, device.os, device.type, network])
  return { key, knownSince: new Date(now - policy.newDeviceWindowDays * DAY_MS), network }
}

/** Purge keeps a device's last sign-in at least as long as the longest window a tenant may set. */
export const DEVICE_MEMORY_DAYS = 366
