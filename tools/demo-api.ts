/**
 * The offline demo API behind `npm start`: a tiny notes service on loopback that accepts only
 * the demo bearer token, so a person can watch Keyway inject it. Not part of Keyway itself.
 * @module
 */
import { timingSafeEqual } from 'node:crypto'
import { Hono } from 'hono'

export function createDemoApi(token: string): Hono {
  const notes: { id: number; text: string; at: string }[] = [{ id: 1, text: 'Keyway injected the credential for this call', at: new Date().toISOString() }]
  const expected = Buffer.from(`Bearer ${token}`)
  const app = new Hono()
  app.use('*', async (c, next) => {
    const got = Buffer.from(c.req.header('authorization') ?? '')
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return c.json({ error: 'unauthorized' }, 401)
    return next()
  })
  app.get('/api/notes', (c) => c.json({ notes }))
  app.post('/api/notes', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { text?: unknown }
    if (typeof body.text !== 'string' || body.text.length === 0) return c.json({ error: 'text is required' }, 400)
    const note = { id: notes.length + 1, text: body.text.slice(0, 1000), at: new Date().toISOString() }
    notes.push(note)
    return c.json(note, 201)
  })
  app.get('/admin/stats', (c) => c.json({ notes: notes.length, uptimeSeconds: Math.round(process.uptime()) }))
  return app
}
