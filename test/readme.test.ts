import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { ADMIN_KEY, buildTestApp } from './helper.ts'

/** The shell block a newcomer is told to paste, as the README has it, and every later one that calls `$API`. */
async function readmeExamples(): Promise<{ pasted: string; later: string[] }> {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const start = readme.indexOf('```sh\n', readme.indexOf('Paste this into a shell'))
  assert.ok(start > 0, 'the README has the example to paste')
  const blocks = [...readme.slice(start).matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '')
  const [pasted = '', ...rest] = blocks
  return { pasted, later: rest.filter((block) => block.includes('$API')) }
}

test("the README's first example runs when pasted: login, introspection active, devices, logout", async (t) => {
  const { app } = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  // Only the two values a reader's shell would differ in: this test's key and port.
  const { pasted } = await readmeExamples()
  const script = pasted
    .replace(/^KEY=.*$/m, `KEY=${ADMIN_KEY}`)
    .replace(/^API=.*$/m, `API=http://127.0.0.1:${port}`)
  // Asynchronously: the service answering it runs in this process.
  const run = await promisify(execFile)('bash', ['-e', '-o', 'pipefail', '-c', script], { timeout: 60_000 })
  const lines = run.stdout.trim().split('\n')
  const [login, introspection, devices, others, logout, key] = lines.map((line) => JSON.parse(line))
  assert.equal(lines.length, 6, run.stdout)
  assert.match(login.token, /^sat_/)
  assert.equal(
    introspection.active,
    true,
    'the pasted introspection finds the session active (not suspended)',
  )
  assert.equal(introspection.user_id, 'alice')
  assert.deepEqual(
    devices.sessions.map((s: { id: string }) => s.id),
    [login.session.id],
  )
  assert.deepEqual(others, { revoked: 0 })
  assert.equal(logout.status, 'revoked')
  assert.deepEqual(key.api_key.scopes, ['introspect'])
})

test("the README's later API examples run in order in the pasted example's shell, and none is refused", async (t) => {
  const { app } = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const { pasted, later } = await readmeExamples()
  assert.ok(later.length >= 2, 'the README has later examples that call $API')
  // Every curl fails the run on a 4xx or 5xx, which the README's curls would only print.
  const failOnRefusal = 'curl() { command curl --fail-with-body "$@"; }'
  const script = [
    failOnRefusal,
    pasted.replace(/^KEY=.*$/m, `KEY=${ADMIN_KEY}`).replace(/^API=.*$/m, `API=http://127.0.0.1:${port}`),
    ...later.map((block, i) => `echo '--- example ${i + 1}'\n${block}`),
  ].join('\n')
  const run = await promisify(execFile)('bash', ['-e', '-o', 'pipefail', '-c', script], { timeout: 60_000 })
  const sections = run.stdout.split(/^--- example \d+$/m).slice(1)
  assert.equal(sections.length, later.length, run.stdout)
  for (const [i, section] of sections.entries()) {
    const answers = section.trim().split('\n').filter(Boolean)
    assert.ok(answers.length > 0, `example ${i + 1} printed nothing`)
    for (const answer of answers) assert.doesNotThrow(() => JSON.parse(answer), `example ${i + 1}: ${answer}`)
  }
})
