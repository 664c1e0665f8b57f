/**
 * `npm run schema`: regenerates config/connections.schema.json from the zod schema.
 * @module
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { configJsonSchemaText } from '../src/config/json-schema.js'
import { packageRoot } from './paths.js'

const target = path.join(packageRoot(), 'config/connections.schema.json')
writeFileSync(target, configJsonSchemaText())
process.stdout.write(`wrote ${target}\n`)
