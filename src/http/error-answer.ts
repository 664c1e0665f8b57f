/**
 * How an HTTP route answers a failure it did not handle (the app's `onError`): an `AppError`
 * whose message is written for the caller becomes `{ error: <code>, message }` with the status
 * of its code (`HTTP_STATUS` in `errors.ts`, README "Error codes"); anything else is logged and
 * answered as a bare 500, so no detail of an unexpected failure leaves the server.
 * @module
 */
import type { Context } from 'hono'
import { isAppError } from '../errors.js'
import { errorMessage, type Logger } from '../log.js'

/** The `onError` handler of an app that logs to `log`. */
export function errorAnswer(log: Logger): (e: Error, c: Context) => Response {
  return (e, c) => {
    if (isAppError(e) && e.expose) return c.json({ error: e.code, message: e.message }, e.httpStatus)
    log.error('http request failed', { path: c.req.path, error: errorMessage(e) })
    return c.json({ error: 'internal_error' }, 500)
  }
}
