#!/usr/bin/env node
// The CLI: the compiled one when the package is built (as published), the TypeScript
// source through tsx in a checkout (where `npm ci` installs it and nothing is built).
import { existsSync } from 'node:fs'

const compiled = new URL('../dist/cli.js', import.meta.url)
if (existsSync(compiled)) {
  await import(compiled.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import(new URL('../src/cli.ts', import.meta.url).href)
}
