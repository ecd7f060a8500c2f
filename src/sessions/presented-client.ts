import { normalizeAddress } from '../addresses.ts'
import { Errors } from '../errors.ts'
import type { ClientInfo } from './model.ts'

/** An address in the one form that is stored and compared; one the parser refuses is bad input, never stored. */
export function address(ip: string | undefined): string | null {
  if (ip === undefined) return null
  const canonical = normalizeAddress(ip)
  if (canonical === null) throw new Errors.VALIDATION_FAILED('ip: not an IP address')
  return canonical
}

/** The client as given, its address in canonical form. */
export function presentedClient(client: ClientInfo): ClientInfo {
  if (client.ip === undefined) return client
  const ip = address(client.ip) as string
  return ip === client.ip ? client : { ...client, ip }
}
