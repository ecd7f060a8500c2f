/** Request headers as Node (IncomingMessage, Fastify, Express) or the web (`Request`, `Headers`) hold them. */
export type HeadersLike =
  | { get(name: string): string | null }
  | Record<string, string | readonly string[] | undefined>

/** One header's value (repeated ones joined by ", ", as Headers does), whatever holds them. */
export function header(headers: HeadersLike, name: string): string | undefined {
  if (typeof headers.get === 'function')
    return (headers.get as (n: string) => string | null)(name) ?? undefined
  const record = headers as Record<string, string | readonly string[] | undefined>
  let value = record[name]
  if (value === undefined) {
    const key = Object.keys(record).find((k) => k.toLowerCase() === name)
    value = key === undefined ? undefined : record[key]
  }
  return typeof value === 'string' ? value : value?.join(', ')
}
