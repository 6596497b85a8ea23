// src/data's import rules, checked on the source: nothing GPU anywhere in it, and no Node
// built-ins outside src/data/node/ (the rest must run in a browser).
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', 'src', 'data');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g)].map((m) => m[1]);
}

const NODE = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
const GPU = /(^|\/)(kernels|runtime|train)\/|^webgpu$|^@webgpu\//;

describe('src/data layering', () => {
  const files = sources(root);

  it('finds the sources', () => {
    expect(files.length).toBeGreaterThan(8);
  });

  for (const file of files) {
    const name = relative(root, file);
    it(`${name}: no GPU imports${name.startsWith('node/') ? '' : ', no Node built-ins'}`, () => {
      for (const spec of imports(file)) {
        expect(GPU.test(spec), `${name} imports ${spec}`).toBe(false);
        if (!name.startsWith('node/')) expect(NODE.has(spec), `${name} imports ${spec}`).toBe(false);
        // sharp is a native Node addon: only the Node readers may load it.
        if (!name.startsWith('node/')) expect(spec, `${name} imports sharp`).not.toBe('sharp');
        if (spec.startsWith('.')) {
          // Browser-safe files must not reach into node/ either.
          if (!name.startsWith('node/')) expect(spec.includes('node/'), `${name} imports ${spec}`).toBe(false);
        }
      }
    });
  }
});
