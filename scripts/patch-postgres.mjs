// Fixes, in the installed postgres.js (3.4.x), three faults a lost database
// connection sets off, each of which took this service down or hung it:
//   1. a write scheduled for the next tick runs after the socket is gone and
//      throws outside any promise (an uncaught exception: the process exits);
//   2. closing a connection cancels that scheduled write but leaves its handle
//      set, so the connection never writes again and its queries hang forever;
//   3. the array-type query a new connection sends is not awaited by anyone:
//      a connection lost during it is an unhandled rejection (the process exits).
// Reported upstream (porsager/postgres issues 1154 and 1208); remove this file
// once a release has the fixes. Runs after `npm ci` (postinstall) and in the
// Dockerfile; it is idempotent and fails loudly if the code it expects moved.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MARK = '/* session-authority: patched */'

const EDITS = [
  [
    'function nextWrite(fn) {\n    const x = socket.write(chunk, fn)',
    "function nextWrite(fn) {\n    if (!socket) return (chunk = nextWriteTimer = null, error(Errors.connection('CONNECTION_CLOSED', options)), false)\n    const x = socket.write(chunk, fn)",
  ],
  [
    'clearImmediate(nextWriteTimer)\n    if (socket) {',
    'clearImmediate(nextWriteTimer)\n    nextWriteTimer = chunk = null\n    if (socket) {',
  ],
  [
    "clearImmediate(nextWriteTimer)\n    socket.removeListener('data', data)",
    "clearImmediate(nextWriteTimer)\n    nextWriteTimer = chunk = null\n    socket.removeListener('data', data)",
  ],
  ['return fetchArrayTypes()', 'return fetchArrayTypes().catch(() => {})'],
]

/** The postgres package next to this project's (or, installed as a dependency, its parent's) node_modules. */
function packageDir() {
  let dir = join(dirname(fileURLToPath(import.meta.url)), '..')
  for (;;) {
    const candidate = join(dir, 'node_modules', 'postgres')
    if (existsSync(join(candidate, 'package.json'))) return candidate
    const parent = dirname(dir)
    if (parent === dir) return null
    dir = parent
  }
}

const root = packageDir()
if (!root) {
  console.error('patch-postgres: postgres is not installed; nothing to patch')
  process.exit(0)
}
for (const build of ['src', 'cjs/src', 'cf/src']) {
  const file = join(root, build, 'connection.js')
  if (!existsSync(file)) continue
  let text = readFileSync(file, 'utf8')
  if (text.startsWith(MARK)) continue
  for (const [before, after] of EDITS) {
    if (!text.includes(before)) {
      console.error(
        `patch-postgres: ${file} does not contain the expected code; check whether the fix is upstream`,
      )
      process.exit(1)
    }
    text = text.replace(before, after)
  }
  writeFileSync(file, `${MARK}\n${text}`)
}
