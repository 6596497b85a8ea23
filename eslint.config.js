// eslint 9 flat config: eslint's and typescript-eslint's recommended rules (not type-checked, so
// a run takes seconds) plus a few that catch what review found by hand. Style is prettier's.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** Node's globals for the plain .js/.mjs scripts (TypeScript files get them from @types/node). */
const nodeGlobals = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'performance'].map((n) => [n, 'readonly']),
);

export default defineConfig(
  {
    ignores: [
      'node_modules/',
      '.cache/',
      'src/graph/onnx/onnx-pb.*',
      'bench/results/',
      'demo-output/',
      'scratch/',
      'dist/',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: nodeGlobals },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { ...nodeGlobals, module: 'writable', require: 'readonly' } },
  },
  {
    rules: {
      // Prettier wraps code at 120 but leaves comments and strings alone: comments past 160 are
      // wrapped by hand; long messages in strings are allowed.
      'max-len': [
        'error',
        { code: 160, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true, ignoreUrls: true },
      ],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-throw-literal': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        {
          // GPUBufferUsage/GPUTextureUsage/GPUShaderStage flags by name, not `0x01 | 0x08`.
          selector: "BinaryExpression[operator='|'][left.type='Literal'][right.type='Literal']",
          message: 'name the flags (GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST), not bare numbers',
        },
      ],
    },
  },
);
