import fp from 'fastify-plugin'

/** Purges every PURGE_INTERVAL_MS; one replica at a time (the others find the lock taken and skip the round). */
export default fp(
  async (app, { intervalMs }: { intervalMs: number }) => {
    if (intervalMs <= 0) return
    const sweeper = setInterval(() => {
      app.sessions
        .purge(false)
        .then((counts) => counts && app.log.info(counts, 'purge done'))
        .catch((err: unknown) => app.log.warn({ err }, 'purge failed'))
    }, intervalMs)
    sweeper.unref()
    app.addHook('onClose', async () => clearInterval(sweeper))
  },
  { name: 'purge-sweeper', dependencies: ['sessions'] },
)
