// The browser benchmark (bench/browser.ts) in its --quick form: GEMM 256³ and SqueezeNet at 64×64
// in one Chromium page on SwiftShader. Asserts that every engine's output was checked against
// onnxruntime-node and agreed, and that every engine produced a time; never what the time is.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TIMEOUT_MS = 170_000;

interface Result {
  what: string;
  engine: string;
  ms?: number;
  relL2?: number;
  agrees?: boolean;
  error?: string;
}

it(
  'bench browser --quick: every engine checked against onnxruntime-node and timed, on a kernel row and a model',
  () => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', 'bench/main.ts', 'browser', '--quick'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: TIMEOUT_MS - 10_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    const output = `${child.stdout ?? ''}${child.stderr ?? ''}${child.error ? `\n${child.error.message}` : ''}`;
    const written = /wrote (bench\/results\/browser-[^\s]+\.json)/.exec(output)?.[1];
    expect(written, output).toBeDefined();
    const file = path.join(ROOT, written!);
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as { results: Result[]; missing: string[] };
    fs.rmSync(file);
    expect(child.status, output).toBe(0);
    expect(record.missing).toEqual([]);
    const engines = (what: string) => record.results.filter((r) => r.what === what).map((r) => r.engine);
    expect(engines('GEMM 256³')).toEqual(['onnx-graft', 'ORT-web WebGPU', 'ORT-web WASM', 'TF.js WebGPU']);
    expect(engines('SqueezeNet 1.0 @64 b1')).toEqual(['onnx-graft', 'ORT-web WebGPU', 'ORT-web WASM']);
    for (const r of record.results) {
      expect(r.error, `${r.what} | ${r.engine}`).toBeUndefined();
      expect(r.relL2, `${r.what} | ${r.engine}`).toBeLessThan(1e-3);
      expect(r.agrees, `${r.what} | ${r.engine}`).toBe(true);
      expect(Number.isFinite(r.ms) && r.ms! > 0, `${r.what} | ${r.engine}: ms ${r.ms}`).toBe(true);
    }
    expect(output).toMatch(/check GEMM 256³ \| onnx-graft: rel L2 \S+ vs onnxruntime-node CPU < 0\.001 ok/);
  },
  TIMEOUT_MS,
);
