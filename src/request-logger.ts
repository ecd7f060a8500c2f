import type { FastifyBaseLogger } from 'fastify'
import type { Bindings, ChildLoggerOptions } from 'pino'

// Fastify gives every request a child logger bound to its id. Made eagerly, that is a pino child per
// request (and, on a route with its own log level, pino rebuilding its log methods) even when nothing
// is logged, which on the introspection path is nearly always. This one makes the child on the first
// line actually written.

type Method = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
type Levels = { levels: { values: Record<string, number> } }

class LazyRequestLogger {
  #parent: FastifyBaseLogger
  #bindings: Bindings
  #options: ChildLoggerOptions
  #child: FastifyBaseLogger | undefined

  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
  }

  #logger(): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options)
    return this.#child
  }

  get level(): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level
  }

  set level(level: string) {
    this.#logger().level = level
  }

  /** Would a line at `method` be written? Answered without making the child. */
  isLevelEnabled(method: string): boolean {
    const values = (this.#parent as unknown as Partial<Levels>).levels?.values
    const threshold = values?.[this.level]
    const value = values?.[method]
    return threshold === undefined || value === undefined || value >= threshold
  }

  #write(method: Method, args: unknown[]) {
    if (this.isLevelEnabled(method)) (this.#logger()[method] as (...a: unknown[]) => void)(...args)
  }

  fatal(...args: unknown[]) {
    this.#write('fatal', args)
  }
  error(...args: unknown[]) {
    this.#write('error', args)
  }
  warn(...args: unknown[]) {
    this.#write('warn', args)
  }
  info(...args: unknown[]) {
    this.#write('info', args)
  }
  debug(...args: unknown[]) {
    this.#write('debug', args)
  }
  trace(...args: unknown[]) {
    this.#write('trace', args)
  }
  silent() {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options)
  }
}

/** Fastify's childLoggerFactory: a request logger that costs nothing until it writes. */
export function lazyRequestLogger(
  logger: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions,
): FastifyBaseLogger {
  return new LazyRequestLogger(logger, bindings, options) as unknown as FastifyBaseLogger
}
