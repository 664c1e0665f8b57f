/**
 * The auth methods this build serves. The config loader refuses the others with a clear
 * message rather than loading a connection that would fail at its first call.
 * @module
 */
import type { AuthType } from '../config/schema.js'

export const SUPPORTED_AUTH_TYPES: ReadonlySet<AuthType> = new Set<AuthType>(['bearer_token', 'oauth_m2m', 'oauth_u2m_shared', 'oauth_u2m_per_user'])
