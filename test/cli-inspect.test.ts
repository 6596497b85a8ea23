// `graft inspect --input` at another batch size than the one a zoo model declares (1): the
// README's example, on every shipped light model, named or not; the batch reaches the classifier.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LIGHT_MODELS, lightModelPath } from './helpers/reference-models.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'graft.mjs'), ...args], {
    encoding: 'utf8',
    cwd: REPO_ROOT,
  });
const totals = (stdout: string) => /^parameters: .*$/m.exec(stdout)?.[0];

describe('graft inspect --input', () => {
  it('binds batch 8 on every light model; every shape starts with 8; totals as at batch 1 (ResNet-50, VGG-19)', () => {
    for (const name of LIGHT_MODELS) {
      const at8 = cli('inspect', lightModelPath(name), '--input', '8x3x224x224');
      expect(at8.status, `${name}: ${at8.stderr}`).toBe(0);
      const input = /^input: +(\S+) float32 \[(.*)\]$/m.exec(at8.stdout)!;
      expect(input[2], name).toBe('8, 3, 224, 224');
      expect(/^output: +\S+ float32 \[(\d+)/m.exec(at8.stdout)![1], name).toBe('8');
      const rows = at8.stdout.split('\n').filter((l) => /^\d+ /.test(l));
      expect(rows.length).toBeGreaterThan(10);
      for (const row of rows) expect(row, `${name}: ${row}`).toMatch(/\[8(, \d+)*\]/);
      if (name === 'resnet50' || name === 'vgg19') {
        // The batch changes shapes, not parameters (VGG's flatten feeds a 102M-weight Gemm).
        expect(totals(at8.stdout), name).toBe(totals(cli('inspect', lightModelPath(name)).stdout));
      }
      if (name === 'resnet50') {
        // The named form, with the model's own input name.
        const named = cli('inspect', lightModelPath(name), '--input', `${input[1]}=8x3x224x224`);
        expect(named.status, named.stderr).toBe(0);
        expect(named.stdout).toBe(at8.stdout);
      }
    }
  }, 180_000);

  it('a wrong name or a malformed shape is one line naming the flag', () => {
    const wrong = cli('inspect', lightModelPath('resnet50'), '--input', 'data_0=8x3x224x224');
    expect(wrong.status).toBe(1);
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrong.stderr).toMatch(/'data_0', which is not a graph input; inputs: gpu_0\/data_0/);
    const malformed = cli('inspect', lightModelPath('resnet50'), '--input', '8by3');
    expect(malformed.status).toBe(2);
    expect(malformed.stderr).toMatch(/^graft inspect: --input expects \[name=\]DxDxD .*, got '8by3'/);
  }, 60_000);
});

describe('graft argument errors (node:util parseArgs underneath)', () => {
  it('each is one line naming the argument and what is accepted, exit status 2, before any work', () => {
    const model = lightModelPath('resnet50');
    const cases: [string[], RegExp][] = [
      [['inspect', model, '--unknown'], /unknown option --unknown; accepted: --json, --input VALUE \(and --help\)/],
      [['inspect', model, '-x'], /unknown option -x; accepted: --json, --input VALUE/],
      [['inspect', model, '--input'], /--input needs a value/],
      [['inspect', model, '--input', '--json'], /--input needs a value, got the option-like '--json'/],
      [['inspect', model, '--json=yes'], /--json is a flag and takes no value, got '--json=yes'/],
      [['inspect'], /expected 1 argument\(s\), got 0/],
      [['inspect', model, 'extra.onnx'], /expected 1 argument\(s\), got 2 \('extra.onnx' too many\)/],
      [['predict', model], /expected at least 2 argument\(s\), got 1/],
      [['build', 'alexnet', '--seed', '-1'], /--seed expects an integer ≥ 0, got '-1'/],
      [['rewrite', model, '--out'], /--out needs a value/],
      [['train', model, 'data', '--case'], /--case needs a value/],
      [['eval', model, 'data', '--batch', '0'], /--batch must be an integer from 1 to 4096, got '0'/],
      [['demo', '--quick=1'], /--quick is a flag and takes no value, got '--quick=1'/],
    ];
    for (const [args, message] of cases) {
      const r = cli(...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^graft ${args[0]}: `));
      expect(lines[0], args.join(' ')).toMatch(message);
      expect(lines[0]).toMatch(new RegExp(`\\(see graft ${args[0]} --help\\)$`));
      expect(r.stdout).toBe('');
    }
  }, 120_000);

  it('a negative number after an option is its value, as before (--seed -5)', () => {
    const r = cli('build', 'alexnet', '--seed', '-5');
    expect(r.status).toBe(2);
    // Reaches the seed's own validation, rather than being refused as a missing value.
    expect(r.stderr).toMatch(/^graft build: --seed expects an integer ≥ 0, got '-5'/);
  }, 60_000);
});

describe('graft file arguments', () => {
  it('a missing, directory or unwritable path is one line naming it, before any work, nothing written', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'graft-file-args-'));
    try {
      const model = lightModelPath('squeezenet');
      const missing = path.join(dir, 'MISSING');
      const cases: [string[], string][] = [
        [['inspect', dir], `${dir} is a directory, expected an .onnx file`],
        [
          ['inspect', path.join(dir, 'none.onnx')],
          `${path.join(dir, 'none.onnx')} does not exist; expected an .onnx file`,
        ],
        [
          ['build', 'vgg16', '--out', path.join(missing, 'v.onnx')],
          `--out: folder ${missing} does not exist; create it first`,
        ],
        [
          ['rewrite', model, '--out', path.join(missing, 'r.onnx'), '--freeze-all-but', '1'],
          `--out: folder ${missing} does not exist; create it first`,
        ],
        [['rewrite', dir, '--out', path.join(dir, 'r.onnx')], `${dir} is a directory, expected an .onnx file`],
        [['build', 'alexnet', '--out', path.join('/proc', 'a.onnx')], `--out: folder /proc is not writable`],
      ];
      for (const [args, message] of cases) {
        const r = cli(...args);
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(1);
        const lines = r.stderr.trim().split('\n');
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]).toContain(`graft ${args[0]}: ${message}`);
        expect(r.stdout).toBe('');
      }
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
