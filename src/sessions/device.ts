import { LRUCache } from 'lru-cache'
import { UAParser } from 'ua-parser-js'
import type { Device } from './model.ts'

const parsed = new LRUCache<string, Device>({ max: 5000 })

/** Parses a User-Agent into browser / OS / device type; results are cached (gateways repeat the same few). */
export function parseDevice(userAgent: string | null | undefined): Device {
  if (!userAgent) return { browser: null, browser_version: null, os: null, os_version: null, type: 'unknown' }
  const hit = parsed.get(userAgent)
  if (hit) return hit
  const ua = new UAParser(userAgent).getResult()
  const device: Device = {
    browser: ua.browser.name ?? null,
    browser_version: ua.browser.version ?? null,
    os: ua.os.name ?? null,
    os_version: ua.os.version ?? null,
    type: ua.device.type ?? (ua.browser.name ? 'desktop' : 'unknown'),
  }
  parsed.set(userAgent, device)
  return device
}
