/**
 * The JSON Schema of the config file, generated from the zod schema so editors can validate
 * and complete `connections.yaml` (`# yaml-language-server: $schema=...`). The shipped file
 * `config/connections.schema.json` is this output; a test keeps the two in sync.
 * @module
 */
import * as z from 'zod'
import { ConfigSchema } from './schema.js'

export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(ConfigSchema, { io: 'input', target: 'draft-2020-12' }),
    title: 'Keyway connections file',
  }
}

export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`
}
