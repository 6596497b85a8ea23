// The portable cases (test/portable/cases.ts) on all three WebGPU implementations, over one set of
// fixtures made here first: in this process on Dawn, under Deno on wgpu and in Chromium on
// SwiftShader, the last two through their scripts (npm run test:deno / test:browser). Each run
// prints `N passed, M failed`; a script that exits non-zero or reports a failure fails here with
// its output (each FAIL line names the case or kernel and the runtime).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create, globals } from 'webgpu';
import { runPortableCases } from './portable/cases.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Fewer passing cases than this means cases went missing: 2 bad input + 1 variant choice + 131 programs + 30 + 1 + 1 now. */
const AT_LEAST = 150;
const SCRIPT_TIMEOUT_MS = 300_000;

function run(args: string[]): { status: number | null; output: string } {
  const child = spawnSync(process.execPath, args, {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: SCRIPT_TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  const error = child.error ? `\n${child.error.message}` : '';
  return { status: child.status, output: `${child.stdout ?? ''}${child.stderr ?? ''}${error}` };
}

let fixtures: string;
beforeAll(() => {
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-portable-'));
  const made = run(['--import', 'tsx', path.join(ROOT, 'test/portable/make-fixtures.ts'), fixtures]);
  expect(made.status, made.output).toBe(0);
}, SCRIPT_TIMEOUT_MS);
afterAll(() => fs.rmSync(fixtures, { recursive: true, force: true }));

describe('in this process', () => {
  it(
    'passes every portable case on node/dawn',
    async () => {
      Object.assign(globalThis, globals);
      const dawn = create([]);
      const lines: string[] = [];
      const result = await runPortableCases({
        runtime: 'node/dawn',
        gpu: dawn,
        read: async (file) => new Uint8Array(await fs.promises.readFile(path.join(fixtures, file))),
        log: (line) => lines.push(line),
      });
      console.log(`node/dawn (${result.adapter}): ${result.passed} passed, ${result.failed} failed`);
      expect(result.failures, lines.join('\n')).toEqual([]);
      expect(result.passed).toBeGreaterThanOrEqual(AT_LEAST);
    },
    SCRIPT_TIMEOUT_MS,
  );
});

describe.each([
  ['scripts/test-deno.mjs', 'deno/wgpu'],
  ['scripts/test-browser.mjs', 'chromium/swiftshader'],
])('%s', (script, runtime) => {
  it(
    `passes every portable case on ${runtime}`,
    () => {
      const { status, output } = run([path.join(ROOT, script), '--fixtures', fixtures]);
      const tail = output.slice(-6000);
      const failures = output.split('\n').filter((line) => line.startsWith('FAIL '));
      expect(failures, tail).toEqual([]);
      const summary = new RegExp(`^${runtime} \\(.*\\): (\\d+) passed, (\\d+) failed$`, 'm').exec(output);
      expect(summary, tail).not.toBeNull();
      expect(Number(summary![2]), tail).toBe(0);
      expect(Number(summary![1]), tail).toBeGreaterThanOrEqual(AT_LEAST);
      expect(status, tail).toBe(0);
    },
    SCRIPT_TIMEOUT_MS,
  );
});
