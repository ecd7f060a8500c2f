// Writes openapi.yaml from the route schemas. A test fails when the committed file differs.
import { writeFile } from 'node:fs/promises'
import { openapiYaml } from '../src/openapi.ts'
import { buildDocumentApp } from '../test/helper.ts'

const { app, close } = await buildDocumentApp()
await writeFile(new URL('../openapi.yaml', import.meta.url), openapiYaml(app))
await close()
console.log('openapi.yaml written')
