import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { within } from './fixtures/bounded.ts'
import { metricSum } from './fixtures/metrics.ts'
import { ADMIN_KEY, adminSql, serveProcess } from './helper.ts'

const INTERVAL_MS = 300

test('a killed process loses only the uses since its last write-behind flush, never a session', async (t) => {
  const { child, base, schema } = await serveProcess(t, {
    WRITE_BEHIND_INTERVAL_MS: String(INTERVAL_MS),
    LOG_LEVEL: 'warn',
  })
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }
  const opened = await fetch(`${base}/v1/sessions`, { method: 'POST', headers, body: '{"user_id":"alice"}' })
  const { token, session } = (await opened.json()) as { token: string; session: { id: string } }

  /** One use; the time it was sent (the service records its own time of it, no earlier). */
  let lastUse = 0
  const use = async () => {
    const sentAt = Date.now()
    const res = await fetch(`${base}/v1/sessions/introspect`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ token, ip: '203.0.113.77' }),
    })
    assert.equal(((await res.json()) as { active: boolean }).active, true)
    lastUse = sentAt
    return sentAt
  }
  const flushes = async () =>
    metricSum(await (await fetch(`${base}/metrics`)).text(), 'write_behind_flush_seconds_count')
  const pause = () => new Promise((r) => setTimeout(r, 10))

  // Uses for a while, then one the write-behind must have written before the kill: the flush under way
  // when it was made may not hold it, the one after does. Uses go on meanwhile, and may be lost.
  for (const until = Date.now() + 1500; Date.now() < until; await pause()) await use()
  const kept = await use()
  const before = await flushes()
  await within(
    (async () => {
      while ((await flushes()) < before + 2) {
        await use()
        await pause()
      }
    })(),
    30_000,
    'two write-behind flushes after the use',
  )
  child.kill('SIGKILL')
  await once(child, 'exit')

  const sql = adminSql()
  t.after(() => sql.end())
  const [row] = await sql`
    select status, last_seen_at, host(ip) as ip from ${sql(schema)}.sessions where id = ${session.id}`
  assert.equal(row?.status, 'active')
  t.diagnostic(
    `last-seen lost by the kill: ${lastUse - row?.last_seen_at.getTime()} ms (interval ${INTERVAL_MS} ms)`,
  )
  assert.ok(row?.last_seen_at.getTime() >= kept, 'the use a completed flush followed is written')
  assert.equal(row?.ip, '203.0.113.77')
})
