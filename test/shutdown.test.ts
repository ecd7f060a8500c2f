import assert from 'node:assert/strict'
import { once } from 'node:events'
import { Agent, type IncomingMessage, request } from 'node:http'
import { test } from 'node:test'
import { adminSql, auth, serveProcess } from './helper.ts'

async function until(check: () => boolean, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`a second ${signal} during the close is the same stop: the close finishes, last-seen is written, exit 0`, async (t) => {
    const { child, output, base, schema } = await serveProcess(t, {
      // Last-seen is written only by the close.
      WRITE_BEHIND_INTERVAL_MS: '60000',
      LOG_LEVEL: 'info',
      // The test waits for the log line of its held request.
      LOG_INTROSPECTION: 'true',
    })

    const headers = { ...auth(), 'content-type': 'application/json' }
    const opened = await fetch(`${base}/v1/sessions`, {
      method: 'POST',
      headers,
      body: '{"user_id":"alice"}',
    })
    const { token, session } = (await opened.json()) as { token: string; session: { id: string } }
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${base}/v1/sessions/introspect`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ token, ip: '203.0.113.10' }),
      })
      assert.equal(((await res.json()) as { active: boolean }).active, true)
    }

    // A request in flight holds the close open (as a gateway's would): its headers are in, its body is
    // not, on a kept-alive connection. Its own last-seen write is the last one.
    const body = JSON.stringify({ token, ip: '203.0.113.20' })
    const agent = new Agent({ keepAlive: true })
    t.after(() => agent.destroy())
    const held = request(`${base}/v1/sessions/introspect`, {
      method: 'POST',
      agent,
      headers: { ...headers, 'content-length': Buffer.byteLength(body), 'x-request-id': 'held-open' },
    })
    const reply = once(held, 'response') as Promise<[IncomingMessage]>
    held.write(body.slice(0, 10))
    await until(() => output().includes('"reqId":"held-open"'), 'the held request to arrive')

    child.kill(signal)
    await new Promise((r) => setTimeout(r, 50))
    child.kill(signal)
    await until(() => output().includes('already closing') || child.exitCode !== null, 'the second signal')
    assert.equal(child.exitCode, null, `the second signal ended the process: ${output().slice(-1000)}`)

    held.end(body.slice(10))
    const [res] = await reply
    let text = ''
    for await (const chunk of res) text += chunk
    assert.equal(res.statusCode, 200)
    assert.equal((JSON.parse(text) as { active: boolean }).active, true)

    const [code] = await once(child, 'exit')
    assert.equal(code, 0, output().slice(-2000))
    assert.doesNotMatch(output(), /"level":50/)

    const sql = adminSql()
    t.after(() => sql.end())
    const [row] = await sql`
      select last_seen_at > created_at as seen, host(ip) as ip from ${sql(schema)}.sessions
      where id = ${session.id}`
    assert.deepEqual({ ...row }, { seen: true, ip: '203.0.113.20' })
  })
}
