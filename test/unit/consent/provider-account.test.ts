/**
 * `auth.accountMatch` as pure rules: which provider account facts count, how emails compare
 * (RFC 5321: domain case-insensitive, local part exact), and that a missing, unverified or
 * unmapped account never matches. Plus where the facts come from (ID token, userinfo, token
 * response) with a userinfo stub that records what it was asked.
 */
import { describe, expect, test } from 'vitest'
import {
  accountFromClaims,
  accountFromTokenFields,
  checkAccount,
  describeAccount,
  learnProviderAccount,
  sameEmailAddress,
  type ProviderAccount,
} from '../../../src/consent/provider-account.js'
import { AppError } from '../../../src/errors.js'

const account = (a: Partial<ProviderAccount>): ProviderAccount => ({ sub: undefined, email: undefined, emailVerified: undefined, source: 'id_token', ...a })
const EMAIL = { claim: 'email', verified: true } as const

describe('checkAccount [consent:account-match]', () => {
  test.each([
    ['same address, verified', account({ email: 'carol@example.com', emailVerified: true }), true],
    ['domain differs only in case', account({ email: 'carol@EXAMPLE.com', emailVerified: true }), true],
    ['local part differs in case', account({ email: 'Carol@example.com', emailVerified: true }), false],
    ['another person', account({ email: 'bob@example.com', emailVerified: true }), false],
    ['unverified', account({ email: 'carol@example.com', emailVerified: false }), false],
    ['verification not stated', account({ email: 'carol@example.com' }), false],
    ['no email at all', account({ sub: 'carol@example.com' }), false],
    ['suffix trick', account({ email: 'carol@example.com.evil', emailVerified: true }), false],
  ])('email, verified: %s → %s', (_what, acc, ok) => {
    expect(checkAccount(EMAIL, ['carol@example.com'], acc).ok).toBe(ok)
  })

  test('email with verified: false accepts an unstated verification, still not another address', () => {
    const rule = { claim: 'email', verified: false } as const
    expect(checkAccount(rule, ['carol@example.com'], account({ email: 'carol@example.com' })).ok).toBe(true)
    expect(checkAccount(rule, ['carol@example.com'], account({ email: 'bob@example.com' }))).toEqual({
      ok: false,
      expected: 'the email address carol@example.com',
    })
  })

  test('sub: the mapped subject only; an unmapped user or a prototype key matches nothing', () => {
    const rule = { claim: 'sub', map: { 'carol@example.com': 'prov-123' } } as const
    expect(checkAccount(rule, ['carol@example.com'], account({ sub: 'prov-123' })).ok).toBe(true)
    expect(checkAccount(rule, ['carol@example.com'], account({ sub: 'prov-999' }))).toEqual({ ok: false, expected: 'provider subject prov-123' })
    expect(checkAccount(rule, ['dave@example.com'], account({ sub: 'prov-123' })).ok).toBe(false)
    expect(checkAccount(rule, ['constructor'], account({ sub: 'function Object() { [native code] }' })).ok).toBe(false)
    expect(checkAccount(rule, ['carol@example.com'], account({})).ok).toBe(false)
  })

  test('several candidate users (a shared connection owned by a group): any one matches', () => {
    expect(checkAccount(EMAIL, ['a@x.test', 'b@x.test'], account({ email: 'b@x.test', emailVerified: true })).ok).toBe(true)
    expect(checkAccount(EMAIL, [], account({ email: 'b@x.test', emailVerified: true })).ok).toBe(false)
  })

  test('sameEmailAddress needs both parts on both sides', () => {
    expect(sameEmailAddress('@example.com', '@example.com')).toBe(false)
    expect(sameEmailAddress('carol@', 'carol@')).toBe(false)
    expect(sameEmailAddress('carol', 'carol')).toBe(false)
  })
})

describe('where the account comes from', () => {
  const userinfo = (claims: Record<string, unknown> | Error) => {
    const asked: (string | undefined)[] = []
    return {
      asked,
      client: {
        userinfoEndpoint: 'https://idp.test/userinfo',
        userInfo: async (_token: string, expected: string | undefined) => {
          asked.push(expected)
          if (claims instanceof Error) throw claims
          return claims
        },
      },
    }
  }
  const set = (extra: object = {}) => ({ accessToken: 'at', tokenType: 'bearer', ...extra })

  test('ID token claims first; userinfo only when the email is needed and missing, with the ID token sub expected', async () => {
    const u = userinfo({ sub: 's1', email: 'c@x.test', email_verified: true })
    expect(await learnProviderAccount(u.client, set({ idTokenClaims: { sub: 's1' } }), { needEmail: false, required: false })).toEqual(account({ sub: 's1' }))
    expect(u.asked).toEqual([])
    expect(await learnProviderAccount(u.client, set({ idTokenClaims: { sub: 's1' } }), { needEmail: true, required: true })).toEqual(
      account({ sub: 's1', email: 'c@x.test', emailVerified: true, source: 'userinfo' }),
    )
    expect(u.asked).toEqual(['s1'])
  })

  test('no ID token: userinfo; a failing userinfo is skipped when nothing depends on it, thrown when a check does', async () => {
    const failing = userinfo(new AppError('CREDENTIAL_UNAVAILABLE', 'refused'))
    const skipped: unknown[] = []
    const learnt = await learnProviderAccount(failing.client, set({ accountFields: { user_id: 'U1' } }), {
      needEmail: false,
      required: false,
      onSkipped: (e) => skipped.push(e),
    })
    expect(learnt).toEqual(account({ sub: 'U1', source: 'token_response' }))
    expect(skipped).toHaveLength(1)
    await expect(learnProviderAccount(failing.client, set(), { needEmail: true, required: true })).rejects.toMatchObject({ code: 'CREDENTIAL_UNAVAILABLE' })
  })

  test('no ID token and no userinfo endpoint: the token response fields; never a verified email', async () => {
    const client = { userinfoEndpoint: undefined, userInfo: async () => ({}) }
    expect(
      await learnProviderAccount(client, set({ accountFields: { account_id: 'dbid:1', email: 'c@x.test' } }), { needEmail: true, required: true }),
    ).toEqual(account({ sub: 'dbid:1', email: 'c@x.test', source: 'token_response' }))
    expect(await learnProviderAccount(client, set(), { needEmail: false, required: false })).toEqual(account({ source: 'none' }))
  })

  test('claims are read strictly: a string email_verified is not verified; empty strings are absent', () => {
    expect(accountFromClaims({ sub: '', email: 'c@x.test', email_verified: 'true' }, 'userinfo')).toEqual(account({ email: 'c@x.test', source: 'userinfo' }))
    expect(accountFromTokenFields({})).toEqual(account({ source: 'none' }))
    expect(describeAccount(account({ sub: 's', email: 'e@x.test' }))).toBe('e@x.test')
    expect(describeAccount(account({ sub: 's' }))).toBe('s')
    expect(describeAccount(account({ email: 'e@x.test', emailVerified: false }))).toBe('e@x.test (email not verified)')
  })
})
