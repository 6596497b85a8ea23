// The typed ONNX messages in src/graph/onnx/ are generated from the vendored onnx.proto: the
// checked-in files must be what `npm run gen:onnx` writes today, and what the codec encodes with
// them must pass ONNX's own checker (python3-onnx).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ARCHITECTURE_NAMES, buildArchitecture } from '../src/graph/architectures/index.ts';
import { decodeModel, encodeModel } from '../src/graph/codec.ts';
import { describeGraphDifference } from './helpers/graph-equal.ts';
import { LIGHT_DIR, REPO_ROOT } from './helpers/models.ts';
import { listCases, readBytes } from './helpers/onnx-testdata.ts';

const GENERATED_DIR = path.join(REPO_ROOT, 'src/graph/onnx');
const GENERATED_FILES = ['onnx-pb.js', 'onnx-pb.d.ts'];

describe('generated ONNX messages', () => {
  it('the checked-in onnx-pb.js and onnx-pb.d.ts are a fresh generation from onnx.proto', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-graft-gen-'));
    try {
      const run = spawnSync(process.execPath, [path.join(REPO_ROOT, 'scripts/gen-onnx.mjs'), '--out', dir], {
        encoding: 'utf8',
      });
      expect(run.status, run.stderr).toBe(0);
      for (const f of GENERATED_FILES) {
        const fresh = fs.readFileSync(path.join(dir, f), 'utf8');
        const checkedIn = fs.readFileSync(path.join(GENERATED_DIR, f), 'utf8');
        expect(checkedIn === fresh, `${f} differs from a fresh generation: run npm run gen:onnx`).toBe(true);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

// python3-onnx is installed by scripts/setup-system.sh and checked by `npm test`'s pretest: a
// missing checker fails these cases (checkModels returns python's error) rather than skipping.
describe('encoded models pass onnx.checker', () => {
  it('every architecture graft build writes (narrow, symbolic batch, with and without top)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-graft-checker-'));
    try {
      const written = ARCHITECTURE_NAMES.flatMap((name) =>
        [true, false].map((includeTop) => {
          const g = buildArchitecture(name, {
            width: 0.125,
            batch: 'batch',
            includeTop,
            pooling: includeTop ? null : 'avg',
          });
          const out = path.join(dir, `${name}-${includeTop ? 'top' : 'notop'}.onnx`);
          fs.writeFileSync(out, encodeModel(g));
          return out;
        }),
      );
      expect(checkModels(written)).toBe('');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('the light zoo and a sample of conformance models, decoded and encoded again', () => {
    const light = fs
      .readdirSync(LIGHT_DIR)
      .filter((f) => f.endsWith('.onnx'))
      .map((f) => path.join(LIGHT_DIR, f));
    const wanted = ['test_conv_with_strides_padding', 'test_maxpool_2d_pads', 'test_gemm_all_attributes', 'test_if'];
    const conformance = listCases('node')
      .filter((c) => wanted.includes(c.name))
      .map((c) => c.modelPath);
    expect(conformance.length, `conformance cases found of ${wanted}`).toBe(wanted.length);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-graft-checker-'));
    try {
      const written = [...light, ...conformance].map((file, i) => {
        const g = decodeModel(readBytes(file), { file });
        const bytes = encodeModel(g);
        expect(describeGraphDifference(g, decodeModel(bytes, { file }))).toBeUndefined();
        const out = path.join(dir, `${i}-${path.basename(path.dirname(file))}-${path.basename(file)}`);
        fs.writeFileSync(out, bytes);
        return out;
      });
      const check = spawnSync(
        '/usr/bin/python3',
        [
          '-c',
          'import sys, onnx\nfor f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)',
          ...written,
        ],
        { encoding: 'utf8' },
      );
      expect(check.status, check.stderr).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** onnx.checker's complaints about the files (with full shape inference), '' when it has none. */
function checkModels(files: string[]): string {
  const script = [
    'import sys, onnx',
    'for f in sys.argv[1:]:',
    '    try: onnx.checker.check_model(onnx.load(f), full_check=True)',
    '    except Exception as e: print(f, e)',
  ].join('\n');
  const check = spawnSync('/usr/bin/python3', ['-c', script, ...files], { encoding: 'utf8' });
  return check.status === 0 ? check.stdout.trim() : `python3 exited ${check.status}: ${check.stderr}`;
}
