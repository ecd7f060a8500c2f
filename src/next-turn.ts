let waiting: Array<() => void> = []

function release() {
  const batch = waiting
  waiting = []
  for (const run of batch) run()
}

/**
 * Runs `callback` on the next turn of the event loop, together with every
 * other one of this turn. Answers computed in memory then leave in one burst
 * of socket writes instead of one write (and one wake-up of the peer) per
 * request: under load that is most of a cached introspection's cost. Idle,
 * it delays an answer by one loop turn (microseconds).
 */
export function onNextTurn(callback: () => void): void {
  if (waiting.push(callback) === 1) setImmediate(release)
}

/** Resolves on the next turn of the event loop (see onNextTurn). */
export function nextTurn(): Promise<void> {
  return new Promise(onNextTurn)
}
