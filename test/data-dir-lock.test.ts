import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { DataDirInUseError, LOCK_FILE, lockDataDir } from '../src/db/data-dir-lock.ts'
import { freePort, startCli, stop, waitForOk } from './fixtures/process.ts'
import { ADMIN_KEY, auth } from './helper.ts'

/** Embedded Postgres starts slowly on a small, busy machine. */
const START_MS = 240_000

async function tempDataDir(t: TestContext) {
  const dataDir = await mkdtemp(join(tmpdir(), 'sa-lock-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  return dataDir
}

/** Ends a process this test started, unless it has ended (stop() waits forever for one killed by a signal). */
const end = (child: ChildProcess) =>
  child.exitCode === null && child.signalCode === null ? stop(child) : null

/** Runs a CLI command to its end; a test that fails first still ends the process. */
async function cli(t: TestContext, args: string[], env: Record<string, string>) {
  const run = startCli(args, env)
  t.after(() => end(run.child))
  const [code] = await once(run.child, 'exit')
  return { code: code as number, output: run.output() }
}

/** Starts the service on the data folder and waits until it is ready. */
async function serve(t: TestContext, env: Record<string, string>) {
  const service = startCli(['serve'], env)
  t.after(() => end(service.child))
  await waitForOk(`http://127.0.0.1:${env.PORT}/readyz`, service.child, START_MS, service.output)
  return service
}

const envFor = async (dataDir: string) => ({
  PORT: String(await freePort()),
  DATA_DIR: dataDir,
  ADMIN_API_KEY: ADMIN_KEY,
  DEV_MODE: 'true',
  LOG_LEVEL: 'warn',
})

const createKey = ['keys', 'create', '--name', 'refused', '--scopes', 'introspect']

test('while the service owns DATA_DIR, the CLI and a second service refuse in one line; after it stops, the CLI works', async (t) => {
  const dataDir = await tempDataDir(t)
  const env = await envFor(dataDir)
  const service = await serve(t, env)
  const pid = service.child.pid
  const refusal = `session-authority: the data folder ${dataDir} is in use by process ${pid} (stop the service first, or set DATABASE_URL to a shared Postgres)`

  const refused = await cli(t, createKey, env)
  assert.equal(refused.code, 1)
  assert.equal(refused.output, `${refusal}\n`)

  const second = await cli(t, ['serve'], { ...env, PORT: String(await freePort()) })
  assert.equal(second.code, 1)
  assert.equal(second.output, `${refusal}\n`)

  // The service, the one owner, knows of no key the refused command could have made.
  const res = await fetch(`http://127.0.0.1:${env.PORT}/v1/api-keys`, { headers: auth() })
  const { api_keys } = (await res.json()) as { api_keys: Array<{ name: string }> }
  assert.deepEqual(
    api_keys.map((k) => k.name),
    ['ADMIN_API_KEY'],
  )

  assert.equal(await stop(service.child), 0)
  await assert.rejects(readFile(join(dataDir, LOCK_FILE)), { code: 'ENOENT' })
  const created = await cli(t, ['keys', 'create', '--name', 'later', '--scopes', 'introspect'], env)
  assert.equal(created.code, 0, created.output)
  assert.match(created.output, /^sak_[A-Za-z0-9_-]{43}$/m)
  await assert.rejects(readFile(join(dataDir, LOCK_FILE)), { code: 'ENOENT' })
})

test('the lock left by a killed service does not block the next process', async (t) => {
  const dataDir = await tempDataDir(t)
  const env = await envFor(dataDir)
  const service = await serve(t, env)
  service.child.kill('SIGKILL')
  await once(service.child, 'exit')
  const left = JSON.parse(await readFile(join(dataDir, LOCK_FILE), 'utf8')) as { pid: number }
  assert.equal(left.pid, service.child.pid)

  const created = await cli(t, createKey, env)
  assert.equal(created.code, 0, created.output)
  assert.match(created.output, /^sak_[A-Za-z0-9_-]{43}$/m)
  await assert.rejects(readFile(join(dataDir, LOCK_FILE)), { code: 'ENOENT' })
})

test('two starters taking over one stale lock at once: exactly one gets it', async (t) => {
  const dataDir = await tempDataDir(t)
  const dead = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
  dead.kill('SIGKILL')
  await once(dead, 'exit')
  await writeFile(join(dataDir, LOCK_FILE), JSON.stringify({ pid: dead.pid, host: hostname() }))

  const [first, second] = await Promise.allSettled([lockDataDir(dataDir), lockDataDir(dataDir)])
  const won = [first, second].filter((r) => r.status === 'fulfilled')
  const lost = [first, second].filter((r) => r.status === 'rejected')
  assert.equal(won.length, 1)
  assert.ok(lost[0]?.reason instanceof DataDirInUseError)
  assert.match(lost[0].reason.message, new RegExp(`in use by process ${process.pid} `))
  const owner = JSON.parse(await readFile(join(dataDir, LOCK_FILE), 'utf8')) as { pid: number }
  assert.equal(owner.pid, process.pid)

  won[0]?.value()
  await assert.rejects(readFile(join(dataDir, LOCK_FILE)), { code: 'ENOENT' })
  // Released, the folder can be locked again.
  ;(await lockDataDir(dataDir))()
})
