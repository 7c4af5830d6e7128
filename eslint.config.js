import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'src/gen/', 'test/gen/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-restricted-imports': 'off',
    },
  },
  {
    // The rooms of the house (design.md): src/oci knows nothing of the farm.
    files: ['src/oci/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: ['**/coordinator/**', '**/agent/**', '**/cli/**'] },
      ],
    },
  },
  {
    // Coordinator and agent meet only in proto/ (src/gen).
    files: ['src/coordinator/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/agent/**', '**/cli/**'] }] },
  },
  {
    files: ['src/agent/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/coordinator/**', '**/cli/**'] }] },
  },
);
