import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript'

/** The service's contract, and the types generated from it that the client is written against. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../../openapi.yaml', import.meta.url))
export const SCHEMA_FILE = fileURLToPath(new URL('../src/schema.ts', import.meta.url))

/** src/schema.ts as openapi-typescript makes it from an OpenAPI document (YAML text). */
export async function generateSchema(openapiYaml: string): Promise<string> {
  const ast = await openapiTS(openapiYaml, { silent: true })
  return COMMENT_HEADER + astToString(ast)
}

// `npm run sdk:types` at the repository root: rewrite src/schema.ts from openapi.yaml.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await writeFile(SCHEMA_FILE, await generateSchema(await readFile(OPENAPI_FILE, 'utf8')))
  console.log(`wrote ${SCHEMA_FILE}`)
}
