/**
 * The provider account behind a consent (README "Consent links and provider accounts"): who signed
 * in at the provider, learnt after the code exchange from the ID token's claims (OpenID Connect
 * Core §3.1.3.7), else the userinfo endpoint (§5.3) when the provider has one, else the account
 * fields some providers add to the token response; and whether that account is the one
 * `auth.accountMatch` requires for the Keyway user. Matching is pure; the one I/O step (userinfo)
 * goes through the connection's OAuth client, so through the egress guard. This module stores
 * nothing and never sees a browser; it must not treat an unverified or missing claim as a match.
 * @module
 */
import type { AccountMatch } from '../config/schema.js'
import { oneLine } from '../safe-text.js'
import type { OAuthClient, TokenSet } from '../credentials/oauth-client.js'

/** Where the account facts came from. */
export type AccountSource = 'id_token' | 'userinfo' | 'token_response' | 'none'

/** What the provider said about the signed-in account. */
export interface ProviderAccount {
  readonly sub: string | undefined
  readonly email: string | undefined
  /** `email_verified` when the provider stated it as a JSON boolean; a string `"true"` counts as not stated. */
  readonly emailVerified: boolean | undefined
  readonly source: AccountSource
}

const NO_ACCOUNT: ProviderAccount = { sub: undefined, email: undefined, emailVerified: undefined, source: 'none' }

/** Token response members that name the account, most specific first (`email` is read on its own). */
const TOKEN_RESPONSE_ID_FIELDS = ['sub', 'user_id', 'account_id', 'uid', 'user'] as const

/** The account facts of an ID token or a userinfo response. */
export function accountFromClaims(claims: Readonly<Record<string, unknown>>, source: 'id_token' | 'userinfo'): ProviderAccount {
  return {
    sub: nonEmpty(claims.sub),
    email: nonEmpty(claims.email),
    emailVerified: typeof claims.email_verified === 'boolean' ? claims.email_verified : undefined,
    source,
  }
}

/** The account facts a non-OpenID provider put into its token response (never a verified email). */
export function accountFromTokenFields(fields: Readonly<Record<string, string>>): ProviderAccount {
  const sub = TOKEN_RESPONSE_ID_FIELDS.map((k) => fields[k]).find((v) => v !== undefined && v !== '')
  const email = nonEmpty(fields.email)
  return sub === undefined && email === undefined ? NO_ACCOUNT : { sub, email, emailVerified: undefined, source: 'token_response' }
}

export interface LearnOptions {
  /** The check needs the email: fetch userinfo when the ID token lacks it. */
  readonly needEmail: boolean
  /** A check depends on the answer: a failing userinfo request throws instead of being skipped. */
  readonly required: boolean
  /** Told about a userinfo failure that was skipped. */
  readonly onSkipped?: (e: unknown) => void
}

/**
 * Learns the account a token response belongs to. The ID token comes first; a code-flow ID token
 * often carries only `sub` (OpenID Connect Core §5.4 puts scope claims at userinfo), so when the
 * email is needed userinfo is asked too, with the ID token's `sub` as the expected subject (§5.3.2).
 * @throws AppError from the userinfo request, only when `required`
 */
export async function learnProviderAccount(
  client: Pick<OAuthClient, 'userinfoEndpoint' | 'userInfo'>,
  set: TokenSet,
  opts: LearnOptions,
): Promise<ProviderAccount> {
  const fallback = set.accountFields ? accountFromTokenFields(set.accountFields) : NO_ACCOUNT
  const fromIdToken = set.idTokenClaims ? accountFromClaims(set.idTokenClaims, 'id_token') : undefined
  if (fromIdToken && (!opts.needEmail || fromIdToken.email !== undefined || !client.userinfoEndpoint)) return fromIdToken
  if (!client.userinfoEndpoint) return fallback
  try {
    const info = accountFromClaims(await client.userInfo(set.accessToken, fromIdToken?.sub), 'userinfo')
    return fromIdToken ? { ...info, sub: fromIdToken.sub } : info
  } catch (e) {
    if (opts.required) throw e
    opts.onSkipped?.(e)
    return fromIdToken ?? fallback
  }
}

/** How the account is named on pages, in the audit log and in `keyway credentials`: one bounded line. */
export function describeAccount(account: ProviderAccount): string | undefined {
  if (account.email !== undefined)
    return account.emailVerified === false ? `${oneLine(account.email, MAX_ACCOUNT_CHARS)} (email not verified)` : oneLine(account.email, MAX_ACCOUNT_CHARS)
  return account.sub === undefined ? undefined : oneLine(account.sub, MAX_ACCOUNT_CHARS)
}

/** Longest account name shown: RFC 5321 §4.5.3.1.3 bounds an address path at 256 octets. */
const MAX_ACCOUNT_CHARS = 256

/** Outcome of {@link checkAccount}: `expected` says, for the page and the audit, what would have matched. */
export type AccountCheck = { readonly ok: true } | { readonly ok: false; readonly expected: string }

/**
 * Whether `account` is the provider account of one of `users` (the Keyway user a per-user token
 * is for; for a shared connection, the owner or the owner group's members) under `rule`:
 *
 * - `email`: the provider's email equals a user id by {@link sameEmailAddress}, and with
 *   `verified` (the default) the provider stated `email_verified: true`;
 * - `sub`: the provider's `sub` equals `map[user]`; a user without an entry matches nothing.
 */
export function checkAccount(rule: AccountMatch, users: readonly string[], account: ProviderAccount): AccountCheck {
  switch (rule.claim) {
    case 'email': {
      const email = account.email
      const verifiedOk = !rule.verified || account.emailVerified === true
      if (email !== undefined && verifiedOk && users.some((u) => sameEmailAddress(u, email))) return { ok: true }
      return { ok: false, expected: `${rule.verified ? 'a verified' : 'the'} email address ${orList(users)}` }
    }
    case 'sub': {
      const subs = users.flatMap((u) => {
        const v: unknown = Object.hasOwn(rule.map, u) ? rule.map[u] : undefined
        return typeof v === 'string' ? [v] : []
      })
      if (account.sub !== undefined && subs.includes(account.sub)) return { ok: true }
      return {
        ok: false,
        expected:
          subs.length > 0 ? `provider subject ${orList(subs)}` : `a provider subject listed for ${orList(users)} in auth.accountMatch.map (there is none)`,
      }
    }
    default: {
      const never: never = rule
      return never
    }
  }
}

/**
 * RFC 5321 §2.4: the domain is compared case-insensitively, the local part exactly (it MAY be
 * case-sensitive, and treating `Alice` and `alice` as one mailbox could bind someone else's).
 * Both sides need a non-empty local part and domain.
 */
export function sameEmailAddress(a: string, b: string): boolean {
  const x = splitAddress(a)
  const y = splitAddress(b)
  return x !== undefined && y !== undefined && x.local === y.local && x.domain.toLowerCase() === y.domain.toLowerCase()
}

function splitAddress(v: string): { local: string; domain: string } | undefined {
  const at = v.lastIndexOf('@')
  if (at <= 0 || at === v.length - 1) return undefined
  return { local: v.slice(0, at), domain: v.slice(at + 1) }
}

function orList(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? '(none)'
  return `${items.slice(0, -1).join(', ')} or ${items.at(-1) ?? ''}`
}

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined
}
