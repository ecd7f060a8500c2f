/**
 * docker-compose.yml and its two companions, checked for what users rely on and what rots
 * quietly: a setting renamed in the service, a database name changed on one side, a secret made
 * optional, a health check that cannot pass, a port or proxy range that no longer lines up.
 * `docker-compose config` (in .ci/run) checks that the files are valid Compose; this checks that
 * they fit the service. The nginx check needs nginx, like the gateway tests.
 */
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import ipaddr from 'ipaddr.js'
import { parse } from 'yaml'
import { addressMatcher } from '../src/addresses.ts'
import { describeConfig, loadConfig } from '../src/config.ts'
import { findNginx } from './fixtures/nginx.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
const read = (path: string) => readFileSync(join(root, path), 'utf8')

interface Service {
  build?: string | { context?: string; dockerfile?: string }
  image?: string
  environment?: Record<string, string>
  ports?: string[]
  depends_on?: Record<string, { condition?: string }>
  healthcheck?: { test: string[] }
  deploy?: { replicas?: number }
  networks?: string[]
  volumes?: string[]
}
interface ComposeFile {
  services: Record<string, Service>
  networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string; ip_range?: string }> } }>
}

const SERVICE = 'session-authority'
const base = parse(read('docker-compose.yml')) as ComposeFile
const single = parse(read('docker-compose.override.yml')) as ComposeFile
const scale = parse(read('docker-compose.scale.yml')) as ComposeFile

/** Compose's merge of an override file, for what these files use: maps merge, lists add up, scalars replace. */
function merge<T>(a: T, b: T): T {
  if (Array.isArray(a) && Array.isArray(b)) return [...new Set([...a, ...b])] as T
  if (isMap(a) && isMap(b)) {
    const out: Record<string, unknown> = { ...a }
    for (const [key, value] of Object.entries(b)) out[key] = key in out ? merge(out[key], value) : value
    return out as T
  }
  return b ?? a
}
const isMap = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v)

/** The two ways the README runs it: one replica (plain `docker compose`), three behind nginx. */
const setups = { single: merge(base, single), scale: merge(base, scale) }

/** Compose's interpolation: `$$`, `${X}`, `${X:-default}`, `${X-default}`, `${X:?error}`, `${X?error}`. */
function interpolate(text: string, vars: Record<string, string>): string {
  return text.replace(
    /\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?)([-?])([^}]*))?\}|([A-Za-z_]\w*))/g,
    (_, dollar, name, colon, op, word, bare) => {
      if (dollar) return '$'
      if (bare) return vars[bare] ?? ''
      const value = vars[name]
      const missing = colon ? !value : value === undefined
      if (op === '?' && missing) throw new Error(`${name}: ${word}`)
      if (op === '-' && missing) return word
      return value ?? ''
    },
  )
}

/** The ENV of the Dockerfile's last stage: what the image sets before compose adds its own. */
function imageEnv(): Record<string, string> {
  const dockerfile = read('Dockerfile').replace(/\\\n/g, ' ')
  const lastStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  const env: Record<string, string> = {}
  for (const line of lastStage.split('\n')) {
    if (!line.startsWith('ENV ')) continue
    for (const [, key, value] of line.matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g))
      env[key as string] = value as string
  }
  return env
}

/** The `.env` the README's Docker Compose section tells users to make, made by its own commands. */
function readmeDotEnv(): Record<string, string> {
  const readme = read('README.md')
  const section = readme.slice(readme.indexOf('\n## Docker Compose\n'))
  const block = /\ncat > \.env <<EOF\n[\s\S]*?\nEOF\n/.exec(section)
  assert.ok(block, 'the Docker Compose section makes the .env')
  const dir = mkdtempSync(join(tmpdir(), 'sa-compose-'))
  try {
    execFileSync('bash', ['-e', '-c', block[0]], { cwd: dir })
    const vars: Record<string, string> = {}
    for (const line of readFileSync(join(dir, '.env'), 'utf8').split('\n')) {
      const eq = line.indexOf('=')
      if (eq > 0) vars[line.slice(0, eq)] = line.slice(eq + 1)
    }
    return vars
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const service = (setup: ComposeFile) => setup.services[SERVICE] as Service
const environment = (setup: ComposeFile, vars: Record<string, string>) =>
  Object.fromEntries(
    Object.entries(service(setup).environment ?? {}).map(([k, v]) => [k, interpolate(v, vars)]),
  )

test('compose sets the service only settings it has (the Configuration table)', () => {
  const known = new Set(describeConfig().map((s) => s.env))
  for (const file of [base, single, scale]) {
    for (const name of Object.keys(file.services[SERVICE]?.environment ?? {})) {
      assert.ok(known.has(name), `${name} is not a setting of src/config.ts`)
    }
  }
})

test("with the README's .env, both setups start the service in production mode, on their Postgres and Redis", () => {
  const dotEnv = readmeDotEnv()
  for (const [name, setup] of Object.entries(setups)) {
    const config = loadConfig({ ...imageEnv(), ...environment(setup, dotEnv) })
    assert.equal(config.devMode, false, name)
    assert.ok(config.signingKeyEncryptionKey, `${name}: the key-encryption key reaches the service`)
    assert.ok(config.adminApiKey, `${name}: the README's admin key reaches the service`)

    // The URLs name the other services and what the Postgres image creates from its own environment.
    const pg = setup.services.postgres?.environment ?? {}
    const db = new URL(config.databaseUrl ?? '')
    assert.equal(db.hostname, 'postgres', name)
    assert.equal(db.username, interpolate(pg.POSTGRES_USER ?? '', dotEnv), name)
    assert.equal(decodeURIComponent(db.password), interpolate(pg.POSTGRES_PASSWORD ?? '', dotEnv), name)
    assert.equal(db.pathname, `/${interpolate(pg.POSTGRES_DB ?? '', dotEnv)}`, name)
    assert.equal(new URL(config.redisUrl ?? '').hostname, 'redis', name)
    if (config.trustProxy) addressMatcher(config.trustProxy) // refused at start if malformed
  }
})

test('a missing secret stops compose with its name, and no secret is written in the files', () => {
  const dotEnv = readmeDotEnv()
  for (const secret of ['SIGNING_KEY_ENCRYPTION_KEY', 'POSTGRES_PASSWORD']) {
    const { [secret]: _, ...without } = dotEnv
    assert.throws(() => environment(setups.single, without), new RegExp(`^Error: ${secret}: .*\\.env`))
  }
  for (const file of [base, single, scale]) {
    for (const [name, svc] of Object.entries(file.services)) {
      for (const [key, value] of Object.entries(svc.environment ?? {})) {
        // Required (`:?`), or optional with no default.
        if (/KEY|SECRET|PASSWORD|TOKEN/.test(key))
          assert.match(value, /^\$\{\w+(:\?[^}]*|:-)\}$/, `${name}: ${key}`)
      }
    }
  }
})

test('every service waits for the health of what it depends on', () => {
  for (const [setupName, setup] of Object.entries(setups)) {
    for (const [name, svc] of Object.entries(setup.services)) {
      for (const [dependency, how] of Object.entries(svc.depends_on ?? {})) {
        assert.equal(how.condition, 'service_healthy', `${setupName}: ${name} → ${dependency}`)
        assert.ok(setup.services[dependency]?.healthcheck?.test, `${dependency} has a health check`)
      }
    }
  }
  assert.deepEqual(Object.keys(base.services[SERVICE]?.depends_on ?? {}).sort(), ['postgres', 'redis'])
  assert.ok(scale.services.lb?.depends_on?.[SERVICE], 'nginx starts once a replica is healthy')
})

/** Runs the service's compose health check, as the container would, against `port`. */
function probe(port: number): Promise<number> {
  const [form, command, ...args] = service(base).healthcheck?.test ?? []
  assert.equal(form, 'CMD')
  assert.equal(command, 'node', 'the image has no curl: the check is node')
  return new Promise((resolve) => {
    const child = execFile(process.execPath, args, { env: { PORT: String(port) }, timeout: 10_000 })
    child.once('exit', (code) => resolve(code ?? -1))
  })
}

test("the service's health check passes on a 200 from /readyz and fails otherwise", async (t) => {
  let status = 200
  const paths: string[] = []
  const server: Server = createServer((req, res) => {
    paths.push(req.url ?? '')
    res.writeHead(status).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const { port } = server.address() as AddressInfo

  assert.equal(await probe(port), 0)
  status = 503
  assert.equal(await probe(port), 1)
  // Readiness (Postgres answers), not just a live process: what the load balancer waits for.
  assert.deepEqual(paths, ['/readyz', '/readyz'])
  server.close()
  assert.equal(await probe(port), 1, 'nothing listening')
})

test('ports: one replica publishes the service PORT on 8080; scaled, only nginx does, and reaches every replica', () => {
  const port = service(base).environment?.PORT ?? imageEnv().PORT
  assert.ok(port, 'the service PORT')
  // A port in docker-compose.yml would be published by every replica: the second could not start.
  assert.equal(base.services[SERVICE]?.ports, undefined)
  assert.deepEqual(setups.single.services[SERVICE]?.ports, [`8080:${port}`])
  assert.equal(setups.scale.services[SERVICE]?.ports, undefined)
  assert.ok((setups.scale.services[SERVICE]?.deploy?.replicas ?? 1) >= 3)

  const lb = setups.scale.services.lb as Service
  const published = /^8080:(\d+)$/.exec(lb.ports?.[0] ?? '')
  assert.ok(published, 'nginx publishes 8080')
  const template = lb.volumes?.find((v) => v.includes(':/etc/nginx/templates/'))
  assert.ok(template, 'the nginx image fills in templates from /etc/nginx/templates')
  const conf = read(template.split(':')[0] as string)
  assert.match(conf, new RegExp(`^\\s*listen ${published[1]};`, 'm'))
  assert.match(conf, new RegExp(`^\\s*set \\$replicas ${SERVICE}:${port};`, 'm'))
  // The image fills in only variables it has; any other ${…} would reach nginx as it is.
  for (const [, name] of conf.matchAll(/\$\{(\w+)\}/g)) {
    assert.equal(name, 'NGINX_LOCAL_RESOLVERS')
    assert.equal(lb.environment?.NGINX_ENTRYPOINT_LOCAL_RESOLVERS, '1')
  }
})

test("scaled, the replicas trust nginx's network as a proxy: its container range, not its gateway", () => {
  const trust = interpolate(service(setups.scale).environment?.TRUST_PROXY ?? '', {})
  const lbNetworks = setups.scale.services.lb?.networks ?? []
  assert.ok(lbNetworks.length > 0)
  for (const network of lbNetworks) {
    assert.ok(setups.scale.services[SERVICE]?.networks?.includes(network), `the replicas are on ${network}`)
    const [range] = setups.scale.networks?.[network]?.ipam?.config ?? []
    assert.ok(range?.subnet && range.ip_range, `${network} has a fixed subnet and container range`)
    const [subnet, bits] = ipaddr.parseCIDR(range.subnet)
    const gateway = ipaddr.fromByteArray(
      subnet.toByteArray().map((b, i, all) => (i === all.length - 1 ? b + 1 : b)),
    )
    const [first] = ipaddr.parseCIDR(range.ip_range)
    assert.ok(first.match(subnet, bits), 'the container range is inside the subnet')
    const trusted = addressMatcher(trust)
    assert.ok(trusted(first.toString()), `TRUST_PROXY (${trust}) covers the containers of ${network}`)
    // The host reaches nginx through the gateway: trusting it would let local callers choose their address.
    assert.ok(!trusted(gateway.toString()), `TRUST_PROXY leaves out ${gateway}, the gateway`)
  }
})

test('the image is built from the Dockerfile at the build context', () => {
  const svc = base.services[SERVICE] as Service
  const build = typeof svc.build === 'string' ? { context: svc.build } : (svc.build ?? {})
  assert.ok(existsSync(join(root, build.context ?? '.', build.dockerfile ?? 'Dockerfile')))
  assert.ok(svc.image, 'the built image gets a name')
})

const NGINX = findNginx()
const skip =
  NGINX || process.env.CI === 'true'
    ? false
    : 'nginx is not installed (apt-get install nginx-light); .ci/run installs it'

test("the load balancer's nginx config is valid (nginx -t)", { skip }, () => {
  const lb = setups.scale.services.lb as Service
  const template = (lb.volumes?.find((v) => v.includes(':/etc/nginx/templates/')) ?? '').split(
    ':',
  )[0] as string
  const dir = mkdtempSync(join(tmpdir(), 'sa-compose-nginx-'))
  try {
    // As the image does: the template filled in, included in the http block.
    writeFileSync(
      join(dir, 'default.conf'),
      read(template).replace(/\$\{NGINX_LOCAL_RESOLVERS\}/g, '127.0.0.11 '),
    )
    mkdirSync(join(dir, 'temp'))
    const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
      .map((name) => `${name}_temp_path ${join(dir, 'temp', name)};`)
      .join(' ')
    writeFileSync(
      join(dir, 'nginx.conf'),
      `events {}\nhttp {\n${temps}\naccess_log off;\ninclude ${join(dir, 'default.conf')};\n}\n`,
    )
    execFileSync(
      NGINX as string,
      [
        '-t',
        '-q',
        '-p',
        dir,
        '-c',
        join(dir, 'nginx.conf'),
        '-e',
        join(dir, 'error.log'),
        '-g',
        `pid ${join(dir, 'nginx.pid')};`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
  } catch (error) {
    const { stderr } = error as { stderr?: Buffer }
    assert.fail(`nginx -t: ${stderr?.toString() ?? error}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
