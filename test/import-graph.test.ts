// The core runs in a browser: no module of it reaches a Node built-in, directly or through other
// modules or packages. Which modules are "core" is said once, by the layering rule
// `engine-runs-anywhere` in .dependency-cruiser.cjs (every file under src/ but src/node/,
// src/cli/ and src/data/node/); that rule sees src/'s own imports, this test follows every
// import to its end, packages included, as a browser bundler resolves them (esbuild,
// platform 'browser': a package's "browser" field counts). A failure names the chain.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { BROWSER_BUNDLE_BUDGET_BYTES, browserBundleOptions } from '../scripts/build.mjs';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const BUILTINS = new Set(builtinModules);
const isBuiltin = (specifier: string) => specifier.startsWith('node:') || BUILTINS.has(specifier);

interface Rule {
  name: string;
  from: { path: string; pathNot?: string };
}

/** The files under src/ that the layering rule `engine-runs-anywhere` holds to "no Node built-in". */
function coreFiles(): string[] {
  const config = createRequire(import.meta.url)(path.join(REPO_ROOT, '.dependency-cruiser.cjs')) as {
    forbidden: Rule[];
  };
  const rule = config.forbidden.find((r) => r.name === 'engine-runs-anywhere');
  if (!rule) throw new Error('.dependency-cruiser.cjs has no rule named engine-runs-anywhere');
  const from = new RegExp(rule.from.path);
  const not = rule.from.pathNot ? new RegExp(rule.from.pathNot) : undefined;
  return (readdirSync(path.join(REPO_ROOT, 'src'), { recursive: true }) as string[])
    .map((f) => `src/${f.split(path.sep).join('/')}`)
    .filter((f) => /\.(ts|mjs|js)$/.test(f) && !f.endsWith('.d.ts'))
    .filter((f) => from.test(f) && !not?.test(f));
}

/**
 * For each entry (a path relative to `root`) that reaches a Node built-in, the shortest import
 * chain from it to the built-in: [entry, ..., 'node:fs'].
 */
async function chainsToBuiltins(root: string, entries: string[]): Promise<string[][]> {
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: entries,
    bundle: true,
    write: false,
    metafile: true,
    outdir: 'out',
    format: 'esm',
    platform: 'browser',
    logLevel: 'silent',
    plugins: [
      {
        // Built-ins stay unresolved imports in the metafile instead of failing the build.
        name: 'builtins-are-leaves',
        setup(build) {
          build.onResolve({ filter: /.*/ }, (args) =>
            isBuiltin(args.path) ? { path: args.path, external: true } : null,
          );
        },
      },
    ],
  });
  const inputs = result.metafile.inputs;
  const chains: string[][] = [];
  for (const entry of entries) {
    // Breadth first, so the chain reported is a shortest one.
    const cameFrom = new Map<string, string | null>([[entry, null]]);
    const queue = [entry];
    let found: string | undefined;
    while (queue.length > 0 && !found) {
      const file = queue.shift()!;
      for (const imported of inputs[file]?.imports ?? []) {
        if (cameFrom.has(imported.path)) continue;
        cameFrom.set(imported.path, file);
        if (imported.external && isBuiltin(imported.path)) {
          found = imported.path;
          break;
        }
        if (!imported.external) queue.push(imported.path);
      }
    }
    if (!found) continue;
    const chain = [found];
    for (let at = cameFrom.get(found); at; at = cameFrom.get(at)) chain.unshift(at);
    chains.push(chain);
  }
  return chains;
}

describe('the core imports no Node built-in (graph, kernels, ops, runtime, train, data but data/node)', () => {
  it('no module of the core reaches one, through src/ or any package', async () => {
    const entries = coreFiles();
    const folders = new Set(entries.map((f) => f.split('/')[1]));
    for (const folder of ['graph', 'kernels', 'ops', 'runtime', 'train', 'data', 'index.ts']) {
      expect(folders, `no core file under src/${folder}`).toContain(folder);
    }
    expect(entries.some((f) => f.startsWith('src/data/node/'))).toBe(false);
    const chains = await chainsToBuiltins(REPO_ROOT, entries);
    expect(chains.map((c) => c.join(' → '))).toEqual([]);
  }, 60_000);

  describe('the walker', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'graft-import-graph-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('names the chain to a built-in, direct, transitive, bare or node:-prefixed; passes clean modules', async () => {
      const files: Record<string, string> = {
        'a.ts': "import { b } from './b.ts'; export const a = b;",
        'b.ts': "export { e as b } from './deep/e.ts';",
        'deep/e.ts': "import { join } from 'path'; export const e = join;",
        'f.ts': "import { readFileSync } from 'node:fs'; export const f = readFileSync;",
        'g.ts': 'export const g = 1;',
      };
      for (const [name, text] of Object.entries(files)) {
        mkdirSync(path.join(dir, path.dirname(name)), { recursive: true });
        writeFileSync(path.join(dir, name), text);
      }
      const chains = await chainsToBuiltins(dir, ['a.ts', 'f.ts', 'g.ts']);
      expect(chains).toEqual([
        ['a.ts', 'b.ts', 'deep/e.ts', 'path'],
        ['f.ts', 'node:fs'],
      ]);
    });
  });
});

describe('the browser bundle (dist/browser/onnx-graft.js, as `npm run build` makes it)', () => {
  it('builds from src/index.ts for browsers, loads as an ES module and stays within the README budget', async () => {
    const bundled = await esbuild.build({ ...browserBundleOptions(), write: false, outfile: 'onnx-graft.js' });
    expect(bundled.errors).toEqual([]);
    const code = bundled.outputFiles[0].contents;
    expect(code.byteLength, `bundle is ${code.byteLength} bytes`).toBeLessThanOrEqual(BROWSER_BUNDLE_BUDGET_BYTES);
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    expect(readme, 'the README states the budget').toContain(`${BROWSER_BUNDLE_BUDGET_BYTES / 1024} KiB`);
    // Self-contained: no import left for a browser to resolve.
    const text = Buffer.from(code).toString('utf8');
    expect(text).not.toMatch(/\bimport\s*[^(]*?from\s*["']|\bimport\s*\(\s*["']|\brequire\s*\(\s*["']/);
    const loaded = (await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`)) as Record<
      string,
      unknown
    >;
    for (const name of ['Session', 'GraphBuilder', 'GpuContext', 'decodeModel', 'train', 'surgery', 'data']) {
      expect(loaded[name], name).toBeDefined();
    }
  }, 60_000);
});
