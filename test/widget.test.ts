import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { buildTestApp } from './helper.ts'

/**
 * The <session-devices> element as the service serves it: the file in widget/, at a short-cached path
 * and at a versioned, immutable one, loadable by a page of any origin. test/widget-browser.test.ts runs it.
 */

const ROOT = new URL('../', import.meta.url)
const shipped = () => readFile(new URL('widget/session-devices.js', ROOT))
const packageVersion = async () =>
  (JSON.parse(await readFile(new URL('package.json', ROOT), 'utf8')) as { version: string }).version

test('GET /widget/session-devices.js: the file, as a cross-origin module script, cached five minutes', async (t) => {
  const { app } = await buildTestApp(t)
  const res = await app.inject({ method: 'GET', url: '/widget/session-devices.js' })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8')
  assert.equal(res.headers['cache-control'], 'public, max-age=300')
  assert.equal(res.headers['access-control-allow-origin'], '*')
  assert.equal(res.headers['cross-origin-resource-policy'], 'cross-origin')
  assert.equal(res.headers['x-content-type-options'], 'nosniff')
  assert.match(String(res.headers.etag), /^"[\w-]{32}"$/)
  assert.ok(res.rawPayload.equals(await shipped()), 'the served bytes are widget/session-devices.js')
  assert.equal(Number(res.headers['content-length']), res.rawPayload.length)
  assert.equal(res.headers['set-cookie'], undefined)

  const head = await app.inject({ method: 'HEAD', url: '/widget/session-devices.js' })
  assert.equal(head.statusCode, 200)
  assert.equal(head.body, '')
  assert.equal(head.headers.etag, res.headers.etag)
  assert.equal(head.headers['cache-control'], 'public, max-age=300')
})

test('GET /widget/<version>/session-devices.js: the same bytes, immutable; another version is a 404', async (t) => {
  const { app } = await buildTestApp(t)
  const version = await packageVersion()
  const plain = await app.inject({ method: 'GET', url: '/widget/session-devices.js' })
  const res = await app.inject({ method: 'GET', url: `/widget/${version}/session-devices.js` })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['cache-control'], 'public, max-age=31536000, immutable')
  assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8')
  assert.equal(res.headers['access-control-allow-origin'], '*')
  assert.equal(res.headers['cross-origin-resource-policy'], 'cross-origin')
  assert.equal(res.headers.etag, plain.headers.etag)
  assert.ok(res.rawPayload.equals(plain.rawPayload))

  for (const other of ['0.0.0', `${version}-rc.1`, 'latest']) {
    const missing = await app.inject({ method: 'GET', url: `/widget/${other}/session-devices.js` })
    assert.equal(missing.statusCode, 404, other)
    assert.equal(missing.json().error.code, 'NOT_FOUND')
    assert.match(missing.json().error.message, new RegExp(`this is ${version.replaceAll('.', '\\.')}`))
    // Never cached: the version may be deployed a minute later.
    assert.equal(missing.headers['cache-control'], 'no-store')
  }
  const long = await app.inject({ method: 'GET', url: `/widget/${'9'.repeat(65)}/session-devices.js` })
  assert.equal(long.statusCode, 400)
  assert.equal(long.json().error.code, 'VALIDATION_FAILED')
})

test('If-None-Match with the ETag is a 304 without a body, on both paths', async (t) => {
  const { app } = await buildTestApp(t)
  const version = await packageVersion()
  const first = await app.inject({ method: 'GET', url: '/widget/session-devices.js' })
  const etag = String(first.headers.etag)
  for (const url of ['/widget/session-devices.js', `/widget/${version}/session-devices.js`]) {
    for (const ifNoneMatch of [etag, `W/${etag}`, `"older", ${etag}`, '*']) {
      const res = await app.inject({ method: 'GET', url, headers: { 'if-none-match': ifNoneMatch } })
      assert.equal(res.statusCode, 304, `${url} ${ifNoneMatch}`)
      assert.equal(res.body, '')
      assert.equal(res.headers.etag, etag)
      assert.match(String(res.headers['cache-control']), /^public, max-age=/)
    }
    const stale = await app.inject({ method: 'GET', url, headers: { 'if-none-match': '"older"' } })
    assert.equal(stale.statusCode, 200)
    assert.ok(stale.rawPayload.equals(first.rawPayload))
  }
})

test('the package ships the widget: npm pack lists widget/session-devices.js', async () => {
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: ROOT,
  })
  const [pack] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>
  const paths = pack?.files.map((file) => file.path) ?? []
  assert.ok(paths.includes('widget/session-devices.js'), paths.join(', '))
  assert.ok(paths.includes('widget/README.md'), paths.join(', '))
})

test('the widget builds its DOM without markup parsing or eval (Trusted Types and a strict CSP allow it)', async () => {
  const source = (await shipped()).toString('utf8')
  for (const pattern of [
    /\.innerHTML\b/,
    /\.outerHTML\b/,
    /insertAdjacentHTML/,
    /\beval\(/,
    /new Function\(/,
  ]) {
    assert.doesNotMatch(source, pattern)
  }
  // A style attribute or a <style> element needs 'unsafe-inline'; the stylesheet is constructed instead.
  assert.doesNotMatch(source, /setAttribute\(\s*'style'/)
  assert.doesNotMatch(source, /createElement\(\s*'style'/)
  assert.match(source, /adoptedStyleSheets/)
  // Plain ES module, no import: nothing to resolve from a CDN or a bundler.
  assert.doesNotMatch(source, /^\s*import\s/m)
})
