import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { ADMIN_KEY, adminSql, serveProcess } from './helper.ts'

const INTERVAL_MS = 300

test('a killed process loses at most one write-behind interval of last-seen, never a session', async (t) => {
  const { child, base, schema } = await serveProcess(t, {
    WRITE_BEHIND_INTERVAL_MS: String(INTERVAL_MS),
    LOG_LEVEL: 'warn',
  })
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }
  const opened = await fetch(`${base}/v1/sessions`, { method: 'POST', headers, body: '{"user_id":"alice"}' })
  const { token, session } = (await opened.json()) as { token: string; session: { id: string } }

  let lastUse = 0
  const until = Date.now() + 1500
  while (Date.now() < until) {
    const res = await fetch(`${base}/v1/sessions/introspect`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ token, ip: '203.0.113.77' }),
    })
    assert.equal(((await res.json()) as { active: boolean }).active, true)
    lastUse = Date.now()
    await new Promise((r) => setTimeout(r, 10))
  }
  child.kill('SIGKILL')
  await once(child, 'exit')

  const sql = adminSql()
  t.after(() => sql.end())
  const [row] = await sql`
    select status, last_seen_at, host(ip) as ip from ${sql(schema)}.sessions where id = ${session.id}`
  assert.equal(row?.status, 'active')
  const lost = lastUse - row?.last_seen_at.getTime()
  t.diagnostic(`last-seen lost by the kill: ${lost} ms (interval ${INTERVAL_MS} ms)`)
  // One interval, plus the scheduling slack of a busy test machine.
  assert.ok(lost <= INTERVAL_MS + 200, `lost ${lost} ms`)
  assert.equal(row?.ip, '203.0.113.77')
})
