/**
 * The slice of `oidc-provider` (9.x ships no typings) that Keyway's test helpers use. It is
 * deliberately small: configuration stays a plain record, passed through as oidc-provider
 * documents it, and everything else is reached through the helper in
 * `start-authorization-server.ts`, never directly from tests.
 * @module
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'

  /** The koa context fields the helper reads; `oidc` is set by the provider for its own routes. */
  export interface ProviderContext {
    readonly method: string
    readonly path: string
    readonly status: number
    readonly headers: Readonly<Record<string, string | string[] | undefined>>
    readonly oidc?: {
      readonly client?: { readonly clientId: string }
      readonly body?: Readonly<Record<string, unknown>>
    }
  }

  export class Provider {
    constructor(issuer: string, configuration: Readonly<Record<string, unknown>>)
    readonly issuer: string
    /** koa: the node request listener. */
    callback(): (req: IncomingMessage, res: ServerResponse) => void
    /** koa middleware, run before the provider's own. */
    use(fn: (ctx: ProviderContext, next: () => Promise<void>) => Promise<void>): this
    on(event: string, listener: (...args: unknown[]) => void): this
  }

  export const errors: {
    readonly InvalidTarget: new (description?: string) => Error
  }

  export default Provider
}
