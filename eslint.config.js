// Lint rules for Keyway (CONTRIBUTING.md): typescript-eslint's type-aware recommended set, with
// the promise rules that catch a forgotten await on the request path.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'config/connections.schema.json'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // An `async` function without `await` is deliberate here: it implements a Promise-returning
      // contract and turns a synchronous throw into a rejection, which is what its callers handle.
      '@typescript-eslint/require-await': 'off',
      // Rethrowing or rejecting with what was caught (`unknown`) keeps the original error intact.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      // Keyway matches control characters on purpose: it escapes or refuses them in untrusted text.
      'no-control-regex': 'off',
      // Unused names are an error, except the conventional `_` prefix for a parameter a signature needs.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // In tests `JSON.parse` results and vitest's asymmetric matchers (`expect.any`, …) are `any` by design.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  { files: ['**/*.js', '**/*.mjs', 'vitest.config.ts'], extends: [tseslint.configs.disableTypeChecked] },
)
